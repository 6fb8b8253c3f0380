"""How a user and the workflows run the scenarios: `up --functions`, scripts/verify, the two workflows."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.cli import ToolError, run_json
from tests.scenarios.conftest import REPO
from tests.scenarios.drivers import ADMIN, KEYS, TELEMETRY, HttpDriver
from tests.scenarios.targets import explicit, func_start

WORKFLOWS = REPO / ".github" / "workflows"


def steps(text: str) -> list[str]:
    """The workflow's steps, each as its text (a `- name:`/`- uses:` item and what follows it)."""
    return re.split(r"\n(?=      - )", text)


def step_index(text: str, needle: str) -> int:
    found = [i for i, step in enumerate(steps(text)) if needle in step]
    assert found, f"no step with {needle!r}"
    return found[0]


def test_scripts_verify_runs_the_python_entry_point_with_its_options() -> None:
    script = REPO / "scripts" / "verify"
    assert os.access(script, os.X_OK)
    text = script.read_text(encoding="utf-8")
    assert 'exec .venv/bin/python -m tests.scenarios "$@"' in text
    assert "./scripts/bootstrap" in text


def test_the_entry_point_documents_every_target_option() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.scenarios", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for option in ("--environment", "--url", "--func-start", "--devstack", "--audience", "--app-insights"):
        assert option in result.stdout


def test_the_deploy_workflow_verifies_after_deploying() -> None:
    text = (WORKFLOWS / "azure-dev.yml").read_text(encoding="utf-8")
    deploy, verify = step_index(text, "azd deploy --no-prompt"), step_index(text, "run: ./scripts/verify")
    assert deploy < verify
    assert step_index(text, "az extension add --name application-insights") < verify
    assert step_index(text, "actions/setup-python") < verify


@pytest.fixture(scope="module")
def pr_workflow() -> str:
    return (WORKFLOWS / "pr-environment.yml").read_text(encoding="utf-8")


def test_the_pull_request_workflow_deploys_verifies_and_always_tears_down(pr_workflow: str) -> None:
    text = pr_workflow
    assert re.search(r"^on:\n  pull_request:", text, re.MULTILINE)
    up, verify = step_index(text, "run: azd up --no-prompt"), step_index(text, "run: ./scripts/verify")
    down = step_index(text, "run: azd down --purge --force")
    assert up < verify < down
    assert "if: always()" in steps(text)[down]
    assert "AZURE_ENV_NAME: pr${{ github.event.pull_request.number }}" in text  # an environment of its own
    assert "cancel-in-progress: false" in text  # a new push never cuts a teardown short
    assert "bash .ci/run" in text  # the offline checks first


def test_the_pull_request_workflow_signs_in_with_oidc_only(pr_workflow: str) -> None:
    text = pr_workflow
    assert "id-token: write" in text and "uses: azure/login@" in text
    for field in ("client-id", "tenant-id", "subscription-id"):
        assert re.search(rf"{field}: \$\{{\{{ vars\.AZURE_\w+ \}}\}}", text), field
    assert "secrets." not in text and "client-secret" not in text and "creds:" not in text
    assert "github.event.pull_request.head.repo.full_name == github.repository" in text  # forks get no token


def test_up_functions_prints_a_curl_call_that_works(standin: Any) -> None:
    """What `python -m devstack up --functions` prints: a call with a function key, as a user would paste it."""
    [line] = [line for line in standin.log_text().splitlines() if line.strip().startswith("curl -s 'http")]
    url = shlex.split(line)[-1]
    assert "/api/apim/orders?code=" in url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        assert response.status == 200 and isinstance(json.loads(response.read()), list)
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(url.split("?")[0], timeout=30)
    assert refused.value.code == 401


def test_func_start_and_explicit_targets_say_what_they_cannot_do(standin_endpoints: dict[str, Any]) -> None:
    local = HttpDriver(func_start("http://localhost:7071/", standin_endpoints))
    assert local.target.url == "http://localhost:7071" and local.evidence is not None
    assert "does not check function keys" in (local.cannot(KEYS) or "")
    assert local.cannot(ADMIN) is None  # no key needed locally
    bare = HttpDriver(func_start("http://localhost:7071"))
    assert bare.cannot(TELEMETRY) and bare.target.audiences == ()
    given = HttpDriver(explicit("https://app.example", function_key="k3y-s3cret", master_key=None,
                                app_insights="appi",
                                resource_group="rg"))
    assert given.cannot(KEYS) is None and "no master key" in (given.cannot(ADMIN) or "")
    assert given.evidence is not None and given.evidence.description == "Application Insights 'appi'"
    assert "k3y-s3cret" not in repr(given.target)


def test_a_tool_that_prints_no_json_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "azd"
    tool.write_text("#!/bin/sh\necho 'Welcome to azd!'\n", encoding="utf-8")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="did not print JSON"):
        run_json("azd", ["env", "get-values", "--output", "json"], what="read the azd environment")
