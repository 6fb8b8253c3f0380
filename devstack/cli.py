"""`python -m devstack`: run the stand-in and point the function app at it.

    up        start every stand-in on loopback until Ctrl+C / SIGTERM
    settings  write a Core Tools local.settings.json for the running stack
    env       print `export NAME=value` lines for the running stack
    demo      run the real functions in-process against a fresh stack
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import signal
import sys
import threading
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devstack.appsettings import DEFAULT_IDENTITY, UnknownIdentity, app_settings, local_settings
from devstack.config import StackConfig, load_config
from devstack.stack import DevStack, StackAlreadyRunning

DEFAULT_STATE_DIR = Path(".devstack")
PROG = "python -m devstack"


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


# ---------------------------------------------------------------- up


def cmd_up(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    stop = threading.Event()
    _on_stop_signals(stop.set)  # before start(): a SIGTERM during startup still stops cleanly
    stack = DevStack(config=config, state_dir=args.state_dir)
    try:
        stack.start()
    except StackAlreadyRunning as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"could not start the stand-in: {exc}") from exc
    try:
        print(banner(stack.endpoints, args.state_dir), flush=True)
        while not stop.wait(0.5):  # a timed wait stays responsive to signals on every platform
            pass
    finally:
        stack.stop()
    print("devstack stopped.", flush=True)
    return 0


def _load_config(path: Path | None) -> StackConfig:
    try:
        return load_config(path)
    except KeyError as exc:
        raise CliError(f"config '{path}' has no {exc} entry (see devstack/config.json)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CliError(f"cannot read config '{path}': {exc}") from None


def _on_stop_signals(callback: Callable[[], None]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: callback())


def banner(endpoints: Mapping[str, Any], state_dir: Path) -> str:
    """What `up` prints: where everything listens and how to point the app at it."""
    dir_arg = "" if state_dir == DEFAULT_STATE_DIR else f" --state-dir {shlex.quote(str(state_dir))}"
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
            ("control", endpoints["control_url"], "/stats /telemetry /faults /backend/requests /reset"),
        ]),
        "",
        _table([("identity", "client ID", "roles")] + [
            (name, item["client_id"], ", ".join(item["roles"]) or "(none)")
            for name, item in endpoints["identities"].items()
        ]),
        "",
        "Function app settings (in-process use; or eval \"$(python -m devstack env" + dir_arg + ")\"):",
        *(f"  {line}" for line in export_lines(app_settings(endpoints))),
        "",
        "For `func start`, write local.settings.json:",
        f"  {PROG} settings{dir_arg}",
        "",
        "Call the API with curl, as the reader identity:",
        *(f"  {line}" for line in curl_example(endpoints)),
        "",
    ])


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
    document = local_settings(endpoints, args.identity)
    text = json.dumps(document, indent=2) + "\n"
    try:
        # "x" creates the file and fails if it exists: never clobber someone's settings by accident.
        with args.out.open("w" if args.force else "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise CliError(f"{args.out} already exists; pass --force to overwrite it") from None
    print(f"wrote {args.out} for identity '{args.identity}'. Start Azurite (timer state), then: func start")
    return 0


def export_lines(settings: Mapping[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in settings.items()]


def cmd_env(args: argparse.Namespace) -> int:
    endpoints = running_endpoints(args.state_dir)
    print("\n".join(export_lines(app_settings(endpoints, args.identity))))
    return 0


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
        command.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                             help="where endpoints.json lives (default: %(default)s)")

    def identity_option(command: argparse.ArgumentParser) -> None:
        command.add_argument("--identity", default=DEFAULT_IDENTITY,
                             help="identity the app calls with: reader (writes as writer), writer, unassigned, "
                             "... (default: %(default)s)")

    up = commands.add_parser("up", help="start the stand-ins until Ctrl+C / SIGTERM")
    state_dir_option(up)
    up.add_argument("--config", type=Path, help="tenant, API and identities (default: devstack/config.json)")
    up.set_defaults(handler=cmd_up)

    settings = commands.add_parser("settings", help="write local.settings.json for `func start`")
    state_dir_option(settings)
    identity_option(settings)
    settings.add_argument("--out", type=Path, default=Path("local.settings.json"), help="(default: %(default)s)")
    settings.add_argument("--force", action="store_true", help="overwrite an existing file")
    settings.set_defaults(handler=cmd_settings)

    env = commands.add_parser("env", help='print export lines: eval "$(python -m devstack env)"')
    state_dir_option(env)
    identity_option(env)
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
