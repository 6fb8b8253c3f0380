"""Settings through the functions: each missing or malformed one is named by health, calls and the timer.

`tests/app/test_settings.py` checks `load_settings` itself; here the host's view:
the functions still load, `health` answers 503 naming the problem, a call fails
with the same words as typed JSON, the timer fails its invocation with them, and
nothing reaches the identity endpoint or APIM meanwhile.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from devstack.invocation import timer_request
from shared.errors import ConfigurationError
from shared.settings import SETTINGS, is_loopback_host, load_settings
from tests.app.test_settings import SETTING_VALUES
from tests.plugin import FUNCTIONS, http_request, invocation_context
from tests.reliability.conftest import PROPERTIES, error_of

proxy, health, timer = FUNCTIONS["apim_proxy"], FUNCTIONS["apim_health"], FUNCTIONS["apim_timer"]
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://kv-contoso.vault.azure.net/secrets/apim-key/)"

# (setting, value (None: unset), words the problem must contain)
BAD_SETTINGS = [
    ("APIM_BASE_URL", None, "APIM_BASE_URL is not set"),
    ("APIM_BASE_URL", "contoso.azure-api.net/orders", "APIM_BASE_URL must be an absolute https URL"),
    ("APIM_BASE_URL", "http://contoso.azure-api.net/orders", "APIM_BASE_URL must use https"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders?subscription-key=x", "APIM_BASE_URL must not contain"),
    ("APIM_BASE_URL", KEY_VAULT_REFERENCE, "APIM_BASE_URL is an unresolved Key Vault reference"),
    ("API_APP_ID_URI", None, "API_APP_ID_URI is not set"),
    ("API_APP_ID_URI", "api://contoso-orders/.default", "API_APP_ID_URI must not end with '/.default'"),
    ("API_APP_ID_URI", "contoso-orders", "API_APP_ID_URI must be an Application ID URI"),
    ("APIM_SUBSCRIPTION_KEY", KEY_VAULT_REFERENCE, "APIM_SUBSCRIPTION_KEY is an unresolved Key Vault reference"),
    ("APIM_SUBSCRIPTION_KEY", "  " + KEY_VAULT_REFERENCE.lower(), "APIM_SUBSCRIPTION_KEY is an unresolved Key Vault"),
    ("APIM_SUBSCRIPTION_KEY", "key with spaces", "APIM_SUBSCRIPTION_KEY contains spaces"),
    ("MANAGED_IDENTITY_CLIENT_ID", "reader", "MANAGED_IDENTITY_CLIENT_ID must be a GUID"),
    ("MANAGED_IDENTITY_CLIENT_ID", KEY_VAULT_REFERENCE, "MANAGED_IDENTITY_CLIENT_ID is an unresolved Key Vault"),
    ("MANAGED_IDENTITY_WRITE_CLIENT_ID", "1234", "MANAGED_IDENTITY_WRITE_CLIENT_ID must be a GUID"),
    ("AZURE_TENANT_ID", "contoso", "AZURE_TENANT_ID must be a GUID"),
    ("TIMER_API_PATH", "status", "TIMER_API_PATH must be a path under the API that starts with '/'"),
]


@pytest.mark.parametrize(("name", "value", "words"), BAD_SETTINGS,
                         ids=[f"{n}={'unset' if v is None else v[:20]}" for n, v, _ in BAD_SETTINGS])
async def test_a_bad_setting_is_named_by_health_calls_and_the_timer(use_stack, control, name, value, words):
    await use_stack("reader", **{name: value})

    response = await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health"))
    assert response.status_code == 503
    report = json.loads(response.get_body())
    assert report["status"] == "misconfigured"
    [problem] = report["error"]["problems"]  # one setting, one problem (not also "not set")
    assert words in problem

    error = error_of(await proxy(http_request("GET", "status"), invocation_context()), 500, "configuration_error")
    assert words in error["message"]

    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(").replace(".", r"\.")):
        await timer(timer_request(past_due=False), invocation_context("apim_timer"))

    stats = control.stats()
    assert stats.get("identity", {}).get("token_requests", 0) == 0 and stats.get("apim", {}).get("requests", 0) == 0
    if value and name == "APIM_SUBSCRIPTION_KEY" and "Key Vault" not in words:
        assert value not in response.get_body().decode()  # a bad key is named, never echoed


async def test_every_problem_is_reported_at_once(use_stack):
    await use_stack("reader", APIM_BASE_URL=None, API_APP_ID_URI=KEY_VAULT_REFERENCE, AZURE_TENANT_ID="x")
    response = await health(http_request("GET", "health"), invocation_context("apim_health"))
    problems = json.loads(response.get_body())["error"]["problems"]
    assert [p.split(" ")[0] for p in problems] == ["APIM_BASE_URL", "API_APP_ID_URI", "AZURE_TENANT_ID"]
    assert "unresolved Key Vault reference" in problems[1] and "Key Vault Secrets User" in problems[1]


async def test_a_missing_timer_path_fails_only_the_timer(use_stack):
    await use_stack("reader", TIMER_API_PATH=None)
    response = await health(http_request("GET", "health"), invocation_context("apim_health"))
    assert response.status_code == 200
    assert json.loads(response.get_body())["settings"]["TIMER_API_PATH"] == "not set"
    assert (await proxy(http_request("GET", "status"), invocation_context())).status_code == 200
    with pytest.raises(ConfigurationError, match="TIMER_API_PATH is not set"):
        await timer(timer_request(past_due=False), invocation_context("apim_timer"))


async def test_fixing_a_setting_takes_effect_on_restart(use_stack):
    # Settings are validated once per process (a Function App restarts when its settings change).
    await use_stack("reader", APIM_SUBSCRIPTION_KEY=KEY_VAULT_REFERENCE)
    assert (await proxy(http_request("GET", "status"), invocation_context())).status_code == 500
    await use_stack("reader")
    assert (await proxy(http_request("GET", "status"), invocation_context())).status_code == 200


# A secret pasted into the wrong setting: each check names the setting and the rule, never the value.
SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
MISPLACED = [("APIM_BASE_URL", f"{SECRET}.azure-api.net/orders"), ("APIM_BASE_URL", f"ftp://{SECRET}/orders"),
             ("API_APP_ID_URI", SECRET), ("MANAGED_IDENTITY_CLIENT_ID", SECRET),
             ("MANAGED_IDENTITY_WRITE_CLIENT_ID", SECRET), ("AZURE_TENANT_ID", SECRET), ("TIMER_API_PATH", SECRET)]


@pytest.mark.parametrize(("name", "value"), MISPLACED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MISPLACED)])
async def test_a_bad_value_is_never_echoed(use_stack, name, value):
    await use_stack("reader", **{name: value})
    seen = [(await health(http_request("GET", "health"), invocation_context("apim_health"))).get_body().decode(),
            (await proxy(http_request("GET", "status"), invocation_context())).get_body().decode()]
    with pytest.raises(ConfigurationError) as raised:
        await timer(timer_request(past_due=False), invocation_context("apim_timer"))
    seen.append(str(raised.value))
    assert name in seen[0]
    assert not [text for text in seen if SECRET in text]


async def test_a_resource_id_for_a_client_id_gets_its_own_hint(use_stack):
    resource_id = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
                   "Microsoft.ManagedIdentity/userAssignedIdentities/id-reader")
    await use_stack("reader", MANAGED_IDENTITY_CLIENT_ID=resource_id)
    response = await health(http_request("GET", "health"), invocation_context("apim_health"))
    [problem] = json.loads(response.get_body())["error"]["problems"]
    assert "that is a resource ID: use the identity's client ID" in problem


@pytest.fixture
def names_resolve_to_a_closed_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any name but loopback's resolves to a loopback port that refuses connections: the test stays offline.

    The name is encoded first exactly as socket.getaddrinfo encodes it, which is where a host that
    no resolver can send (an empty label, one of 64 characters) fails.
    """
    real = socket.getaddrinfo
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connecting to it is refused
    port = closed.getsockname()[1]

    def getaddrinfo(host, service, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.encode("idna") if isinstance(host, str) else host
        if name is None or is_loopback_host(name.decode()):
            return real(host, service, *args, **kwargs)
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    closed.close()


@settings(PROPERTIES, max_examples=80)
@given(name=st.sampled_from([setting.name for setting in SETTINGS]), value=SETTING_VALUES)
@example(name="APIM_BASE_URL", value="https://a..b/orders")
@example(name="APIM_BASE_URL", value=f"https://{'a' * 64}.azure-api.net/orders")
@example(name="APIM_BASE_URL", value="https://contoso\u200b.azure-api.net/orders")
async def test_no_accepted_setting_makes_a_call_or_the_token_probe_answer_internal_error(
        use_stack, backoff, names_resolve_to_a_closed_port, name, value):
    assume(_fits_the_environment(value))
    env = await use_stack("reader", **{name: value})
    try:
        load_settings(env)
    except ConfigurationError:
        return  # refused: named by health, calls and the timer (the tests above)
    for response in (await proxy(http_request("GET", "status"), invocation_context()),
                     await health(http_request("GET", "health", query="probe=token"),
                                  invocation_context("apim_health"))):
        text = response.get_body().decode()
        assert response.mimetype == "application/json" or response.status_code < 500, text
        if response.status_code >= 500:
            assert json.loads(text)["error"]["code"] != "internal_error", text


def _fits_the_environment(value: str) -> bool:
    """An app setting reaches the process as an environment variable: no NUL, nothing the OS cannot encode."""
    try:
        return b"\0" not in os.fsencode(value)
    except UnicodeError:
        return False
