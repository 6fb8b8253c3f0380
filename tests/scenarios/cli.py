"""Run `azd` and `az` and read their JSON, without ever echoing what they print.

Their output holds function keys; an error names the command and its exit status and
quotes its stderr (where the tools explain themselves), never its stdout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

TIMEOUT_SECONDS = 120


class ToolError(RuntimeError):
    """`azd` or `az` is missing, failed, or printed something that is not the JSON asked for."""


def run_json(tool: str, args: Sequence[str], *, what: str) -> Any:
    # shutil.which finds az.cmd / azd.exe on Windows, which subprocess alone would not.
    executable = shutil.which(tool)
    if executable is None:
        raise ToolError(f"cannot {what}: '{tool}' is not on PATH (install the "
                        f"{'Azure Developer CLI' if tool == 'azd' else 'Azure CLI'} and sign in)")
    command = f"{tool} {' '.join(args[:3])}"
    try:
        completed = subprocess.run([executable, *args], capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
                                   check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"cannot {what}: `{command}` did not finish in {TIMEOUT_SECONDS} s") from None
    if completed.returncode != 0:
        reason = completed.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise ToolError(f"cannot {what}: `{command}` failed with exit status {completed.returncode}: {reason[0]}")
    try:
        return json.loads(completed.stdout)
    except json.JSONDecodeError:
        raise ToolError(f"cannot {what}: `{command}` did not print JSON") from None
