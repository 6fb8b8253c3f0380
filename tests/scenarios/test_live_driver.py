"""The live driver (`python -m tests.scenarios` against a deployment), run against the host stand-in.

The stand-in is dressed as a deployment: fake `azd` and `az` on PATH (fake_azure.py)
print its URL, keys and telemetry in the shape the real tools print, so the live
driver's configuration is read exactly as it is after `azd up`: `azd env get-values`,
`az functionapp keys list`, `az monitor app-insights query`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import fake_azure as fakes
from tests.scenarios.__main__ import table
from tests.scenarios.conftest import REPO
from tests.scenarios.targets import TargetError, from_azd

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake tools are POSIX scripts")

SCENARIO_COUNT = 8


@pytest.fixture
def dressed(tmp_path: Path, standin_endpoints: dict[str, Any], standin: Any,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake azd/az first on PATH, answering for the stand-in; returns the log of their calls."""
    fakes.install(tmp_path / "bin")
    log = tmp_path / "calls.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_AZURE_ENDPOINTS", str(standin.state_dir / "endpoints.json"))
    monkeypatch.setenv("FAKE_AZURE_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m tests.scenarios`, as scripts/verify and the workflows run it."""
    return subprocess.run([sys.executable, "-m", "tests.scenarios", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})}, check=False)


def rows(output: str) -> dict[str, str]:
    """scenario name -> result, from the printed table."""
    found = {}
    for line in output.splitlines():
        for result in ("passed", "skipped", "FAILED", "ERROR"):
            if f"  {result}" in line:
                found[line.split(f"  {result}")[0].strip()] = result
    return found


def assert_no_secret(output: str, endpoints: dict[str, Any]) -> None:
    keys = endpoints["functions"]["keys"]
    for secret in (keys["masterKey"], *keys["functionKeys"].values(),
                   *(k for f in keys["functions"].values() for k in f.values())):
        assert secret not in output


def test_against_the_current_azd_environment_every_scenario_runs(dressed: Path,
                                                                 standin_endpoints: dict[str, Any]) -> None:
    result = verify()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    table_rows = rows(result.stdout)
    assert len(table_rows) == SCENARIO_COUNT, result.stdout
    assert list(table_rows.values()).count("passed") == SCENARIO_COUNT - 1, result.stdout
    assert table_rows["reader's write refused, with its hint"] == "skipped"
    assert "holds Orders.Write" in result.stdout  # the skip says why
    assert_no_secret(output, standin_endpoints)

    made = calls(dressed)
    assert ["azd", "env", "get-values", "--output", "json"] in made
    keys_call = next(c for c in made if c[1:4] == ["functionapp", "keys", "list"])
    assert keys_call[keys_call.index("--name") + 1] == fakes.APP_NAME
    assert "--subscription" in keys_call  # the azd environment's subscription, not the CLI's default
    queries = [c[c.index("--analytics-query") + 1] for c in made if c[1:4] == ["monitor", "app-insights", "query"]]
    assert any("operation_Id ==" in q for q in queries) and any(q.startswith("requests") for q in queries)


def test_a_named_environment_is_passed_to_azd(dressed: Path) -> None:
    target = from_azd("staging")
    assert target.name == "azd environment 'staging'"
    assert ["azd", "env", "get-values", "--output", "json", "--environment", "staging"] in calls(dressed)


def test_the_target_reads_url_keys_and_audiences_from_azd_and_az(dressed: Path,
                                                                  standin_endpoints: dict[str, Any]) -> None:
    target = from_azd()
    functions = standin_endpoints["functions"]
    assert target.url == functions["url"]
    assert target.function_key == functions["keys"]["functionKeys"]["default"]
    assert target.master_key == functions["keys"]["masterKey"]
    assert target.audiences == (standin_endpoints["api_app_id_uri"], standin_endpoints["api_client_id"])
    assert target.evidence is not None and "appi-orders-fake" in target.evidence.description
    assert target.function_key not in repr(target) and target.master_key not in repr(target)


def test_an_environment_without_a_deployment_names_what_is_missing(dressed: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AZD_EMPTY", "1")
    with pytest.raises(TargetError, match=r"AZURE_FUNCTION_APP_NAME.*run `azd up`"):
        from_azd()
    result = verify()
    assert result.returncode == 2 and "run `azd up`" in result.stderr


def test_a_failing_az_is_reported_with_its_message_never_its_output(dressed: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    standin_endpoints: dict[str, Any]) -> None:
    monkeypatch.setenv("FAKE_AZ_KEYS_FAIL", "1")
    with pytest.raises(TargetError) as raised:
        from_azd()
    message = str(raised.value)
    assert "az functionapp keys" in message and "AuthorizationFailed" in message and "exit status 1" in message
    assert_no_secret(message, standin_endpoints)


def test_without_azd_on_path_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TargetError, match=r"'azd' is not on PATH.*Azure Developer CLI"):
        from_azd()


def test_a_url_with_keys_from_the_environment_and_no_telemetry_source(standin_endpoints: dict[str, Any]) -> None:
    functions = standin_endpoints["functions"]
    keys = {"FUNCTION_KEY": functions["keys"]["functionKeys"]["default"], "MASTER_KEY": functions["keys"]["masterKey"]}
    result = verify("--url", functions["url"], "--audience", standin_endpoints["api_app_id_uri"],
                    "--audience", standin_endpoints["api_client_id"], env=keys)
    assert result.returncode == 0, result.stdout + result.stderr
    table_rows = rows(result.stdout)
    assert table_rows["telemetry correlated with the call"] == "skipped"
    assert table_rows["timer run once through the admin endpoint"] == "skipped"
    assert table_rows["a call without (or with a wrong) function key refused"] == "passed"
    assert "no telemetry source" in result.stdout
    assert_no_secret(result.stdout + result.stderr, standin_endpoints)


def test_a_wrong_key_fails_the_run_and_the_table_says_which_scenarios(standin_endpoints: dict[str, Any]) -> None:
    functions = standin_endpoints["functions"]
    result = verify("--url", functions["url"], env={"FUNCTION_KEY": "not-the-key", "MASTER_KEY": "not-it-either"})
    assert result.returncode == 1
    table_rows = rows(result.stdout)
    assert table_rows["reader's GET /orders"] == "FAILED"
    assert "Troubleshooting" in result.stdout


def test_the_table_never_shows_a_secret() -> None:
    printed = table([("scenario", "FAILED", "assert 'k3y' == 'other'")], secrets=["k3y"])
    assert "k3y" not in printed and "[redacted]" in printed
