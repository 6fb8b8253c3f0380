"""`python -m devstack`: run the stand-in and point the function app at it.

    up        start every stand-in on loopback until Ctrl+C / SIGTERM
    settings  write (or update) a Core Tools local.settings.json for the running stack
    env       print `export NAME=value` lines for the running stack (--unset: leave it)
    demo      run the real functions in-process against a fresh stack
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import signal
import sys
import threading
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devstack.appsettings import (
    DEFAULT_IDENTITY,
    UnknownIdentity,
    app_settings,
    azure_reason,
    local_settings,
    update_local_settings,
)
from devstack.config import StackConfig, load_config, parse_port
from devstack.network import network_model
from devstack.stack import DevStack, PortUnavailable, StackAlreadyRunning

DEFAULT_STATE_DIR = Path(".devstack")
# Overrides the default --state-dir of every command (tests use it to run the README's commands as written).
STATE_DIR_ENV = "DEVSTACK_STATE_DIR"
PROG = "python -m devstack"
# Set (to anything but "" or "0") to make `up` pick free ports, as --free-ports does: the
# test suite sets it so that its stacks never collide with yours or with each other.
FREE_PORTS_ENV = "DEVSTACK_FREE_PORTS"
# `up --functions`: next to the stand-ins' fixed ports (7171-7175), clear of Core Tools' 7071.
FUNCTIONS_PORT = 7176


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


# ---------------------------------------------------------------- up


def cmd_up(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    ports = _ports(args, config)
    stop = threading.Event()
    _on_stop_signals(stop.set)  # before start(): a SIGTERM during startup still stops cleanly
    stack = DevStack(config=config, state_dir=args.state_dir, ports=ports, run_schedules=True, tls=args.tls)
    try:
        network_model(stack.state).configure({"rtt_ms": args.rtt_ms, "connection_ms": args.connection_ms})
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        stack.start()
    except StackAlreadyRunning as exc:
        raise CliError(str(exc)) from None
    except PortUnavailable as exc:
        raise CliError(f"{exc}. Is another devstack (another --state-dir) or program using port {exc.port}? "
                       f"Stop it, choose another port with --port {exc.service}=PORT (or the \"ports\" entry of "
                       "a --config file), or let every service pick a free one with --free-ports") from None
    except Exception as exc:
        raise CliError(f"could not start the stand-in: {exc}") from exc
    functions = None
    try:
        if args.functions:
            functions = _serve_functions(stack, args)
        print(banner(stack.endpoints, args.state_dir, fixed_ports=not _free_ports(args)), flush=True)
        while not stop.wait(0.5):  # a timed wait stays responsive to signals on every platform
            pass
    finally:
        if functions is not None:
            functions.stop()
        stack.stop()
    print("devstack stopped.", flush=True)
    return 0


def _serve_functions(stack: DevStack, args: argparse.Namespace) -> Any:
    # Imported here: it imports the function app, which `up` without --functions never needs.
    from devstack.functions_run import serve_functions

    port = 0 if _free_ports(args) else args.functions_port
    try:
        running = serve_functions(stack.endpoints, identity=args.identity, write_identity=args.write_identity,
                                  port=port)
    except UnknownIdentity:
        raise
    except PortUnavailable as exc:
        raise CliError(f"{exc}. Choose another with --functions-port PORT, or --free-ports") from None
    except Exception as exc:
        raise CliError(f"could not serve the functions: {type(exc).__name__}: {exc}") from exc
    stack.add_endpoints("functions", running.description)
    return running


def _load_config(path: Path | None) -> StackConfig:
    try:
        return load_config(path)
    except KeyError as exc:
        raise CliError(f"config '{path}' has no {exc} entry (see devstack/config.json)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CliError(f"cannot read config '{path}': {exc}") from None


def _ports(args: argparse.Namespace, config: StackConfig) -> dict[str, int]:
    """The ports `up` listens on: the config's with --port overrides; with free ports, only the overrides."""
    overrides = {}
    for item in args.port:
        service, _, value = (part.strip() for part in item.partition("="))
        try:
            overrides[service] = parse_port(service, value)
        except ValueError as exc:
            raise CliError(f"--port {item}: {exc} (use --port SERVICE=PORT, e.g. --port apim=7172)") from None
    return overrides if _free_ports(args) else {**config.ports, **overrides}


