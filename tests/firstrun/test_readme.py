"""The README's commands stay true: the offline ones run, the others are checked as far as
they can be without Azure or Core Tools. How each block is checked is its marker's kind
(see tests/firstrun/readme.py)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.cli import FREE_PORTS_ENV, STATE_DIR_ENV, build_parser
from tests.firstrun.readme import KINDS, ROOT, Block, blocks, simple_commands

ALL = blocks()
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="runs the README's bash blocks")


def of_kind(*kinds: str) -> list[Block]:
    return [block for block in ALL if block.kind in kinds]


def test_every_shell_block_is_classified():
    assert ALL, "README.md has no shell blocks"
    unmarked = [str(block) for block in ALL if block.kind not in KINDS]
    assert not unmarked, f"add <!-- readme-check: KIND --> (one of {', '.join(KINDS)}) before: {unmarked}"
    assert of_kind("offline") and of_kind("stand-in"), "the README's runnable paths lost their blocks"


def test_the_classifier_refuses_an_unmarked_block():
    [block] = blocks("text\n\n```bash\necho hi\n```\n")
    assert block.kind == "unmarked"
    [block] = blocks("<!-- readme-check: azure -->\n```bash\nazd up  # all of it\n```\n")
    assert block.kind == "azure" and block.commands == ["azd up  # all of it"]


def environment(state_dir: Path) -> dict[str, str]:
    # The block's own commands, as written; only where the stand-in keeps its state and which ports
    # it takes differ, so that this never meets a developer's stack or another test run.
    # No proxy for loopback: curl would otherwise send the stand-in's URLs to an http_proxy.
    return {**os.environ, STATE_DIR_ENV: str(state_dir), FREE_PORTS_ENV: "1",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def runnable(block: Block) -> str:
    """The block as a bash script; `./scripts/test` is the suite this test is part of, so it is
    checked against .ci/run instead of being run again."""
    lines = []
    for line in block.text.splitlines():
        if line.strip().startswith("./scripts/test"):
            assert "./scripts/test" in (ROOT / ".ci" / "run").read_text(), ".ci/run no longer runs ./scripts/test"
            continue
        lines.append(line)
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def run_bash(script: str, env: dict[str, str], block: Block) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, f"{block} failed ({result.returncode}):\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    assert "command not found" not in result.stderr, f"{block}: {result.stderr}"
    return result


@pytest.mark.parametrize("block", of_kind("offline"), ids=str)
@posix_only
def test_offline_blocks_run_as_written(block, tmp_path):
    run_bash(runnable(block), environment(tmp_path / "state"), block)


@pytest.fixture
def stand_in(tmp_path) -> Iterator[dict[str, str]]:
    """`python -m devstack up`, as the README's other terminal runs it."""
    env = environment(tmp_path / "state")
    process = subprocess.Popen([sys.executable, "-m", "devstack", "up"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "state" / "endpoints.json").exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.05)
    try:
        yield env
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.mark.parametrize("block", of_kind("stand-in"), ids=str)
@posix_only
def test_stand_in_blocks_run_while_the_stand_in_runs(block, stand_in):
    result = run_bash(runnable(block), stand_in, block)
    assert result.stdout.strip(), f"{block} printed nothing"


# ---------------------------------------------------------------- checked, not run


def python_module_calls(block: Block) -> list[tuple[str, list[str]]]:
    """(module, arguments) of every `python -m module ...` in the block, whichever Python runs it."""
    calls = []
    for line in block.commands:
        for words in simple_commands(line.replace("\\", "/") if block.kind == "windows" else line):
            program = Path(words[0]).name.lower()
            if re.fullmatch(r"(python3?|py)(\.exe)?", program) and "-m" in words[1:3]:
                at = words.index("-m")
                calls.append((words[at + 1], words[at + 2:]))
    return calls


