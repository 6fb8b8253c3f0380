"""Which words a library failure becomes (only types decide, never library text)."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseTimeoutError
from azure.identity import CredentialUnavailableError

from shared.apim import _transport_error
from shared.errors import TokenError, UpstreamUnavailable
from shared.settings import Settings
from shared.tokens import token_error

REFUSED = aiohttp.ClientConnectorError(SimpleNamespace(ssl=None, host="127.0.0.1", port=1), OSError(111, "refused"))


@pytest.mark.parametrize(("inner", "message"), [
    (REFUSED, "Could not connect to APIM."),
    (None, "Could not connect to APIM."),
    (aiohttp.ServerDisconnectedError(), "The connection to APIM failed before a complete answer."),
    (aiohttp.ClientOSError(104, "Connection reset by peer"), "The connection to APIM failed before a complete answer."),
])
def test_a_request_error_says_could_not_connect_only_when_it_could_not(inner, message):
    error = _transport_error(ServiceRequestError("library text", error=inner), Settings("https://apim.example/x", "api://x"))
    assert isinstance(error, UpstreamUnavailable) and error.message == message


def refusal(message: str, status: int | None = None) -> ClientAuthenticationError:
    error = ClientAuthenticationError(message=message)
    if status is not None:  # as azure-identity raises it for an answer: with the response and its status
        error.response, error.status_code = SimpleNamespace(status_code=status), status
    return error


def raised(kind: type[Exception], text: str) -> Exception:
    try:
        raise kind(text)
    except Exception as exc:
        return exc


def raised_by_urlsplit() -> Exception:
    try:
        urlsplit("http://[::1/msi/token")
    except ValueError as exc:
        return exc
    raise AssertionError("urlsplit took an invalid IPv6 address")


# What azure-identity raises itself reading an answer (`int(expires_on)`) is "not a token response": see
# tests/reliability/test_odd_answers.py, which has the real credential read one.
@pytest.mark.parametrize(("exc", "status", "words"), [
    (CredentialUnavailableError("no endpoint"), 502, "not available here"),
    (refusal("AADSTS500011: The resource principal named api://x was not found", 400), 502, "check API_APP_ID_URI"),
    (refusal("AADSTS501051: Application is not assigned to a role", 400), 502, "has no app role on the API"),
    (refusal("Identity not found", 400), 502, "not its principal ID"),
    (refusal("anything", 500), 502, "Entra ID is refusing the token"),
    (refusal("anything", 503), 502, "HTTP 503"),
    (refusal("anything", 200), 502, "not a token response"),
    (ServiceResponseTimeoutError("slow"), 504, "did not answer in time"),
    (ServiceRequestError("library text", error=REFUSED), 502, "Could not connect to the managed-identity endpoint"),
    (raised(ValueError, "library text"), 502, "Unexpected error while getting an access token"),
    (raised_by_urlsplit(), 502, "Unexpected error while getting an access token"),  # a bad IDENTITY_ENDPOINT
    (RuntimeError("library text"), 502, "Unexpected error while getting an access token"),
])
def test_a_credential_failure_becomes_a_token_error_in_our_words(exc, status, words):
    error = token_error(exc)
    assert isinstance(error, TokenError) and error.status == status
    assert words in str(error) and "library text" not in str(error)


@pytest.mark.parametrize(("connection", "identity_setting", "unset"), [
    (None, None, "unset MANAGED_IDENTITY_CLIENT_ID to use"),
    # Without the write setting, writes fall back to the read identity, not to `az login`.
    (None, "MANAGED_IDENTITY_WRITE_CLIENT_ID",
     "unset MANAGED_IDENTITY_CLIENT_ID and MANAGED_IDENTITY_WRITE_CLIENT_ID to use"),
    ("inventory", "INVENTORY_MANAGED_IDENTITY_WRITE_CLIENT_ID",
     "unset INVENTORY_MANAGED_IDENTITY_CLIENT_ID and INVENTORY_MANAGED_IDENTITY_WRITE_CLIENT_ID to use"),
])
def test_the_az_login_hint_names_every_setting_to_unset(connection, identity_setting, unset):
    error = token_error(CredentialUnavailableError("no endpoint"), connection=connection,
                        identity_setting=identity_setting)
    assert unset in error.hint
