"""azure.yaml, the GitHub workflows and the infra check script: the deploy path around infra/.

Text checks only (no YAML parser in the dev requirements); each names what a user relies on.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra import bicep

ROOT = bicep.ROOT
WORKFLOWS = ROOT / ".github" / "workflows"


def _read(path: Path) -> str:
    return path.read_text()


def test_azure_yaml_deploys_this_folder_as_a_python_function_app() -> None:
    text = _read(ROOT / "azure.yaml")
    assert re.search(r"^infra:\n(  .*\n)*  path: infra\n", text, re.MULTILINE)
    service = re.search(r"^services:\n  (\w+):\n((    .*\n|\s*#.*\n)*)", text, re.MULTILINE)
    assert service, "azure.yaml has no service"
    name, body = service.group(1), service.group(2)
    assert "project: .\n" in body and "language: python\n" in body and "host: function\n" in body
    # azd finds the app by this tag; the Bicep must set the same service name.
    function_app = _read(bicep.INFRA / "modules" / "function-app.bicep")
    assert f"param serviceName string = '{name}'" in function_app
    assert "'azd-service-name': serviceName" in function_app


def test_predown_hook_exists_and_is_executable() -> None:
    text = _read(ROOT / "azure.yaml")
    (script,) = re.findall(r"run: \./(infra/hooks/predown[\w.-]+)", text)
    path = ROOT / script
    assert path.is_file() and path.stat().st_mode & 0o111
    assert "API_CLIENT_ID" in _read(path)
    assert "API_CLIENT_ID" in {name for name in re.findall(r"^output (\w+) ", _read(bicep.INFRA / "main.bicep"),
                                                            re.MULTILINE)}


def test_ci_workflow_runs_ci_run_on_push_and_pull_request() -> None:
    text = _read(WORKFLOWS / "ci.yml")
    assert re.search(r"^on:\n(  .*\n)*  push:", text, re.MULTILINE)
    assert re.search(r"^on:\n(  .*\n)*  pull_request:", text, re.MULTILINE)
    assert "run: bash .ci/run" in text
    assert "secrets." not in text
    # The real compiler and linter, which the offline checks only approximate.
    assert "az bicep build --file infra/main.bicep" in text
    assert "az bicep lint --file infra/main.bicep" in text


def test_deploy_workflow_uses_oidc_and_no_secrets() -> None:
    text = _read(WORKFLOWS / "azure-dev.yml")
    assert "id-token: write" in text
    assert "uses: azure/login@" in text
    for field in ("client-id", "tenant-id", "subscription-id"):
        assert re.search(rf"{field}: \$\{{\{{ vars\.AZURE_\w+ \}}\}}", text), field
    assert "secrets." not in text
    assert "creds:" not in text and "client-secret" not in text
    provision, deploy = text.index("azd provision --no-prompt"), text.index("azd deploy --no-prompt")
    assert provision < deploy
    # ARM validates the template before anything is created.
    assert text.index("az deployment sub validate") < provision
    assert text.index("azd provision --preview --no-prompt") < provision
    assert text.index("az bicep lint --file infra/main.bicep") < provision
    assert "bash .ci/run" in text  # the offline checks gate the deployment


def test_every_workflow_that_provisions_validates_first() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        text = _read(path)
        starts = [text.index(c) for c in ("azd up --no-prompt", "azd provision --no-prompt") if c in text]
        if not starts:
            continue
        first = min(starts)
        for gate in ("az bicep lint --file infra/main.bicep", "az deployment sub validate"):
            assert gate in text and text.index(gate) < first, f"{path.name}: {gate} not before provisioning"


def test_deploy_workflow_is_the_one_azd_pipeline_config_looks_for() -> None:
    assert (WORKFLOWS / "azure-dev.yml").is_file()
    assert not (WORKFLOWS / "deploy.yml").exists()


def _ignored_by(patterns_file: Path, name: str) -> bool:
    """Whether a top-level name matches a pattern of a .gitignore-style file (enough for these names)."""
    patterns = [line.strip().rstrip("/") for line in _read(patterns_file).splitlines()
                if line.strip() and not line.startswith("#")]
    return any(fnmatch.fnmatch(name, pattern.lstrip("/")) for pattern in patterns)


def test_infra_venv_stays_out_of_the_deployed_package() -> None:
    # scripts/check-infra creates .venv-infra (checkov and ~90 dependencies) in the repository;
    # azd deploy and func publish upload what .funcignore does not exclude.
    assert _ignored_by(ROOT / ".funcignore", ".venv-infra")
    assert _ignored_by(ROOT / ".funcignore", "requirements-infra.txt")


def test_infra_venv_stays_out_of_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", ".venv-infra/"], cwd=ROOT, check=False)
    assert result.returncode == 0, ".venv-infra is not ignored by git"


def test_check_infra_script_runs_checkov_once_offline_and_fails_on_parse_errors() -> None:
    text = _read(ROOT / "scripts" / "check-infra")
    assert (ROOT / "scripts" / "check-infra").stat().st_mode & 0o111
    assert text.count("checkov\" --framework bicep") == 1
    assert "--skip-download" in text
    assert "parsing_errors" in text
    requirements = _read(ROOT / "requirements-infra.txt")
    assert re.search(r"^checkov==", requirements, re.MULTILINE)
    assert re.search(r"^pycep-parser==", requirements, re.MULTILINE)
