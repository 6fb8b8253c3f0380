"""Which words a library failure becomes (only types decide, never library text)."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import pytest
from azure.core.exceptions import ServiceRequestError

from shared.apim import _transport_error
from shared.errors import UpstreamUnavailable

REFUSED = aiohttp.ClientConnectorError(SimpleNamespace(ssl=None, host="127.0.0.1", port=1), OSError(111, "refused"))


@pytest.mark.parametrize(("inner", "message"), [
    (REFUSED, "Could not connect to APIM."),
    (None, "Could not connect to APIM."),
    (aiohttp.ServerDisconnectedError(), "The connection to APIM failed before a complete answer."),
    (aiohttp.ClientOSError(104, "Connection reset by peer"), "The connection to APIM failed before a complete answer."),
])
def test_a_request_error_says_could_not_connect_only_when_it_could_not(inner, message):
    error = _transport_error(ServiceRequestError("library text", error=inner))
    assert isinstance(error, UpstreamUnavailable) and error.message == message
