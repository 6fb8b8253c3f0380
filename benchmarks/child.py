"""Run measurements in fresh child processes and read back their JSON results.

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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from benchmarks.stack import ROOT, pinned_to

CHILD_TIMEOUT_SECONDS = 600
T = TypeVar("T")


class ChildError(RuntimeError):
    """A measurement process failed; the message has the end of its output."""


@dataclass(frozen=True)
class Child:
    """`[prefix…] python -m <module> --endpoints FILE --result TMP --options JSON`."""

    module: str
    options: dict[str, Any] = field(default_factory=dict)
    prefix: Sequence[str] = ()  # e.g. valgrind's command line


def run_child(module: str, endpoints_file: Path, cpus: Collection[int] | None, env: Mapping[str, str] | None = None,
              **options: Any) -> dict[str, Any]:
    """One child on `cpus`; its result document."""
    return run_children([Child(module, options)], endpoints_file, cpus, env)[0]


def run_children(children: Sequence[Child], endpoints_file: Path, cpus: Collection[int] | None,
                 env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Several children at once (for counts, which do not depend on timing); their results in order."""
    return run_children_while(children, endpoints_file, cpus, env, meanwhile=lambda: None)[0]


def run_children_while(children: Sequence[Child], endpoints_file: Path, cpus: Collection[int] | None,
                       env: Mapping[str, str] | None, meanwhile: Callable[[], T]) -> tuple[list[dict[str, Any]], T]:
    """`children` started at once, `meanwhile()` run in this process while they run; both results.

    Should `meanwhile` fail, the children are stopped before its error goes on.
    """
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        running = []
        try:
            for number, child in enumerate(children):
                result_file = Path(scratch) / f"result-{number}.json"
                log = open(Path(scratch) / f"output-{number}.txt", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
                command = [*child.prefix, sys.executable, "-m", child.module, "--endpoints", str(endpoints_file),
                           "--result", str(result_file), "--options", json.dumps(child.options)]
                process = subprocess.Popen(command, cwd=ROOT, env=dict(env) if env is not None else None,
                                           stdout=log, stderr=subprocess.STDOUT, text=True,
                                           preexec_fn=pinned_to(cpus))  # the parent has no threads
                running.append((child, process, log, result_file))
            done = meanwhile()
        except BaseException:
            for _, process, log, _ in running:
                process.kill()
                process.wait()
                log.close()
            raise
        return [_result(*started) for started in running], done


def _result(child: Child, process: subprocess.Popen[str], log: TextIO, result_file: Path) -> dict[str, Any]:
    try:
        returncode = process.wait(timeout=CHILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        returncode = process.wait()
    log.seek(0)
    output = log.read()
    log.close()
    if returncode != 0 or not result_file.exists():
        tail = "\n".join(output.splitlines()[-30:])
        raise ChildError(f"{child.module} failed with exit status {returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
    return result


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
