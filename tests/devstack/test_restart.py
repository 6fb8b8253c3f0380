"""Settings written once survive a restart: fixed ports, kept secrets, careful updates.

The suite never uses the default fixed ports (other stacks, yours or other test runs, may
hold them): where a fixed port matters, the test picks free ones and passes them explicitly.
"""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import DevStack, cli
from devstack.appsettings import azure_reason
from devstack.config import DEFAULT_PORTS, load_config
from tests.devstack.conftest import start_up
from tests.devstack.test_cli import PROJECT_ROOT, devstack, wait_for_endpoints

SERVICES = ("identity", "apim", "backend", "ingestion", "control")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="stops `up` with SIGTERM / evals with sh")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    if sys.platform != "win32":  # there SIGTERM is TerminateProcess: no clean exit to check
        assert process.returncode == 0, stderr
    return stdout


def fixed_port_options() -> list[str]:
    return [f"--port={name}={port}" for name, port in zip(SERVICES, free_ports(len(SERVICES)), strict=True)]


def token(values: dict[str, str]) -> dict[str, Any]:
    """A token request exactly as azure-identity makes it on App Service, with the file's values."""
    query = (f"?api-version=2019-08-01&resource={values['API_APP_ID_URI']}"
             f"&client_id={values['MANAGED_IDENTITY_CLIENT_ID']}")
    request = urllib.request.Request(values["IDENTITY_ENDPOINT"] + query,
                                     headers={"X-IDENTITY-HEADER": values["IDENTITY_HEADER"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def call_api(values: dict[str, str], access_token: str) -> int:
    request = urllib.request.Request(values["APIM_BASE_URL"] + "/orders", headers={
        "Authorization": f"Bearer {access_token}", "Ocp-Apim-Subscription-Key": values["APIM_SUBSCRIPTION_KEY"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[tuple[Path, dict[str, Any]]]:
    state_dir = tmp_path_factory.mktemp("state")
    process = start_up(state_dir, "--free-ports")
    try:
        yield state_dir, wait_for_endpoints(process, state_dir)
    finally:
        stop(process)


# ---------------------------------------------------------------- ports


@posix_only
def test_settings_written_once_still_work_after_a_restart(tmp_path):
    state_dir, out = tmp_path / "state", tmp_path / "local.settings.json"
    options = fixed_port_options()

    first = start_up(state_dir, *options)
    before = wait_for_endpoints(first, state_dir)
    try:
        assert devstack("settings", "--state-dir", str(state_dir), "--out", str(out)).returncode == 0
    finally:
        stop(first)
    written = out.read_text(encoding="utf-8")

    second = start_up(state_dir, *options)
    after = wait_for_endpoints(second, state_dir)
    try:
        assert {k: after[k] for k in ("identity_endpoint", "apim_base_url", "connection_string", "control_url",
                                      "identity_header", "subscription_key")} == \
               {k: before[k] for k in ("identity_endpoint", "apim_base_url", "connection_string", "control_url",
                                       "identity_header", "subscription_key")}
        values = json.loads(written)["Values"]
        assert call_api(values, token(values)["access_token"]) == 200  # the old file, the new stack
        rewritten = devstack("settings", "--state-dir", str(state_dir), "--out", str(out))
        assert rewritten.returncode == 0, rewritten.stderr
        assert out.read_text(encoding="utf-8") == written  # nothing to change
    finally:
        stop(second)


def test_up_listens_on_the_fixed_ports_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv(cli.FREE_PORTS_ENV, raising=False)
    args = cli.build_parser().parse_args(["up"])
    assert cli._ports(args, load_config()) == DEFAULT_PORTS
    assert set(DEFAULT_PORTS) == set(SERVICES)
    assert json.loads((PROJECT_ROOT / "devstack" / "config.json").read_text())["ports"] == DEFAULT_PORTS

    config_file = tmp_path / "config.json"
    raw = json.loads((PROJECT_ROOT / "devstack" / "config.json").read_text())
    config_file.write_text(json.dumps({**raw, "ports": {"apim": 9000}}))
    args = cli.build_parser().parse_args(["up", "--port", "identity=9001", "--port", "control=0"])
    assert cli._ports(args, load_config(config_file)) == {**DEFAULT_PORTS, "apim": 9000, "identity": 9001,
                                                          "control": 0}


@pytest.mark.parametrize("how", ["--free-ports", "env"])
def test_free_ports_on_request(monkeypatch, how):
    monkeypatch.setenv(cli.FREE_PORTS_ENV, "1" if how == "env" else "0")
    args = cli.build_parser().parse_args(["up", *([how] if how != "env" else [])])
    assert cli._ports(args, load_config()) == {}  # DevStack picks a free port for each service
    args = cli.build_parser().parse_args(["up", "--port", "apim=9000", *([how] if how != "env" else [])])
    assert cli._ports(args, load_config()) == {"apim": 9000}  # what is named explicitly stays fixed


@pytest.mark.parametrize("bad", ["apim=http", "apim=70000", "apim=-1", "apim"])
def test_a_bad_port_option_is_refused_in_one_line(bad, tmp_path):
    result = devstack("up", "--state-dir", str(tmp_path), "--port", bad)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"devstack: error: --port {bad}:") and "--port SERVICE=PORT" in line


def test_a_port_in_use_is_named_with_the_options_that_avoid_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = devstack("up", "--state-dir", str(tmp_path), "--port", f"apim={port}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"127.0.0.1:{port} for 'apim'" in line
    assert "--port apim=PORT" in line and "--free-ports" in line and '"ports"' in line
    assert not (tmp_path / "endpoints.json").exists()


def test_an_unknown_service_in_ports_is_named():
    with pytest.raises(ValueError, match="no service named nope; the services are: identity"):
        DevStack(ports={"nope": 0}).start()


def test_the_state_dir_keeps_header_and_key_owner_only(tmp_path):
    with DevStack(state_dir=tmp_path) as first:
        kept = (first.state.identity_header, first.state.subscription_key)
    with DevStack(state_dir=tmp_path) as second:
        assert (second.state.identity_header, second.state.subscription_key) == kept
        assert second.endpoints["identity_header"] == kept[0]
    if sys.platform != "win32":
        assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    with DevStack(state_dir=tmp_path, config=load_config(subscription_key="from-config")) as third:
        assert third.state.subscription_key == "from-config"  # the config's key wins
    with DevStack() as no_state_dir:
        assert no_state_dir.state.identity_header != kept[0]


# ---------------------------------------------------------------- settings


def settings(running: tuple[Path, dict[str, Any]], out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return devstack("settings", "--state-dir", str(running[0]), "--out", str(out), *options)


def test_settings_updates_only_the_stand_ins_own_keys(running, tmp_path):
    _, endpoints = running
    out = tmp_path / "local.settings.json"
    out.write_text(json.dumps({
        "IsEncrypted": False,
        "Values": {"MY_OWN_SETTING": "kept", "TIMER_SCHEDULE": "0 0 * * * *",
                   "INVENTORY_TIMER_SCHEDULE": "0 30 * * * *", "INVENTORY_TIMER_API_PATH": "/items/widget",
                   "IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token", "IDENTITY_HEADER": "stale",
                   "APIM_BASE_URL": "http://localhost:1/orders"},
        "Host": {"LocalHttpPort": 7072},
    }), encoding="utf-8")

    result = settings(running, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"updated {out}")
    document = json.loads(out.read_text(encoding="utf-8"))
    values = document["Values"]
    assert document["Host"] == {"LocalHttpPort": 7072}
    assert values["MY_OWN_SETTING"] == "kept" and values["TIMER_SCHEDULE"] == "0 0 * * * *"
    assert values["IDENTITY_ENDPOINT"] == endpoints["identity_endpoint"]
    assert values["IDENTITY_HEADER"] == endpoints["identity_header"]
    assert values["APIM_BASE_URL"] == endpoints["apim_base_url"]
    assert values["TIMER_API_PATH"] == "/status" and values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    # A further connection's timer settings are the developer's too.
    assert (values["INVENTORY_TIMER_SCHEDULE"], values["INVENTORY_TIMER_API_PATH"]) == ("0 30 * * * *", "/items/widget")


def test_settings_leaves_a_file_that_points_at_azure_alone_unless_forced(running, tmp_path):
    _, endpoints = running
    out = tmp_path / "local.settings.json"
    original = (PROJECT_ROOT / "local.settings.json.example").read_text(encoding="utf-8")
    out.write_text(original, encoding="utf-8")

    refused = settings(running, out)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "points at Azure" in refused.stderr and "APIM_BASE_URL is https://contoso.azure-api.net/orders" \
        in refused.stderr and "--force" in refused.stderr and "--out" in refused.stderr
    assert out.read_text(encoding="utf-8") == original

    forced = settings(running, out, "--force")
    assert forced.returncode == 0, forced.stderr
    values = json.loads(out.read_text(encoding="utf-8"))["Values"]
    assert values["APIM_BASE_URL"] == endpoints["apim_base_url"]
    # Telemetry goes to the stand-in, authenticated as its host identity, as in Azure.
    host = endpoints["identities"]["host"]["client_id"]
    assert values["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == f"ClientId={host};Authorization=AAD"


@pytest.mark.parametrize(("values", "reason"), [
    ({"APIM_BASE_URL": "https://contoso.azure-api.net/orders"}, "APIM_BASE_URL is https://contoso"),
    ({"APIM_BASE_URL": "http://127.0.0.1:7172/orders"}, "no IDENTITY_ENDPOINT"),
    ({"IDENTITY_ENDPOINT": "http://169.254.129.3:8081/msi/token"}, "IDENTITY_ENDPOINT is http://169.254"),
    ({"IDENTITY_ENDPOINT": "http://[::1]:1/msi/token",
      "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x;IngestionEndpoint=https://westeurope-5.in"
      ".applicationinsights.azure.com/"}, "APPLICATIONINSIGHTS_CONNECTION_STRING"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, "APPLICATIONINSIGHTS_CONNECTION_STRING"),
    ({"BILLING_APIM_BASE_URL": "https://contoso.azure-api.net/billing", "IDENTITY_ENDPOINT": "http://localhost:1"},
     "BILLING_APIM_BASE_URL"),
])
def test_a_file_that_points_at_azure_is_recognised(values, reason):
    assert reason in (azure_reason(values) or "")


def test_a_stand_in_file_is_not_taken_for_azure(endpoints):
    assert azure_reason(cli.local_settings(endpoints)["Values"]) is None
    assert azure_reason({"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}) \
        is None


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"Values": "x"}'])
def test_settings_leaves_a_file_it_cannot_read_unless_forced(running, tmp_path, content):
    out = tmp_path / "local.settings.json"
    out.write_text(content, encoding="utf-8")
    refused = settings(running, out)
    assert refused.returncode == 1 and "left unchanged" in refused.stderr and "--force" in refused.stderr
    assert out.read_text(encoding="utf-8") == content
    forced = settings(running, out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "IDENTITY_ENDPOINT" in json.loads(out.read_text(encoding="utf-8"))["Values"]


def test_settings_refuses_an_encrypted_file_even_with_force(running, tmp_path):
    out = tmp_path / "local.settings.json"
    content = json.dumps({"IsEncrypted": True, "Values": {"APIM_BASE_URL": "c2VjcmV0"}})
    out.write_text(content, encoding="utf-8")
    refused = settings(running, out, "--force")
    assert refused.returncode == 1 and "func settings decrypt" in refused.stderr
    assert out.read_text(encoding="utf-8") == content


# ---------------------------------------------------------------- env


@posix_only
def test_env_unset_leaves_the_stand_in(running):
    state_dir, _ = running
    exported = devstack("env", "--state-dir", str(state_dir))
    assert exported.returncode == 0, exported.stderr
    assert 'eval "$(python -m devstack env --unset)"' in exported.stdout
    unset = devstack("env", "--unset")  # no stack needed to leave it
    assert unset.returncode == 0, unset.stderr
    script = exported.stdout + "\n" + unset.stdout + "\n" + "env"
    after = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    exported_names = [line.split()[1].split("=")[0] for line in exported.stdout.splitlines()
                      if line.startswith("export ")]
    assert "IDENTITY_ENDPOINT" in exported_names and "APIM_BASE_URL" in exported_names
    for name in exported_names:
        assert f"\n{name}=" not in "\n" + after


def test_env_speaks_powershell_too(running):
    state_dir, endpoints = running
    result = devstack("env", "--state-dir", str(state_dir), "--shell", "powershell")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"$env:APIM_BASE_URL = '{endpoints['apim_base_url']}'" in lines
    assert "$env:TIMER_SCHEDULE = '0 */5 * * * *'" in lines
    assert lines[-1] == "# to leave the stand-in: python -m devstack env --unset --shell powershell | Invoke-Expression"
    assert cli.export_lines({"X": "it's"}, "powershell") == ["$env:X = 'it''s'"]
    unset = devstack("env", "--unset", "--shell", "powershell")
    assert unset.stdout.startswith("Remove-Item -ErrorAction SilentlyContinue Env:IDENTITY_ENDPOINT, ")
