"""The stack as a whole: endpoints.json, state-dir lock, control API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from devstack import DevStack
from devstack.stack import StackAlreadyRunning
from devstack.statelock import StateDirLock

REQUIRED_KEYS = {
    "identity_endpoint", "identity_header", "imds_endpoint", "tenant_id", "openid_config_url",
    "apim_base_url", "subscription_key", "api_app_id_uri", "connection_string", "control_url",
    "identities",
}


def test_endpoints_has_the_documented_keys(endpoints):
    assert REQUIRED_KEYS <= set(endpoints)
    assert not endpoints["control_url"].endswith("/")
    for name in ("reader", "writer", "unassigned"):
        assert {"client_id", "principal_id", "roles"} <= set(endpoints["identities"][name])
    assert endpoints["identities"]["unassigned"]["roles"] == []
    for key, value in endpoints.items():
        if key.endswith(("_url", "_endpoint")):
            # Ingestion over HTTPS: azure-core sends the exporter's bearer token over HTTPS only.
            scheme = "https" if key == "ingestion_endpoint" else "http"
            assert value.startswith(f"{scheme}://127.0.0.1:"), key


def test_state_dir_gets_endpoints_and_refuses_a_second_stack(tmp_path: Path):
    with DevStack(state_dir=tmp_path) as first:
        written = json.loads((tmp_path / "endpoints.json").read_text())
        assert written == first.endpoints
        with pytest.raises(StackAlreadyRunning, match=f"already running .*pid {os.getpid()}"):
            DevStack(state_dir=tmp_path).start()
    assert not (tmp_path / "endpoints.json").exists()
    with DevStack(state_dir=tmp_path):  # the lock is released on stop
        pass


def test_a_lock_held_by_a_killed_process_is_free_again(tmp_path: Path):
    code = ("import sys; from pathlib import Path; from devstack.statelock import StateDirLock; "
            "lock = StateDirLock(Path(sys.argv[1])); assert lock.acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = StateDirLock(tmp_path)
        assert not lock.acquire()
        assert lock.owner() == str(holder.pid)
    finally:
        holder.kill()  # no clean-up code runs: as if it crashed
        holder.wait()
    assert lock.acquire()
    lock.release()


def test_bad_fault_spec_is_refused_with_a_reason(control):
    with pytest.raises(urllib.error.HTTPError, match="400"):
        control.fault("nowhere")
    assert control._call("GET", "/faults") == []