def check_module_call(module: str, args: list[str], block: Block) -> None:
    where = f"{block}: python -m {module} {shlex.join(args)}"
    if module == "devstack":
        try:
            build_parser().parse_known_args(args)
        except SystemExit as exc:
            raise AssertionError(f"{where}: the devstack CLI refuses these arguments") from exc
    elif module == "pytest":
        result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                 *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        # -q prints "N tests collected"; -q -q (when the README's command has -q too) "file: N" per file.
        counts = (re.findall(r"(\d+) tests? collected", result.stdout)
                  or re.findall(r"^\S+: (\d+)$", result.stdout, re.M))
        assert result.returncode == 0 and sum(map(int, counts)) > 0, \
            f"{where}: selects no tests\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    elif module == "pip":
        for at, word in enumerate(args):
            if word == "-r":
                assert (ROOT / args[at + 1]).is_file(), f"{where}: no such requirements file"
    elif module == "venv":
        pass
    else:
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{where}: --help failed"
        for option in (a.split("=")[0] for a in args if a.startswith("--")):
            assert option in result.stdout, f"{where}: {module} has no option {option}"


@pytest.mark.parametrize("block", of_kind("two-terminals", "suite", "slow", "core-tools", "azure", "windows"),
                         ids=str)
def test_python_commands_of_the_other_blocks_are_valid(block):
    for module, args in python_module_calls(block):
        check_module_call(module, args, block)


@pytest.mark.parametrize("block", of_kind("suite"), ids=str)
def test_suite_blocks_name_only_the_suite(block):
    for line in block.commands:
        [words, *_] = simple_commands(line)
        assert words[0] in ("./scripts/test", "./scripts/check-infra") or words[1:3] == ["-m", "pytest"], \
            f"{block}: '{line}' is not part of the suite; give it a block of its own kind"


@pytest.mark.parametrize("block", of_kind("slow"), ids=str)
@posix_only
def test_slow_blocks_run_everything_but_the_python_module(block, tmp_path):
    script = "\n".join(line for line in block.commands if " -m " not in line)
    if script:
        run_bash("set -euo pipefail\n" + script, environment(tmp_path / "state"), block)


def test_every_script_and_file_the_readme_names_exists():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in sorted(set(re.findall(r"\]\((?!https?:|#)([^)#\s]+)", text))):  # markdown links
        assert (ROOT / path).exists(), f"README.md links to {path}, which does not exist"
    for block in ALL:
        for line in block.commands:
            for words in simple_commands(line):
                if words[0].startswith("./"):
                    assert (ROOT / words[0]).exists(), f"{block}: {words[0]} does not exist"


def unquoted_globs(line: str) -> list[str]:
    """Characters zsh would glob (? * [) outside quotes, comments left out."""
    from tests.firstrun.readme import strip_comment

    found, quote = [], ""
    for char in strip_comment(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "?*[":
            found.append(char)
    return found


def test_no_command_leaves_a_glob_character_unquoted_for_zsh():
    assert unquoted_globs("curl http://localhost:7071/api/health?probe=token") == ["?"]
    assert unquoted_globs("curl 'http://localhost:7071/api/health?probe=token'  # ?") == []
    for block in ALL:
        if block.language in ("powershell", "pwsh", "ps1"):
            continue
        for line in block.commands:
            assert not unquoted_globs(line), f"{block}: quote the URL in '{line}' (zsh expands ? * [ in words)"


def test_every_local_function_url_is_a_route_of_the_app():
    """`curl http://localhost:7071/api/...` lines (Core Tools' default port) name routes the app serves."""
    from devstack.invocation import app_functions

    routes = [function.route for function in app_functions().values() if function.route is not None]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = re.findall(r"https?://(?:localhost|127\.0\.0\.1):7071/api/([^\s'\"?#)`]*)", text)
    assert paths, "the README no longer shows a call to the functions under Core Tools"
    for path in paths:
        assert any(route.match(path) is not None for route in routes), f"no function serves /api/{path}"
    for name in re.findall(r"AzureWebJobs\.(\w+)\.Disabled", text):
        assert name in app_functions(), f"the README disables '{name}', which is not one of the app's functions"


def github_anchor(title: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_every_link_to_a_section_finds_it():
    assert github_anchor("The local stand-in: `python -m devstack`") == "the-local-stand-in-python--m-devstack"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {github_anchor(title) for title in re.findall(r"(?m)^#{1,6} (.+)$", text)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, f"README.md links to #{anchor}, which no heading has"
