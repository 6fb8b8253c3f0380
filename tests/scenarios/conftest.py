"""Which targets the scenarios run against, and the fixtures that set them up.

In the suite (`./scripts/test`): every scenario twice, in-process against the session's
devstack and over HTTP against the host stand-in (`python -m devstack up --functions`
in a child process, as `func start` would be). `python -m tests.scenarios` chooses one
target instead (`selection.CHOSEN`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.appsettings import app_settings
from tests.scenarios import selection
from tests.scenarios.drivers import WRITE_REFUSAL, Driver, HttpDriver, InProcessDriver
from tests.scenarios.evidence import DevstackEvidence
from tests.scenarios.targets import from_endpoints

IN_PROCESS, HOST_STANDIN = "in-process", "host stand-in"
REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 90


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "driver" in metafunc.fixturenames:
        chosen = [selection.CHOSEN.name] if selection.CHOSEN else [IN_PROCESS, HOST_STANDIN]
        metafunc.parametrize("driver", chosen, indirect=True)


# ---------------------------------------------------------------- the host stand-in, in a child process


class StandIn:
    """`python -m devstack up --functions` in a child process, stopped with SIGTERM as Ctrl+C would."""

    def __init__(self, state_dir: Path, *extra: str) -> None:
        self.state_dir = state_dir
        env = dict(os.environ)
        # Export spans every 100 ms rather than every 5 s, so telemetry shows quickly (nothing else changes).
        env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
        self.log = (state_dir.parent / f"{state_dir.name}.log").open("w", encoding="utf-8")
        command = [sys.executable, "-m", "devstack", "up", "--functions", "--free-ports", "--state-dir",
                   str(state_dir), *extra]
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def endpoints(self) -> dict[str, Any]:
        path = self.state_dir / "endpoints.json"
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"devstack up --functions exited with {self.process.returncode}: "
                                   f"{self.log_text()[-2000:]}")
            try:
                endpoints = json.loads(path.read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                endpoints = {}
            if "functions" in endpoints:
                return endpoints
            time.sleep(0.1)
        raise RuntimeError(f"devstack up --functions did not start in {STARTUP_SECONDS} s")

    def log_text(self) -> str:
        self.log.flush()
        return (self.state_dir.parent / f"{self.state_dir.name}.log").read_text(encoding="utf-8")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    process = StandIn(tmp_path_factory.mktemp("standin") / "state")
    try:
        process.endpoints()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def standin_endpoints(standin: StandIn) -> dict[str, Any]:
    return standin.endpoints()


@pytest.fixture(scope="session")
def reader_only_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A second host stand-in whose app writes with the reader identity (no write role)."""
    process = StandIn(tmp_path_factory.mktemp("reader-only") / "state", "--write-identity", "reader")
    try:
        yield process.endpoints()
    finally:
        process.stop()


# ---------------------------------------------------------------- in-process


@pytest.fixture(scope="session")
def in_process_telemetry(telemetry_to_devstack: None) -> None:
    """The app's telemetry to the session devstack's ingestion, once per process: the suite's one set-up."""


async def in_process(endpoints: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                     write_identity: str | None = None) -> InProcessDriver:
    """The app in this process, configured for the session devstack as the host would configure it."""
    from devstack.invocation import app_functions
    from shared import runtime, telemetry

    settings = app_settings(endpoints, "reader")
    settings.pop("APPLICATIONINSIGHTS_CONNECTION_STRING")  # export is set up once per process, above
    if write_identity:
        settings["MANAGED_IDENTITY_WRITE_CLIENT_ID"] = endpoints["identities"][write_identity]["client_id"]
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    await runtime.reset_runtime()
    write_roles = endpoints["identities"][write_identity or "writer"]["roles"]
    evidence = DevstackEvidence(endpoints["control_url"], before_query=telemetry.flush)
    return InProcessDriver(app_functions(), audiences=(endpoints["api_app_id_uri"], endpoints["api_client_id"]),
                           read_role=endpoints["api_roles"]["read"], write_role=endpoints["api_roles"]["write"],
                           evidence=evidence, writes_refused=endpoints["api_roles"]["write"] not in write_roles)


# ---------------------------------------------------------------- the driver a scenario gets


@pytest.fixture
async def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Driver]:
    chosen: Driver
    if selection.CHOSEN is not None:
        chosen = selection.CHOSEN.driver()
    elif request.param == IN_PROCESS:
        request.getfixturevalue("in_process_telemetry")
        chosen = await in_process(request.getfixturevalue("endpoints"), monkeypatch)
    else:
        chosen = HttpDriver(from_endpoints(request.getfixturevalue("standin_endpoints")))
    try:
        yield chosen
    finally:
        await chosen.close()
        if isinstance(chosen, InProcessDriver):
            from shared import runtime

            await runtime.reset_runtime()


@pytest.fixture
async def refusing_driver(driver: Driver, request: pytest.FixtureRequest,
                          monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Driver]:
    """The same kind of target, with an app that writes with the reader identity; skips where there is none."""
    if isinstance(driver, InProcessDriver):
        yield await in_process(request.getfixturevalue("endpoints"), monkeypatch, write_identity="reader")
        return
    if isinstance(driver, HttpDriver) and driver.name == HOST_STANDIN and not selection.CHOSEN:
        refusing = HttpDriver(from_endpoints(request.getfixturevalue("reader_only_standin"),
                                             name="host stand-in (reader writes)"))
        yield refusing
        await refusing.close()
        return
    reason = driver.cannot(WRITE_REFUSAL)
    if reason is None:
        yield driver
        return
    pytest.skip(reason)
