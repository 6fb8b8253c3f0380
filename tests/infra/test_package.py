"""The deployed package is exactly the runtime files, under both tools that read .funcignore.

`func azure functionapp publish` (Core Tools) and `azd deploy` (azd 1.18 and later) both honour
.funcignore, with different rules:

- Core Tools (GitIgnoreParser, a port of codemix/gitignore-parser): a leading "/" is dropped, then
  each pattern is a regular expression anchored at the start of the root-relative path and nowhere
  else ("*" is one path segment's characters, "**" anything, "[...]" literal), so a pattern matches
  as a path prefix. Folders named .git or .vscode and files named .funcignore, .gitignore,
  local.settings.json or project.lock.json are skipped at any depth before that.
- azd: gitignore rules (pathspec's GitIgnoreSpec here).

The candidate files are the repository's tracked files plus what a developer's checkout typically
holds besides (virtual environments, caches, azd and Azurite state, local settings).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

import pathspec
import pytest

from tests.infra import bicep

ROOT = bicep.ROOT
FUNCIGNORE = (ROOT / ".funcignore").read_text()

RUNTIME_ROOT_FILES = {"function_app.py", "host.json", "requirements.txt"}
RUNTIME_FOLDERS = ("shared/",)

# Untracked files a working checkout has (scripts/bootstrap, the devstack, pytest, azd, Core Tools,
# Azurite); none of them may be uploaded.
LOCAL_ARTIFACTS = {
    ".venv/bin/python",
    ".venv/lib/python3.12/site-packages/aiohttp/__init__.py",
    ".venv-infra/bin/checkov",
    ".python_packages/lib/site-packages/aiohttp/__init__.py",
    ".azure/orders-dev/.env",
    ".azure/config.json",
    ".env",
    ".devstack/state.json",
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/CACHEDIR.TAG",
    ".mypy_cache/3.12/shared/tokens.meta.json",
    ".hypothesis/examples/abc",
    "__pycache__/function_app.cpython-312.pyc",
    "shared/__pycache__/tokens.cpython-312.pyc",
    "tests/app/__pycache__/test_x.cpython-312.pyc",
    "__azurite_db_blob__.json",
    "__azurite_db_queue__.json",
    "__blobstorage__/abc",
    "__queuestorage__/abc",
    ".azurite/__azurite_db_blob__.json",
    "local.settings.json",
    "results.json",
}


def _tracked_files() -> set[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    # Deleted-but-not-committed files are not in a package.
    return {name for name in out.decode().split("\0") if name and (ROOT / name).exists()}


def _patterns(text: str) -> list[str]:
    lines = (line.strip() for line in text.split("\n"))
    return [line for line in lines if line and not line.startswith("#")]


def core_tools_package(files: Iterable[str], funcignore: str) -> set[str]:
    """What Core Tools uploads (no negated patterns: .funcignore has none, asserted below)."""
    regexes = []
    for pattern in _patterns(funcignore):
        assert not pattern.startswith("!"), "negations are not modelled"
        pattern = pattern.removeprefix("/")
        escaped = re.sub(r"[\-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), pattern)
        regexes.append(escaped.replace("**", "(.+)").replace("*", "([^/]+)"))
    ignored = re.compile("^((" + ")|(".join(regexes) + "))") if regexes else re.compile("$^")
    skipped_dirs, skipped_files = {".git", ".vscode"}, {".funcignore", ".gitignore", "local.settings.json",
                                                        "project.lock.json"}
    package = set()
    for path in files:
        *dirs, name = path.split("/")
        if skipped_dirs & set(dirs) or name in skipped_files:
            continue
        if not ignored.match(path):
            package.add(path)
    return package


def azd_package(files: Iterable[str], funcignore: str) -> set[str]:
    spec = pathspec.GitIgnoreSpec.from_lines(funcignore.splitlines())
    return {path for path in files if not spec.match_file(path)}


def _runtime(files: Iterable[str]) -> set[str]:
    return {path for path in files if path in RUNTIME_ROOT_FILES or path.startswith(RUNTIME_FOLDERS)}


@pytest.fixture(scope="module")
def candidates() -> set[str]:
    return _tracked_files() | LOCAL_ARTIFACTS


@pytest.fixture(scope="module")
def runtime(candidates: set[str]) -> set[str]:
    files = _runtime(candidates - LOCAL_ARTIFACTS)
    assert RUNTIME_ROOT_FILES <= files and any(path.startswith("shared/") for path in files)
    return files


def test_core_tools_uploads_exactly_the_runtime_files(candidates: set[str], runtime: set[str]) -> None:
    package = core_tools_package(candidates, FUNCIGNORE)
    assert package - runtime == set(), "uploaded but not part of the app: anchor it in .funcignore"
    assert runtime - package == set(), "part of the app but left out"


def test_azd_uploads_exactly_the_runtime_files(candidates: set[str], runtime: set[str]) -> None:
    package = azd_package(candidates, FUNCIGNORE)
    assert package - runtime == set(), "uploaded but not part of the app: anchor it in .funcignore"
    assert runtime - package == set(), "part of the app but left out"


# The rule models themselves, on the cases that tell the two tools apart.

def test_core_tools_matches_a_bare_name_as_a_root_prefix_only() -> None:
    files = {"tests/a.py", "tests_x.py", "shared/tests/a.py"}
    assert core_tools_package(files, "tests") == {"shared/tests/a.py"}


def test_azd_matches_a_bare_name_at_any_depth() -> None:
    files = {"tests/a.py", "tests_x.py", "shared/tests/a.py"}
    assert azd_package(files, "tests") == {"tests_x.py"}


def test_an_anchored_folder_means_the_same_to_both() -> None:
    files = {"tests/a.py", "tests_x.py", "shared/tests/a.py"}
    assert core_tools_package(files, "/tests/") == azd_package(files, "/tests/") == {"tests_x.py", "shared/tests/a.py"}


def test_core_tools_needs_double_star_for_nested_caches() -> None:
    files = {"shared/__pycache__/a.pyc", "__pycache__/b.pyc"}
    assert core_tools_package(files, "__pycache__/") == {"shared/__pycache__/a.pyc"}
    assert core_tools_package(files, "__pycache__/\n**/__pycache__/") == set()
    assert azd_package(files, "__pycache__/") == set()
