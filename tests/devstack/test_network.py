"""The APIM stand-in over real TLS (`--tls`), and its network delay model (devstack/network.py)."""

from __future__ import annotations

import ssl
import time
import urllib.error
from collections.abc import Iterator

import aiohttp
import pytest

from devstack import DevStack
from devstack.network import NetworkModel
from tests.plugin import Control


@pytest.fixture(scope="module")
def tls_stack() -> Iterator[DevStack]:
    with DevStack(tls=True) as stack:
        yield stack


@pytest.fixture
def tls_control(tls_stack: DevStack) -> Iterator[Control]:
    control = Control(tls_stack.endpoints["control_url"])
    control.reset()
    yield control
    control._call("PUT", "/network", {"rtt_ms": 0, "connection_ms": 0})


def client_context(stack: DevStack) -> ssl.SSLContext:
    """What SSL_CERT_FILE gives an app: the default context, trusting the stack's CA."""
    return ssl.create_default_context(cafile=stack.endpoints["ca_bundle"])


async def test_apim_answers_over_tls_that_verifies_against_the_local_ca(tls_stack, tls_control):
    url = tls_stack.endpoints["apim_base_url"]
    assert url.startswith("https://127.0.0.1:")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/status", ssl=client_context(tls_stack)) as response:
            assert response.status == 401  # no key: APIM's answer, over a verified connection
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{url}/status", ssl=ssl.create_default_context())  # the CA is not trusted by default


async def test_new_connections_and_handshakes_are_counted_once_per_connection(tls_stack, tls_control):
    url = f"{tls_stack.endpoints['apim_base_url']}/status"
    context = client_context(tls_stack)
    for _ in range(2):  # two sessions, three requests each: two connections
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(url, ssl=context) as response:
                    await response.read()
    apim = tls_control.stats()["apim"]
    assert (apim["requests"], apim["connections"], apim["tls_handshakes"]) == (6, 2, 2)


async def test_the_model_delays_each_request_and_a_new_connection_more(tls_stack, tls_control):
    tls_control._call("PUT", "/network", {"rtt_ms": 40, "connection_ms": 80})
    assert tls_control._call("GET", "/network") == {"rtt_ms": 40.0, "connection_ms": 80.0}
    url = f"{tls_stack.endpoints['apim_base_url']}/status"
    async with aiohttp.ClientSession() as session:
        elapsed = []
        for _ in range(2):
            started = time.perf_counter()
            async with session.get(url, ssl=client_context(tls_stack)) as response:
                await response.read()
            elapsed.append(time.perf_counter() - started)
    assert elapsed[0] >= 0.120  # a round trip and the handshakes: at least, never less
    assert elapsed[1] >= 0.040


@pytest.mark.parametrize("body", [{"rtt_ms": -1}, {"rtt_ms": "10"}, {"rtt_ms": True}, {"latency": 5}, [1]])
def test_a_bad_model_is_refused_with_400_and_changes_nothing(tls_stack, tls_control, body):
    with pytest.raises(urllib.error.HTTPError) as refused:
        tls_control._call("PUT", "/network", body)
    assert refused.value.code == 400
    assert tls_control._call("GET", "/network") == {"rtt_ms": 0.0, "connection_ms": 0.0}


def test_without_tls_apim_is_plain_http(endpoints):
    assert endpoints["apim_base_url"].startswith("http://")


def test_reset_goes_back_to_the_model_the_stack_started_with(tls_control):
    tls_control._call("PUT", "/network", {"rtt_ms": 40, "connection_ms": 80})
    tls_control.reset()
    assert tls_control._call("GET", "/network") == {"rtt_ms": 0.0, "connection_ms": 0.0}


def test_a_configured_model_is_what_reset_restores():
    model = NetworkModel()
    model.configure({"rtt_ms": 10, "connection_ms": 20})  # as `devstack up --rtt-ms 10 --connection-ms 20` does
    model.update({"rtt_ms": 0})
    model.reset()
    assert model.document() == {"rtt_ms": 10.0, "connection_ms": 20.0}
    with pytest.raises(ValueError):
        model.configure({"rtt_ms": -1})
    assert model.document() == {"rtt_ms": 10.0, "connection_ms": 20.0}
    built = NetworkModel(rtt_ms=5, connection_ms=7)  # built with values: those are what it resets to
    built.update({"rtt_ms": 0, "connection_ms": 0})
    built.reset()
    assert built.document() == {"rtt_ms": 5.0, "connection_ms": 7.0}
