"""The azd hooks: the preprovision hook registers every resource provider the templates need.

The sh hook runs here against a stand-in `az` on PATH that records its calls; the pwsh hook is
checked to name the same providers (no PowerShell on the build machine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra import bicep

HOOKS = bicep.INFRA / "hooks"
SH_HOOK = HOOKS / "register-providers.sh"
PWSH_HOOK = HOOKS / "register-providers.ps1"

# Always registered in every subscription: ARM itself.
BUILT_IN = {"microsoft.resources", "microsoft.authorization"}


def _sh_providers() -> list[str]:
    (value,) = re.findall(r'^providers="([^"]+)"$', SH_HOOK.read_text(), re.MULTILINE)
    return value.split()


def _pwsh_providers() -> list[str]:
    (value,) = re.findall(r"^\$providers = @\(([^)]+)\)$", PWSH_HOOK.read_text(), re.MULTILINE)
    return re.findall(r"'([\w.]+)'", value)


def test_azure_yaml_runs_the_hook_before_provisioning_on_every_os() -> None:
    text = (bicep.ROOT / "azure.yaml").read_text()
    block = re.search(r"^  preprovision:\n((?:    .*\n)+)", text, re.MULTILINE)
    assert block, "no preprovision hook"
    assert "run: ./infra/hooks/register-providers.sh" in block.group(1)
    assert "run: ./infra/hooks/register-providers.ps1" in block.group(1)
    assert SH_HOOK.stat().st_mode & 0o111


def test_both_hooks_register_the_same_providers() -> None:
    assert _sh_providers() == _pwsh_providers()


def test_hooks_cover_every_namespace_the_templates_use_and_microsoft_app(templates: dict[str, Any]) -> None:
    used = {resource["type"].split("/")[0].lower()
            for template in templates.values() for resource in template.get("resources", {}).values()
            if "/" in resource["type"] and not resource["type"].startswith("Microsoft.Graph/")}
    registered = {ns.lower() for ns in _sh_providers()}
    assert used - BUILT_IN <= registered
    # Flex Consumption needs it, and no template names it, so ARM would not register it.
    assert "microsoft.app" in registered
    assert registered - used - {"microsoft.app"} == set(), "registers a provider nothing uses"


@pytest.fixture
def fake_az(tmp_path: Path) -> Path:
    """A directory with an `az` that logs its arguments; behaviour set by FAKE_AZ_* variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "az"
    script.write_text("""#!/bin/sh
echo "$*" >> "$FAKE_AZ_LOG"
case "$1 $2" in
  "account show") exit "${FAKE_AZ_SIGNED_IN_RC:-0}" ;;
  "provider show")
    case " $FAKE_AZ_UNREGISTERED " in
      *" $4 "*) echo NotRegistered ;;
      *) echo Registered ;;
    esac ;;
  "provider register") exit "${FAKE_AZ_REGISTER_RC:-0}" ;;
esac
""")
    script.chmod(0o755)
    return bin_dir


def _run_hook(bin_dir: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    if shutil.which("sh") is None:
        pytest.skip("no sh")
    log = bin_dir / "calls.log"
    log.touch()
    full_env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "FAKE_AZ_LOG": str(log), **env}
    result = subprocess.run(["sh", str(SH_HOOK)], env=full_env, capture_output=True, text=True, timeout=30,
                            check=False)
    return result, log.read_text().splitlines()


def test_registers_only_what_is_not_registered_in_azds_subscription(fake_az: Path) -> None:
    result, calls = _run_hook(fake_az, AZURE_SUBSCRIPTION_ID="sub-123", FAKE_AZ_UNREGISTERED="Microsoft.App")
    assert result.returncode == 0, result.stdout + result.stderr
    registers = [call for call in calls if call.startswith("provider register")]
    assert registers == ["provider register --namespace Microsoft.App --subscription sub-123 --wait"]
    assert all("--subscription sub-123" in call for call in calls)


def test_not_signed_in_prints_the_manual_command_and_lets_provision_go_on(fake_az: Path) -> None:
    result, calls = _run_hook(fake_az, FAKE_AZ_SIGNED_IN_RC="1")
    assert result.returncode == 0
    assert "az provider register --namespace" in result.stdout
    assert not any(call.startswith("provider") for call in calls)


def test_a_refused_registration_fails_provision_with_the_reason(fake_az: Path) -> None:
    result, _ = _run_hook(fake_az, FAKE_AZ_UNREGISTERED="Microsoft.App", FAKE_AZ_REGISTER_RC="1")
    assert result.returncode == 1
    assert "Could not register Microsoft.App" in result.stdout
    assert "az provider register --namespace" in result.stdout


def test_readme_gives_the_manual_command_for_the_same_providers() -> None:
    text = (bicep.INFRA / "README.md").read_text()
    block = re.search(r"for ns in ([\w.\s\\]+); do\n\s+az provider register --namespace \"\$ns\" --wait", text)
    assert block, "infra/README.md has no manual registration command"
    assert block.group(1).replace("\\", " ").split() == _sh_providers()
