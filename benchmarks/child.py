"""Run one measurement in a fresh child process and read back its JSON result.

Each measurement gets its own interpreter: "cold process" means cold, the
telemetry configuration is per process, and what one measurement
leaves behind (connections, caches, RSS) cannot flatter another.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from benchmarks.stack import ROOT, pinned_to

CHILD_TIMEOUT_SECONDS = 600


class ChildError(RuntimeError):
    """A measurement process failed; the message has the end of its output."""


def run_child(module: str, endpoints_file: Path, cpus: Collection[int] | None, **options: Any) -> dict[str, Any]:
    """`python -m <module> --endpoints FILE --result TMP --options JSON` on `cpus`; its result document."""
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        result_file = Path(scratch) / "result.json"
        command = [sys.executable, "-m", module, "--endpoints", str(endpoints_file), "--result", str(result_file),
                   "--options", json.dumps(options)]
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                   timeout=CHILD_TIMEOUT_SECONDS, check=False,
                                   preexec_fn=pinned_to(cpus))  # the parent has no threads
        if completed.returncode != 0 or not result_file.exists():
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
            raise ChildError(f"{module} failed with exit status {completed.returncode}:\n{tail}")
        return json.loads(result_file.read_text(encoding="utf-8"))


def child_arguments(description: str) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """In a child: (endpoints, options, result path) from the command line `run_child` built."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--endpoints", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args()
    endpoints = json.loads(args.endpoints.read_text(encoding="utf-8"))
    return endpoints, json.loads(args.options), args.result


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
