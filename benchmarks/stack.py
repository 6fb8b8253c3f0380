"""The devstack in a process of its own, and a small client for its control API.

The stand-ins do real work per call (APIM policy, JWT validation, forwarding to
the backend, parsing telemetry). Run in the benchmark's own process they would
take the GIL from what is being measured, so they run where a real APIM would:
somewhere else. `python -m devstack up --state-dir DIR` writes DIR/endpoints.json
when it is ready and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


class StackError(RuntimeError):
    """The devstack process did not start, or stopped answering."""


def pinned_to(cpus: Collection[int] | None) -> Callable[[], None] | None:
    """A `preexec_fn` that keeps a child process (and the threads it starts) on `cpus`."""
    if not cpus:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


class StackProcess:
    """`python -m devstack up` as a child process; use as a context manager."""

    def __init__(self, state_dir: Path, cpus: Collection[int] | None = None, *, tls: bool = False) -> None:
        self.state_dir = state_dir
        self.cpus = cpus
        self.tls = tls
        self.log_path = state_dir / "devstack.log"
        self.endpoints: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StackProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        endpoints_file = self.state_dir / "endpoints.json"
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "devstack", "up", "--state-dir", str(self.state_dir), "--free-ports",
                 *(["--tls"] if self.tls else [])],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pinned_to(self.cpus))
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not endpoints_file.exists():
            if self._process.poll() is not None:
                raise StackError(f"devstack exited with {self._process.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"devstack did not write {endpoints_file} in {START_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.05)
        self.endpoints = json.loads(endpoints_file.read_text(encoding="utf-8"))
        return self.endpoints

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Control:
    """The devstack control API (stdlib only; no proxies: the stack is on loopback)."""

    def __init__(self, control_url: str) -> None:
        self.url = control_url
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, method=method, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        with self._opener.open(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def set_network(self, rtt_ms: float, connection_ms: float) -> None:
        """The APIM stand-in's delay model (devstack/network.py)."""
        self._call("PUT", "/network", {"rtt_ms": rtt_ms, "connection_ms": connection_ms})

    def reset(self) -> None:
        """Zero the counters and forget received telemetry (the benchmark owns this stack)."""
        self._call("POST", "/reset")
