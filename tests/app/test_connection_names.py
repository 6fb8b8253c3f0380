"""Every failure of a connection names that connection's own settings and routes, never another's.

One table, run for the default connection and for "inventory": each row forces one class
of failure through the devstack (or, where the stand-in cannot, directly) and checks the
message and hint the caller gets.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shared import api, runtime
from shared.apim import ApimClient
from shared.blueprint import routes
from shared.errors import AppError, ConfigurationError
from shared.settings import SETTINGS, Settings, load_settings, setting_name
from shared.tokens import TokenSource
from tests.reliability.conftest import eventually

CONNECTIONS = [None, "inventory"]


def other(connection: str | None) -> str | None:
    return "inventory" if connection is None else None


def names_of(connection: str | None) -> list[str]:
    """The connection's setting names and routes, as messages spell them."""
    settings = [setting_name(s.name, connection) for s in SETTINGS]
    return [*settings, *("/api/" + r.removesuffix("/{*path}") for r in routes(connection).values())]


def mentions(text: str, name: str) -> bool:
    # Whole names only: APIM_BASE_URL is inside INVENTORY_APIM_BASE_URL, /api/apim inside /api/apim-inventory.
    return re.search(rf"(?<![A-Z_]){re.escape(name)}(?![A-Za-z0-9_-])", text) is not None


def assert_names(error: AppError | ConfigurationError, connection: str | None, *expected: str) -> None:
    text = f"{error.message} {getattr(error, 'hint', None) or ''}"
    for name in expected:
        full = name if name.startswith("/") else setting_name(name, connection)
        assert mentions(text, full), f"{full} is not named in: {text}"
    for name in names_of(other(connection)):
        assert not mentions(text, name), f"the other connection's {name} is named in: {text}"


def read_path(connection: str | None) -> str:
    """A path each API serves (the stand-in's APIM answers 404 for an operation the API does not have)."""
    return "/items" if connection else "/status"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def api_app_id_uri(endpoints: dict[str, Any], connection: str | None) -> str:
    return endpoints["api_app_id_uri"] if connection is None else endpoints["apis"][connection]["api_app_id_uri"]


Case = Callable[..., Awaitable[tuple[AppError, tuple[str, ...]]]]


async def connect_refused(connection, use_stack, control, endpoints):
    await use_stack(**{setting_name("APIM_BASE_URL", connection): f"http://127.0.0.1:{closed_port()}/api"})
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", read_path(connection))
    return raised.value, ("APIM_BASE_URL",)


async def apim_timeout(connection, use_stack, control, endpoints):
    await use_stack()
    control.fault("apim", delay_ms=2000, times=50)
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", read_path(connection))
    assert raised.value.code == "upstream_timeout"
    # The abandoned sends still reach the backend: let them land before the next test counts its own.
    sent = control.stats()["apim"]["requests"]
    await eventually(lambda: len(control.backend_requests()) >= sent, "the abandoned sends reached the backend")
    return raised.value, ()


async def unknown_identity(connection, use_stack, control, endpoints):
    await use_stack(**{setting_name("MANAGED_IDENTITY_CLIENT_ID", connection): str(uuid.uuid4())})
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", read_path(connection))
    assert raised.value.code == "token_error"
    return raised.value, ("MANAGED_IDENTITY_CLIENT_ID",)


async def unknown_audience(connection, use_stack, control, endpoints):
    await use_stack(**{setting_name("API_APP_ID_URI", connection): "api://nobody-registered-this"})
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", read_path(connection))
    assert raised.value.code == "token_error"
    return raised.value, ("API_APP_ID_URI",)


async def identity_endpoint_500(connection, use_stack, control, endpoints):
    await use_stack()
    control.fault("identity", status=500, times=100)
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", read_path(connection))
    assert raised.value.code == "token_error"
    return raised.value, ("API_APP_ID_URI",)


async def token_for_another_api(connection, use_stack, control, endpoints):
    # A token for the other connection's API: this API's APIM refuses it (401).
    await use_stack(**{setting_name("API_APP_ID_URI", connection): api_app_id_uri(endpoints, other(connection))})
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", read_path(connection))
    assert raised.value.status == 401
    return raised.value, ("API_APP_ID_URI", routes(connection)["health"])


async def write_without_the_role(connection, use_stack, control, endpoints):
    reader = endpoints["identities"]["reader"]["client_id"]
    await use_stack(**{setting_name("MANAGED_IDENTITY_WRITE_CLIENT_ID", connection): reader})
    with pytest.raises(AppError) as raised:
        await api(connection).call("POST", "/items" if connection else "/orders", body=b"{}",
                                   content_type="application/json")
    assert raised.value.status == 403
    return raised.value, ("MANAGED_IDENTITY_WRITE_CLIENT_ID", routes(connection)["health"])


async def empty_path(connection, use_stack, control, endpoints):
    await use_stack()
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", "/")
    return raised.value, ("APIM_BASE_URL", routes(connection)["proxy"])


async def absolute_path(connection, use_stack, control, endpoints):
    await use_stack()
    with pytest.raises(AppError) as raised:
        await api(connection).call("GET", "http:/elsewhere")
    return raised.value, ("APIM_BASE_URL",)


CASES: dict[str, Case] = {f.__name__: f for f in (
    connect_refused, apim_timeout, unknown_identity, unknown_audience, identity_endpoint_500,
    token_for_another_api, write_without_the_role, empty_path, absolute_path)}


@pytest.mark.parametrize("connection", CONNECTIONS)
@pytest.mark.parametrize("case", list(CASES))
async def test_each_failure_names_the_connections_own_settings(case, connection, use_stack, control, endpoints,
                                                               backoff, short_timeouts):
    error, expected = await CASES[case](connection, use_stack, control, endpoints)
    assert_names(error, connection, *(e if not e.startswith("apim") else "/api/" + e.removesuffix("/{*path}")
                                      for e in expected))


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_a_timer_path_refusal_names_the_connections_base_url(connection):
    env = {setting_name("APIM_BASE_URL", connection): "https://apim.example/api",
           setting_name("API_APP_ID_URI", connection): "api://x",
           setting_name("TIMER_API_PATH", connection): "/http:elsewhere"}
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env, connection)
    assert_names(raised.value, connection, "TIMER_API_PATH", "APIM_BASE_URL")


@pytest.mark.parametrize("connection", CONNECTIONS)
async def test_a_token_over_plain_http_is_refused_naming_the_connections_base_url(connection):
    # Settings validation refuses such a URL first; the client's own guard must say the same.
    settings = Settings("http://apim.example/api", "api://x", connection=connection and connection.upper())
    source = TokenSource(None, settings.scope, client_id=None)  # type: ignore[arg-type]  # never asked
    client = ApimClient(settings, {None: source})
    try:
        with pytest.raises(AppError) as raised:
            await client.call("GET", "/status")
    finally:
        await client.close()
        await runtime.reset_runtime()
    assert_names(raised.value, connection, "APIM_BASE_URL")
