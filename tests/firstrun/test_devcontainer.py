"""The dev container provides every program the README's paths run, and the VS Code set-up
works on every OS. There is no Docker engine here, so the definitions are checked as data."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.firstrun.readme import ROOT, blocks, programs

DEVCONTAINER = ROOT / ".devcontainer" / "devcontainer.json"
VSCODE = ROOT / ".vscode"
# The extensions the README's paths rely on: Functions (F5, deploy), Python, Azurite (the timer's
# storage), Bicep (infra/).
REQUIRED_EXTENSIONS = {"ms-azuretools.vscode-azurefunctions", "ms-python.python", "Azurite.azurite",
                       "ms-azuretools.vscode-bicep"}


def load(path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    return load(DEVCONTAINER)


def provided(container: dict[str, Any]) -> dict[str, bool]:
    """Each program the README may run, and whether this container definition installs it."""
    features = container.get("features", {})
    post_create = container.get("postCreateCommand", "")

    def feature(fragment: str) -> dict[str, Any] | None:
        return next((options for name, options in features.items() if fragment in name), None)

    image = container.get("image", "")
    python = bool(re.search(r"devcontainers/python:[\w.-]*3\.1[1-9]", image))
    node = feature("/features/node:") is not None
    azure_cli = feature("/features/azure-cli:")
    return {
        "python": python, "python3": python, "pip": python,
        "curl": image.startswith("mcr.microsoft.com/devcontainers/"),  # their images ship curl and git
        "git": image.startswith("mcr.microsoft.com/devcontainers/"),
        "func": feature("azure-functions-core-tools") is not None,
        "azd": feature("azure/azure-dev/azd") is not None,
        "az": azure_cli is not None,
        "bicep": bool(azure_cli and azure_cli.get("installBicep")),
        "node": node, "npm": node,
        "azurite": node and "npm install -g azurite" in post_create,
    }


def test_the_container_runs_the_python_version_infra_deploys(container):
    deployed = re.search(r"param pythonVersion string = '([\d.]+)'", (ROOT / "infra" / "main.bicep").read_text())
    assert deployed, "infra/main.bicep no longer has a pythonVersion default"
    assert f"python:1-{deployed.group(1)}-" in container["image"] or container["image"].endswith(deployed.group(1))


def test_the_container_names_every_program_the_readme_runs(container):
    have = provided(container)
    for block in blocks():
        if block.kind == "windows":
            continue  # the container is Linux; those are the same commands in PowerShell
        for program in programs(block):
            if program.startswith(("./", ".venv/")):
                continue  # the repository's own scripts, and the venv ./scripts/bootstrap makes
            assert program in have, f"{block} runs '{program}': teach the dev container (and this test) about it"
            assert have[program], f"{block} runs '{program}', which .devcontainer/devcontainer.json does not install"


def test_the_container_is_ready_for_the_demo_and_tests_when_created(container):
    assert "./scripts/bootstrap" in container["postCreateCommand"]
    settings = container["customizations"]["vscode"]["settings"]
    assert settings["python.defaultInterpreterPath"].endswith("/.venv/bin/python")
    assert 7071 in container.get("forwardPorts", [])


@pytest.mark.parametrize("where", ["devcontainer", "workspace"])
def test_the_recommended_extensions_are_there(container, where):
    extensions = set(container["customizations"]["vscode"]["extensions"] if where == "devcontainer"
                     else load(VSCODE / "extensions.json")["recommendations"])
    assert REQUIRED_EXTENSIONS <= extensions


def test_the_container_and_the_workspace_recommend_the_same_extensions(container):
    assert set(container["customizations"]["vscode"]["extensions"]) == \
        set(load(VSCODE / "extensions.json")["recommendations"])


# ---------------------------------------------------------------- VS Code


def tasks() -> dict[str, dict[str, Any]]:
    return {task["label"]: task for task in load(VSCODE / "tasks.json")["tasks"]}


def test_every_shell_task_has_an_osx_linux_and_windows_command():
    for label, task in tasks().items():
        if task.get("type") != "shell":
            continue
        assert {"osx", "linux", "windows"} <= set(task), f"task '{label}' lacks an OS variant"
        assert "/bin/python" in task["osx"]["command"] and "/bin/python" in task["linux"]["command"]
        assert "\\Scripts\\python" in task["windows"]["command"], f"task '{label}': Windows venvs have Scripts\\"
        for system in ("osx", "linux"):
            assert task[system]["command"].replace("/bin/python", "\\Scripts\\python") == \
                task["windows"]["command"], f"task '{label}': the OS variants run different commands"


def test_every_dependency_and_pre_launch_task_exists():
    known = tasks()
    for label, task in known.items():
        depends = task.get("dependsOn", [])
        for name in [depends] if isinstance(depends, str) else depends:
            assert name in known, f"task '{label}' depends on a task that does not exist: '{name}'"
    for configuration in load(VSCODE / "launch.json")["configurations"]:
        if "preLaunchTask" in configuration:
            assert configuration["preLaunchTask"] in known, configuration["name"]


def test_f5_against_the_stand_in_starts_it_and_writes_the_settings_first():
    known = tasks()
    [launch] = [c for c in load(VSCODE / "launch.json")["configurations"] if "stand-in" in c["name"]]
    host = known[launch["preLaunchTask"]]
    assert host["type"] == "func" and host["command"] == "host start"
    assert host["dependsOrder"] == "sequence" and host["dependsOn"][-1] == "devstack: settings"
    settings = known["devstack: settings"]
    assert settings["linux"]["command"].endswith("-m devstack settings")
    assert settings["dependsOn"] == "devstack: up"
    up = known["devstack: up"]
    assert up["isBackground"] and up["linux"]["command"].endswith("-m devstack up")
    # VS Code waits for the background task until its end pattern shows: `up` prints it once serving.
    from devstack.cli import banner
    from devstack.stack import DevStack

    with DevStack() as stack:
        first_line = banner(stack.endpoints, ROOT / ".devstack").splitlines()[0]
    assert re.match(up["problemMatcher"]["background"]["endsPattern"], first_line)
    assert re.match(up["problemMatcher"]["background"]["beginsPattern"], first_line)
    assert re.match(up["problemMatcher"]["pattern"]["regexp"], "devstack: error: port 7172 is taken")


def test_the_azurite_extension_stays_quiet_and_out_of_git():
    settings = load(VSCODE / "settings.json")
    assert settings["azurite.silent"] is True and settings["azurite.disableTelemetry"] is True
    ignored = (ROOT / ".gitignore").read_text()
    assert "__azurite_db_*.json" in ignored and "__blobstorage__/" in ignored
