"""The stack as a whole: endpoints.json, state-dir lock, control API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack import DevStack
from devstack.stack import StackAlreadyRunning

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
            assert value.startswith("http://127.0.0.1:"), key


def test_state_dir_gets_endpoints_and_refuses_a_second_stack(tmp_path: Path):
    with DevStack(state_dir=tmp_path) as first:
        written = json.loads((tmp_path / "endpoints.json").read_text())
        assert written == first.endpoints
        with pytest.raises(StackAlreadyRunning, match="already running"):
            DevStack(state_dir=tmp_path).start()
    assert not (tmp_path / "endpoints.json").exists()
    with DevStack(state_dir=tmp_path):  # the lock is released on stop
        pass


def test_bad_fault_spec_is_refused_with_a_reason(control):
    with pytest.raises(Exception, match="400"):
        control.fault("nowhere")
    assert control._call("GET", "/faults") == []