def _free_ports(args: argparse.Namespace) -> bool:
    return bool(args.free_ports) or os.environ.get(FREE_PORTS_ENV, "") not in ("", "0")


def _on_stop_signals(callback: Callable[[], None]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: callback())


def banner(endpoints: Mapping[str, Any], state_dir: Path, *, fixed_ports: bool = True) -> str:
    """What `up` prints: where everything listens and how to point the app at it."""
    dir_arg = "" if state_dir in (DEFAULT_STATE_DIR, Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)) \
        else f" --state-dir {shlex.quote(str(state_dir))}"
    lifetime = (f"Fixed ports, and the identity header and key are kept in {state_dir}: settings written now "
                "stay valid after a restart." if fixed_ports else
                "Free ports (--free-ports): settings written now are valid for this run only.")
    return "\n".join([
        f"devstack is running (state dir {state_dir}). Press Ctrl+C to stop.",
        "",
        _table([
            ("service", "listens on", "speaks"),
            ("identity", endpoints["identity_endpoint"], "App Service managed identity (api-version 2019-08-01)"),
            ("", endpoints["imds_endpoint"], "IMDS /metadata/identity/oauth2/token, OpenID discovery, JWKS"),
            ("apim", endpoints["apim_base_url"], "APIM gateway (the API's base URL)"),
            ("backend", endpoints["backend_url"], "sample orders API behind APIM"),
            ("ingestion", endpoints["ingestion_endpoint"], "Application Insights /v2.1/track"),
            ("control", endpoints["control_url"], "/stats /telemetry /faults /backend/requests /logicapp /reset"),
        ]),
        f"  {lifetime}",
        "",
        _table([("identity", "client ID", "roles")] + [
            (name, item["client_id"], ", ".join(item["roles"]) or "(none)")
            for name, item in endpoints["identities"].items()
        ]),
        "",
        "Function app settings (in-process use; or eval \"$(python -m devstack env" + dir_arg + ")\"):",
        *(f"  {line}" for line in export_lines(app_settings(endpoints))),
        f"  (to leave the stand-in later: eval \"$({PROG} env --unset)\"; PowerShell: add --shell powershell)",
        "",
        "For `func start`, write local.settings.json:",
        f"  {PROG} settings{dir_arg}",
        "",
        "Call the API with curl, as the reader identity:",
        *(f"  {line}" for line in curl_example(endpoints)),
        "",
        "The Logic App workflow (infra/logic-app/workflow.json) runs hourly; run it now, then read its runs:",
        f"  curl -s -X POST {endpoints['control_url']}/logicapp/run",
        f"  curl -s {endpoints['control_url']}/logicapp/runs",
        "",
        *functions_lines(endpoints),
    ])


def functions_lines(endpoints: Mapping[str, Any]) -> list[str]:
    """The banner's part for `up --functions`: each function's URL and a curl call with a function key."""
    functions = endpoints.get("functions")
    if not functions:
        return []
    base, key = functions["base_url"], functions["keys"]["functionKeys"]["default"]
    rows = [("function", "trigger", "URL or how to run it")]
    for name, item in functions["functions"].items():
        where = (f"{' '.join(item['methods'])} {base}/{item['route']} ({item['auth_level']})" if "route" in item
                 else f"POST {functions['url']}/admin/functions/{name} (master key)")
        rows.append((name, item["trigger"], where))
    lines = [f"Functions host stand-in (as `func start`), identity '{functions['identity']}', writes as "
             f"'{functions['write_identity']}'; keys in endpoints.json:", _table(rows), ""]
    apim = next((item["route"] for item in functions["functions"].values() if "{*" in item.get("route", "")), None)
    if apim:
        url = f"{base}/{apim.split('{')[0]}orders?code={key}"
        lines += ["Call a function over HTTP with its key:", f"  curl -s {shlex.quote(url)}", ""]
    return lines


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def curl_example(endpoints: Mapping[str, Any], identity: str = DEFAULT_IDENTITY, path: str = "/orders") -> list[str]:
    """Two shell lines: get a token from the identity endpoint, then call the API with it."""
    query = urllib.parse.urlencode({"api-version": "2019-08-01", "resource": endpoints["api_app_id_uri"],
                                    "client_id": endpoints["identities"][identity]["client_id"]})
    token_url = f"{endpoints['identity_endpoint']}?{query}"
    get_token = (f"curl -s -H {shlex.quote('X-IDENTITY-HEADER: ' + endpoints['identity_header'])} "
                 f"{shlex.quote(token_url)}")
    extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
    key = endpoints.get("subscription_key")
    key_header = f" -H {shlex.quote('Ocp-Apim-Subscription-Key: ' + key)}" if key else ""
    return [
        f"TOKEN=$({get_token} | {extract})",
        f'curl -s -H "Authorization: Bearer $TOKEN"{key_header} {shlex.quote(endpoints["apim_base_url"] + path)}',
    ]


