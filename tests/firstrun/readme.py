"""The README's shell blocks, each with the kind its marker gives it.

Every ```bash (or ```powershell) block in README.md is preceded by a marker comment,
invisible on GitHub, that says how the suite checks it:

    <!-- readme-check: offline -->            run as written (needs only Python and curl)
    <!-- readme-check: stand-in -->           run as written while `python -m devstack up` runs
    <!-- readme-check: two-terminals -->      `up` and what uses it in one block: commands checked, not run
    <!-- readme-check: suite -->              the test suite itself, or parts of it: collected, not run
    <!-- readme-check: slow -->               minutes of work (benchmarks): options checked, not run
    <!-- readme-check: core-tools -->         needs Core Tools and Azurite: commands checked, not run
    <!-- readme-check: azure -->              needs a subscription (az, azd): commands checked, not run
    <!-- readme-check: windows -->            PowerShell: commands checked, not run

A block without a marker fails the suite: each block is classified on purpose.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
KINDS = ("offline", "stand-in", "two-terminals", "suite", "slow", "core-tools", "azure", "windows")
SHELLS = ("bash", "sh", "shell", "zsh", "powershell", "pwsh", "ps1")
MARKER = re.compile(r"^<!-- readme-check: ([a-z-]+) -->$")
FENCE = re.compile(r"^\s*```\s*([A-Za-z0-9_-]*)\s*$")  # indented too: blocks inside list items
# Shell words that are not programs anyone has to install.
BUILTINS = frozenset({"source", ".", "eval", "export", "unset", "cd", "echo", "set", "test", "[", "sleep",
                      "kill", "wait", "true", "false", "exit", "printf", "read", "cp", "mkdir", "rm", "ls", "cat",
                      "Copy-Item", "Set-ExecutionPolicy", "$env:PATH"})


@dataclass(frozen=True)
class Block:
    kind: str
    language: str
    text: str
    line: int  # 1-based line of the opening fence

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.kind})"

    @property
    def commands(self) -> list[str]:
        """Logical command lines: continuations joined, comments and blank lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text) if self.language not in ("powershell", "pwsh", "ps1") \
            else re.sub(r"`\n\s*", " ", self.text)
        lines = []
        for raw in joined.splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                lines.append(line)
        return lines


def blocks(text: str | None = None) -> list[Block]:
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        language, start = fence.group(1).lower(), index
        end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
        if language in SHELLS:
            previous = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
            marker = MARKER.match(previous)
            kind = marker.group(1) if marker else "unmarked"
            found.append(Block(kind, language, "\n".join(lines[start + 1:end]), start + 1))
        index = end + 1
    return found


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # inside quotes or a word is kept)."""
    quote = ""
    for at, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (at == 0 or line[at - 1].isspace()):
            return line[:at].rstrip()
    return line


def _substitutions(line: str) -> tuple[str, list[str]]:
    """`line` with each top-level $(...) replaced by a placeholder, and what they contained."""
    outer, inner, at = [], [], 0
    while at < len(line):
        if line.startswith("$(", at):
            depth, quote, end = 1, "", at + 2
            while end < len(line) and depth:
                char = line[end]
                if quote:
                    quote = "" if char == quote else quote
                elif char in "'\"":
                    quote = char
                elif char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                end += 1
            inner.append(line[at + 2:end - 1])
            outer.append("SUBSTITUTED")
            at = end
        else:
            outer.append(line[at])
            at += 1
    return "".join(outer), inner


def _pieces(text: str) -> list[str]:
    """`text` split at the shell's list and pipe operators (&&, ||, ;, |, &) outside quotes."""
    pieces, current, quote, at = [], [], "", 0
    while at < len(text):
        char = text[at]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in ";|&":
            pieces.append("".join(current))
            current = []
            at += 2 if text[at:at + 2] in ("&&", "||") else 1
            continue
        current.append(char)
        at += 1
    return [piece.strip() for piece in [*pieces, "".join(current)] if piece.strip()]


def simple_commands(command_line: str) -> list[list[str]]:
    """The simple commands in one line, command substitutions included, each as words."""
    outer, inner = _substitutions(strip_comment(command_line))
    result = []
    for part in [outer, *inner]:
        for piece in _pieces(part):
            try:
                words = shlex.split(piece, comments=True)
            except ValueError:
                words = piece.split()
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words = words[1:]  # NAME=value prefixes
            if words and words[0] in ("eval", "exec", "time"):
                words = words[1:]
            if words and words[0] != "SUBSTITUTED":
                result.append(words)
    return result


def programs(block: Block) -> set[str]:
    """The programs a block runs (first words), shell builtins left out."""
    return {words[0] for line in block.commands for words in simple_commands(line)} - BUILTINS
