"""`python -m devstack up|settings|env|demo`, run as a user would: in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import cli
from devstack.appsettings import UnknownIdentity, app_settings
from tests.devstack.conftest import start_up

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DESIGN_SETTINGS = {  # DESIGN.md §3, plus what the stand-in needs to be reached at all
    "APIM_BASE_URL", "APIM_SUBSCRIPTION_KEY", "API_APP_ID_URI", "MANAGED_IDENTITY_CLIENT_ID",
    "MANAGED_IDENTITY_WRITE_CLIENT_ID", "AZURE_TENANT_ID", "TIMER_SCHEDULE", "TIMER_API_PATH",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
}


def devstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def wait_for_endpoints(process: subprocess.Popen[str], state_dir: Path, timeout: float = 30) -> dict[str, Any]:
    path = state_dir / "endpoints.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"`up` exited with {process.returncode}:\n{process.stderr.read()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("`up` did not write endpoints.json in time")
        time.sleep(0.05)
    return json.loads(path.read_text(encoding="utf-8"))  # written atomically: never half a file


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """One `up` in the background for the settings/env tests."""
    state_dir = tmp_path_factory.mktemp("state")
    process = start_up(state_dir, "--free-ports")
    try:
        yield state_dir, wait_for_endpoints(process, state_dir)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_serves_until_signalled_then_cleans_up(tmp_path, stop_with):
    process = start_up(tmp_path, "--free-ports")
    endpoints = wait_for_endpoints(process, tmp_path)
    assert get_json(endpoints["backend_url"] + "/inventory/items")[0]["item"] == "widget"
    assert get_json(endpoints["control_url"] + "/stats")["backend"]["requests"] == 1

    process.send_signal(stop_with)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert not (tmp_path / "endpoints.json").exists()
    for name in DESIGN_SETTINGS:
        assert f"export {name}=" in stdout
    assert endpoints["apim_base_url"] in stdout and endpoints["control_url"] in stdout
    assert "X-IDENTITY-HEADER" in stdout and "Authorization: Bearer $TOKEN" in stdout
    assert "python -m devstack settings" in stdout
    assert "devstack stopped." in stdout


def test_a_second_up_on_the_same_state_dir_fails_in_one_line(running):
    state_dir, _ = running
    result = devstack("up", "--state-dir", str(state_dir))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("devstack: error: a devstack is already running")


def test_up_runs_the_logic_app_workflow_on_its_schedule(running):
    _, endpoints = running
    described = get_json(endpoints["control_url"] + "/logicapp")
    assert described["scheduled"] is True and described["trigger"]["frequency"] == "Hour"


def test_settings_writes_local_settings_json(running, tmp_path):
    state_dir, endpoints = running
    out = tmp_path / "local.settings.json"
    result = devstack("settings", "--state-dir", str(state_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr

    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["IsEncrypted"] is False
    values = document["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert DESIGN_SETTINGS <= set(values)
    assert all(isinstance(v, str) for v in values.values())  # Core Tools wants strings
    assert values["MANAGED_IDENTITY_CLIENT_ID"] == endpoints["identities"]["reader"]["client_id"]
    assert values["MANAGED_IDENTITY_WRITE_CLIENT_ID"] == endpoints["identities"]["writer"]["client_id"]


@pytest.mark.skipif(sys.platform == "win32", reason="evaluates the lines with sh")
def test_env_prints_export_lines_a_shell_can_eval(running):
    state_dir, endpoints = running
    result = devstack("env", "--state-dir", str(state_dir), "--identity", "unassigned")
    assert result.returncode == 0, result.stderr
    shell = subprocess.run(["sh", "-c", result.stdout + '\necho "$MANAGED_IDENTITY_CLIENT_ID $TIMER_SCHEDULE"'],
                           capture_output=True, text=True, check=True)
    unassigned = endpoints["identities"]["unassigned"]["client_id"]
    assert shell.stdout.strip() == f"{unassigned} 0 */5 * * * *"


def test_settings_and_env_say_when_no_stack_is_running(tmp_path):
    out = tmp_path / "local.settings.json"
    for result in (devstack("settings", "--state-dir", str(tmp_path), "--out", str(out)),
                   devstack("env", "--state-dir", str(tmp_path))):
        assert result.returncode == 1
        assert "no devstack is running" in result.stderr and "python -m devstack up" in result.stderr
        assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_stale_endpoints_json_is_recognised(tmp_path, endpoints):
    stale = {**endpoints, "control_url": "http://127.0.0.1:9"}  # discard port: nothing answers
    (tmp_path / "endpoints.json").write_text(json.dumps(stale), encoding="utf-8")
    result = devstack("env", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "is stale" in result.stderr


# ---------------------------------------------------------------- in-process


def test_app_settings_pairs_reader_with_writer_and_names_every_setting(endpoints):
    identities = endpoints["identities"]
    settings = app_settings(endpoints)
    assert DESIGN_SETTINGS <= set(settings)
    assert settings["MANAGED_IDENTITY_CLIENT_ID"] == identities["reader"]["client_id"]
    assert settings["MANAGED_IDENTITY_WRITE_CLIENT_ID"] == identities["writer"]["client_id"]
    assert settings["API_APP_ID_URI"] == endpoints["api_app_id_uri"]
    assert settings["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] == "true"

    unassigned = app_settings(endpoints, "unassigned")
    assert unassigned["MANAGED_IDENTITY_CLIENT_ID"] == identities["unassigned"]["client_id"]
    assert unassigned["MANAGED_IDENTITY_WRITE_CLIENT_ID"] == identities["unassigned"]["client_id"]
    with pytest.raises(UnknownIdentity, match="reader"):
        app_settings(endpoints, "nobody")


def test_an_api_without_a_subscription_key_gets_no_key_setting(endpoints):
    assert "APIM_SUBSCRIPTION_KEY" not in app_settings({**endpoints, "subscription_key": None})


def test_demo_runs_devstack_demo_main_with_the_remaining_arguments(monkeypatch):
    seen: list[list[str]] = []
    fake = types.ModuleType("devstack.demo")
    fake.main = lambda args: seen.append(args) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "devstack.demo", fake)
    assert cli.main(["demo", "--verbose", "x"]) == 0
    assert seen == [["--verbose", "x"]]