# ---------------------------------------------------------------- settings / env


def running_endpoints(state_dir: Path) -> dict[str, Any]:
    """`endpoints.json` of the stack running with `state_dir`, or a CliError saying why not."""
    path = state_dir / "endpoints.json"
    start_it = f"start one with: {PROG} up --state-dir {shlex.quote(str(state_dir))}"
    try:
        endpoints = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"no devstack is running with state dir '{state_dir}' ({path} not found); {start_it}") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if not _answers(endpoints.get("control_url", "")):
        raise CliError(f"{path} is stale: no devstack answers at {endpoints.get('control_url')}; {start_it}")
    return endpoints


def _answers(control_url: str) -> bool:
    # No proxies: the stack is on loopback, and an http_proxy variable must not reroute it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{control_url}/endpoints", timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def cmd_settings(args: argparse.Namespace) -> int:
    endpoints = running_endpoints(args.state_dir)
    existing = _existing_settings(args.out, force=args.force)
    if existing is None:
        document, did = local_settings(endpoints, args.identity), "wrote"
    else:
        reason = azure_reason(existing.get("Values") or {})
        if reason and not args.force:
            raise CliError(f"{args.out} points at Azure, not at the stand-in: {reason}. Left unchanged. "
                           f"Write the stand-in's settings to another file with --out, or pass --force to "
                           "point this one at the stand-in (its other settings are kept)")
        document, did = update_local_settings(existing, endpoints, args.identity), "updated"
    _write_atomically(args.out, json.dumps(document, indent=2) + "\n")
    print(f"{did} {args.out} for identity '{args.identity}'; it stays valid while the stand-in keeps its ports "
          "and state dir. Start Azurite (timer state), then: func start")
    return 0


