"""scripts/bicep_types.py and scripts/json_schemas.py: what they accept and what they catch.

They need the type data and schemas beside the repository (../shared/azure-types, or
$AZURE_TYPES_DIR), so they are not part of the default pytest run: scripts/check-infra runs them
after the checks themselves when the data is there, and says so when it is not. The scripts run in
.venv-infra (tree-sitter-bicep, jsonschema, PyYAML), as check-infra runs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra import bicep

ROOT = bicep.ROOT
TYPES = Path(os.environ.get("AZURE_TYPES_DIR") or ROOT.parent / "shared" / "azure-types")


@pytest.fixture(autouse=True, scope="module")
def _type_data() -> None:
    if not (TYPES / "bicep").is_dir():
        pytest.fail(f"no type data at {TYPES}: scripts/check-infra runs these tests only when it is there")


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    if not bicep.INFRA_VENV_PYTHON.exists():
        pytest.fail(".venv-infra does not exist: run scripts/check-infra")
    return subprocess.run([str(bicep.INFRA_VENV_PYTHON), str(ROOT / "scripts" / script), "--types", str(TYPES),
                           *args], capture_output=True, text=True, timeout=120, check=False)


def _copy(tmp_path: Path, module: str, *replacements: tuple[str, str]) -> Path:
    text = (bicep.INFRA / "modules" / module).read_text()
    for old, new in replacements:
        assert old in text, f"{module} no longer has {old!r}: update this test"
        text = text.replace(old, new)
    path = tmp_path / module
    path.write_text(text)
    return path


def test_the_templates_have_no_type_errors() -> None:
    result = _run("bicep_types.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 errors," in result.stdout
    assert "ERROR" not in result.stdout


def test_a_misspelled_property_a_wrong_nesting_and_an_enum_typo_are_caught(tmp_path: Path) -> None:
    storage = _copy(
        tmp_path, "storage.bicep",
        ("    allowBlobPublicAccess: false\n", "    allowBlobPublicAcess: false\n"),  # misspelled
        # wrong nesting: an account property moved into networkAcls
        ("    minimumTlsVersion: 'TLS1_2'\n", ""),
        ("      bypass: 'AzureServices'\n", "      bypass: 'AzureServices'\n      minimumTlsVersion: 'TLS1_2'\n"),
        ("    publicAccess: 'None'", "    publicAccess: 'Nnoe'"),  # closed enum: Container, Blob, None
    )
    result = _run("bicep_types.py", str(storage))
    assert result.returncode == 1
    out = result.stdout
    assert "storage.properties.allowBlobPublicAcess: no such property" in out
    assert "did you mean 'allowBlobPublicAccess'" in out
    assert "storage.properties.networkAcls.minimumTlsVersion: no such property on NetworkRuleSet" in out
    assert "deploymentContainer.properties.publicAccess: 'Nnoe' is not one of the closed enum's values" in out
    assert ", 3 errors," in out


def test_an_open_enum_mismatch_is_a_warning_only(tmp_path: Path) -> None:
    # Storage SKU names are an open enum (the service may accept more than the data lists).
    storage = _copy(tmp_path, "storage.bicep", ("name: 'Standard_LRS'", "name: 'Standard_LRX'"))
    result = _run("bicep_types.py", str(storage))
    assert result.returncode == 0, result.stdout
    assert "WARNING" in result.stdout and "'Standard_LRX' is not one of the open enum's values" in result.stdout


def test_wrong_kinds_required_and_read_only_properties_are_caught(tmp_path: Path) -> None:
    identities = _copy(
        tmp_path, "identities.bicep",
        ("  name: 'id-orders-reader-${resourceToken}'\n", ""),  # name is required
        ("  name: 'id-func-host-${resourceToken}'\n",
         "  name: 'id-func-host-${resourceToken}'\n  id: 'x'\n  tags: [\n    'a'\n  ]\n"),
    )
    result = _run("bicep_types.py", str(identities))
    out = result.stdout
    assert result.returncode == 1
    assert "readerIdentity: required property 'name' is missing" in out
    assert "hostIdentity.id: read-only property" in out
    assert "hostIdentity.tags: an array where an object belongs" in out


def test_a_string_literal_is_not_taken_for_a_symbol(tmp_path: Path) -> None:
    # pycep-parser reads 'appInsights' and appInsights alike; a literal where an object belongs is
    # a type error, a symbol is only known at deployment.
    literal = _copy(tmp_path, "monitoring.bicep",
                    ("      disableLocalAuth: true\n", "      disableLocalAuth: 'true'\n"))
    result = _run("bicep_types.py", str(literal))
    assert "workspace.properties.features.disableLocalAuth: a string where a boolean belongs" in result.stdout
    symbol = _copy(tmp_path, "monitoring.bicep", ("      disableLocalAuth: true\n", "      disableLocalAuth: tags\n"))
    assert _run("bicep_types.py", str(symbol)).returncode == 0


def test_an_api_version_without_type_data_is_a_failure_that_names_it(tmp_path: Path) -> None:
    module = _copy(tmp_path, "identities.bicep", ("userAssignedIdentities@2023-01-31' = {\n  name: 'id-func-host",
                                                  "userAssignedIdentities@2099-01-01' = {\n  name: 'id-func-host"))
    result = _run("bicep_types.py", str(module))
    assert result.returncode == 1
    assert "hostIdentity: no type data for Microsoft.ManagedIdentity/userAssignedIdentities@2099-01-01" in result.stdout


def test_a_file_tree_sitter_cannot_parse_is_a_failure(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text("resource x 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: \n")
    result = _run("bicep_types.py", str(broken))
    assert result.returncode == 1 and "cannot parse" in result.stdout


def test_without_type_data_the_step_says_so_and_passes(tmp_path: Path) -> None:
    for script in ("bicep_types.py", "json_schemas.py"):
        result = subprocess.run([str(bicep.INFRA_VENV_PYTHON), str(ROOT / "scripts" / script),
                                 "--types", str(tmp_path / "absent")], capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0 and "skipped" in result.stdout, script


def test_azure_yaml_and_host_json_pass_their_schemas() -> None:
    result = _run("json_schemas.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "azure.yaml passes" in result.stdout and "host.json passes" in result.stdout


def test_a_schema_violation_is_caught(tmp_path: Path) -> None:
    for name in ("azure.yaml", "host.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    azure_yaml = tmp_path / "azure.yaml"
    azure_yaml.write_text(azure_yaml.read_text().replace("  preprovision:\n", "  preprovison:\n"))
    host_json = tmp_path / "host.json"
    host_json.write_text(host_json.read_text().replace('"version": "2.0"', '"version": 2'))
    result = _run("json_schemas.py", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "INVALID azure.yaml: hooks:" in result.stdout and "preprovison" in result.stdout
    assert "INVALID host.json: version:" in result.stdout
