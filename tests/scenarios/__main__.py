"""`python -m tests.scenarios`: run the scenarios against one target and print a short table.

    python -m tests.scenarios                     # the current azd environment (after `azd up`)
    python -m tests.scenarios --environment dev   # another azd environment
    python -m tests.scenarios --url https://<app>.azurewebsites.net   # keys from FUNCTION_KEY / MASTER_KEY
    python -m tests.scenarios --func-start http://localhost:7071      # Core Tools, pointed at the devstack
    python -m tests.scenarios --devstack .devstack                    # `python -m devstack up --functions`

Exit status 0 when every scenario passed or skipped with its reason, 1 when one failed,
2 when the target could not be set up. Keys are read, used and never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import selection
from tests.scenarios.targets import Target, TargetError, explicit, from_azd, from_endpoints, func_start, read_endpoints

SCENARIOS = Path(__file__).resolve().parent / "test_scenarios.py"
PROG = "python -m tests.scenarios"


class Results:
    """A pytest plugin that keeps each scenario's outcome for the table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: Any, call: Any) -> Any:
        outcome = yield
        doc = (getattr(item, "obj", None).__doc__ or "").strip().splitlines()  # type: ignore[union-attr]
        outcome.get_result().scenario = doc[0] if doc else item.name

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "call" and report.passed:
            return  # setup and teardown count only when they fail or skip
        if report.when == "teardown" and report.skipped:
            return
        name = getattr(report, "scenario", report.nodeid)
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.rows.append((name, "skipped", reason.removeprefix("Skipped: ")))
        elif report.failed:
            self.rows.append((name, "FAILED" if report.when == "call" else "ERROR", _failure(report)))
        else:
            self.rows.append((name, "passed", ""))


def _failure(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    return message.splitlines()[0] if message else "failed"


def table(rows: Sequence[tuple[str, str, str]], secrets: Sequence[str] = ()) -> str:
    width = max([len("scenario"), *(len(r[0]) for r in rows)])
    lines = [f"{'scenario'.ljust(width)}  result   detail"]
    for name, result, detail in rows:
        wrapped = textwrap.wrap(detail, 100) or [""]
        lines.append(f"{name.ljust(width)}  {result.ljust(7)}  {wrapped[0]}".rstrip())
        lines += [f"{'':{width}}  {'':7}  {more}" for more in wrapped[1:]]
    text = "\n".join(lines)
    for secret in secrets:  # nothing prints a key, but a failing assertion must not either
        text = text.replace(secret, "[redacted]")
    return text


def build_target(args: argparse.Namespace) -> Callable[[], Target]:
    """The chosen target's factory (built once here, so a problem shows before any scenario runs)."""
    if args.devstack:
        target = from_endpoints(read_endpoints(args.devstack))
    elif args.func_start:
        state = args.state_dir
        target = func_start(args.func_start, read_endpoints(state) if state and state.exists() else None)
    elif args.url:
        target = explicit(args.url, function_key=os.environ.get("FUNCTION_KEY") or None,
                          master_key=os.environ.get("MASTER_KEY") or None, audiences=tuple(args.audience),
                          app_insights=args.app_insights, resource_group=args.resource_group)
    else:
        target = from_azd(args.environment)
    return lambda: target


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Run the scenarios against one function app and print "
                                     "what passed.", epilog="Without a target option: the current azd environment.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--environment", "-e", help="an azd environment other than the current one")
    where.add_argument("--url", help="a function app's base URL; keys from the FUNCTION_KEY and MASTER_KEY "
                       "environment variables")
    where.add_argument("--func-start", metavar="URL", help="`func start` on this machine, e.g. http://localhost:7071")
    where.add_argument("--devstack", type=Path, metavar="STATE_DIR",
                       help="the host stand-in of `python -m devstack up --functions --state-dir STATE_DIR`")
    parser.add_argument("--state-dir", type=Path, default=Path(".devstack"),
                        help="with --func-start: the devstack it is pointed at (default: %(default)s)")
    parser.add_argument("--audience", action="append", default=[], help="with --url: an accepted token audience")
    parser.add_argument("--app-insights", help="with --url: Application Insights name, for the telemetry scenarios")
    parser.add_argument("--resource-group", help="with --url: its resource group")
    parser.add_argument("--verbose", "-v", action="store_true", help="pytest's own output as well")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        factory = build_target(args)
    except TargetError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    from tests.scenarios.drivers import HttpDriver

    target = factory()
    selection.CHOSEN = selection.Chosen(name=target.name, driver=lambda: HttpDriver(target))
    results = Results()
    print(f"Scenarios against {target.name} ({target.url}):", flush=True)
    pytest_args = [str(SCENARIOS), "-p", "no:cacheprovider", "-o", "addopts=",
                   "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=session",
                   "-o", "asyncio_default_test_loop_scope=session", "-W", "ignore::DeprecationWarning"]
    pytest_args += ["-q"] if args.verbose else ["-p", "no:terminal"]
    code = pytest.main(pytest_args, plugins=[results])
    print(table(results.rows, target.secrets()))
    failed = sum(r[1] in ("FAILED", "ERROR") for r in results.rows)
    passed = sum(r[1] == "passed" for r in results.rows)
    print(f"\n{passed} passed, {failed} failed, {len(results.rows) - passed - failed} skipped.")
    if failed:
        print("What a failure means: README, 'Check your deployment' and 'Troubleshooting'.")
    return 1 if failed or code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) or not passed else 0


if __name__ == "__main__":
    raise SystemExit(main())