def _existing_settings(path: Path, *, force: bool) -> dict[str, Any] | None:
    """The parsed file; None when there is none (or, with --force, when it cannot be used)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if force:
            return None  # --force replaces a file that is not a settings file at all
        raise CliError(f"{path} is not a readable local.settings.json ({exc}); left unchanged. "
                       "Fix it, or pass --force to replace it") from None
    if not isinstance(document, dict) or not isinstance(document.get("Values", {}), dict):
        if force:
            return None
        raise CliError(f"{path} has no \"Values\" object, so it is not a local.settings.json; left unchanged. "
                       "Pass --force to replace it")
    if document.get("IsEncrypted"):
        raise CliError(f"{path} is encrypted; run `func settings decrypt` first, then this command again")
    return document


def _write_atomically(path: Path, text: str) -> None:
    # Write then rename: an interrupted write never leaves half a settings file.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def export_lines(settings: Mapping[str, str], shell: str = "sh") -> list[str]:
    if shell == "powershell":  # single quotes take everything literally; a quote is doubled
        return ["$env:{} = '{}'".format(name, value.replace("'", "''")) for name, value in settings.items()]
    return [f"export {name}={shlex.quote(value)}" for name, value in settings.items()]


def cmd_env(args: argparse.Namespace) -> int:
    if args.unset:
        print(unset_line(args.shell))
        return 0
    endpoints = running_endpoints(args.state_dir)
    print("\n".join(export_lines(app_settings(endpoints, args.identity), args.shell)))
    leave = (f"{PROG} env --unset --shell powershell | Invoke-Expression" if args.shell == "powershell"
             else f'eval "$({PROG} env --unset)"')
    print(f"# to leave the stand-in: {leave}")
    return 0


def unset_line(shell: str = "sh") -> str:
    """`unset` for every variable `env` exports; needs no running stack."""
    # The names come from the same mapping `env` uses, applied to a stack that is never started.
    from devstack.stack import describe
    from devstack.state import StackState
    from devstack.tls import LocalTls

    placeholder_urls: defaultdict[str, str] = defaultdict(lambda: "http://127.0.0.1:0")
    state = StackState.create(load_config())
    state.tls = LocalTls(Path("placeholder"))  # only its file name is used: no files are made
    names = app_settings(describe(state, placeholder_urls))
    if shell == "powershell":
        return "Remove-Item -ErrorAction SilentlyContinue " + ", ".join(f"Env:{name}" for name in names)
    return "unset " + " ".join(names)


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("devstack.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "devstack.demo":
            raise
        raise CliError("the demo is not part of this checkout (devstack/demo.py is missing)") from None
    return int(demo.main(args.demo_args) or 0)


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Local stand-ins for Entra ID managed identity, "
                                     "APIM, the sample API and Application Insights.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def state_dir_option(command: argparse.ArgumentParser) -> None:
        command.add_argument("--state-dir", type=Path, default=Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR),
                             help=f"where endpoints.json lives (default: %(default)s, or ${STATE_DIR_ENV})")

    def identity_option(command: argparse.ArgumentParser) -> None:
        command.add_argument("--identity", default=DEFAULT_IDENTITY,
                             help="identity the app calls with: reader (writes as writer), writer, unassigned, "
                             "... (default: %(default)s)")

    up = commands.add_parser("up", help="start the stand-ins until Ctrl+C / SIGTERM")
    state_dir_option(up)
    up.add_argument("--config", type=Path, help="tenant, API, identities and ports (default: devstack/config.json)")
    up.add_argument("--port", action="append", default=[], metavar="SERVICE=PORT",
                    help="listen on PORT for SERVICE (identity, apim, backend, ingestion, control); repeatable")
    up.add_argument("--free-ports", action="store_true",
                    help=f"pick free ports instead of the fixed ones (also: {FREE_PORTS_ENV}=1); "
                    "written settings then last only for this run")
    up.add_argument("--functions", action="store_true",
                    help="also serve the app's functions over HTTP, as `func start` does (keys in endpoints.json)")
    up.add_argument("--functions-port", type=int, default=FUNCTIONS_PORT,
                    help="with --functions: the port it listens on (default: %(default)s)")
    identity_option(up)
    up.add_argument("--write-identity", help="identity for non-GET calls (default: writer with --identity reader, "
                    "else the same identity); with --functions")
    up.add_argument("--tls", action="store_true",
                    help="serve APIM over HTTPS too, with the stack's local CA "
                    "(trust it: SSL_CERT_FILE=<state dir>/tls/ca-bundle.pem)")
    up.add_argument("--rtt-ms", type=float, default=0.0, help="modelled round trip to APIM (devstack/network.py)")
    up.add_argument("--connection-ms", type=float, default=0.0,
                    help="modelled extra time of a new connection to APIM (TCP + TLS handshakes)")
    up.set_defaults(handler=cmd_up)

    settings = commands.add_parser("settings", help="write local.settings.json for `func start`")
    state_dir_option(settings)
    identity_option(settings)
    settings.add_argument("--out", type=Path, default=Path("local.settings.json"), help="(default: %(default)s)")
    settings.add_argument("--force", action="store_true",
                          help="also update a file that points at Azure (or replace one that is not JSON)")
    settings.set_defaults(handler=cmd_settings)

    env = commands.add_parser("env", help='print export lines: eval "$(python -m devstack env)"')
    state_dir_option(env)
    identity_option(env)
    env.add_argument("--shell", choices=("sh", "powershell"), default="sh",
                     help="sh (bash, zsh: eval \"$(...)\") or powershell (... | Invoke-Expression); "
                     "default: %(default)s")
    env.add_argument("--unset", action="store_true", help="print an unset line instead, to leave the stand-in: "
                     'eval "$(python -m devstack env --unset)"')
    env.set_defaults(handler=cmd_env)

    # The demo parses its own options (everything after `demo`), so it gets no help of ours.
    demo = commands.add_parser("demo", help="run the real functions in-process against a fresh stack",
                               add_help=False)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        args.demo_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except (CliError, UnknownIdentity) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 1
