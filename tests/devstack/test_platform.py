"""The managed-identity platform as the real clients see it: one cached token per identity
and resource, role changes that show only in a later token, and signing-key rotation.

In Azure the platform keeps one token per identity and resource for about 24 hours and
hands the same one to every request, including one that bypasses the client's own cache
(here: a new credential or client per request); a role assigned or removed shows only
once that token is replaced. The control API rolls the cache over as the platform would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential

from devstack import DevStack
from devstack.config import load_config
from tests.devstack.test_identity import SCOPE, use_source
from tests.plugin import Control

RESOURCE = SCOPE.removesuffix("/.default")


def sync_token(client_id: str, **options: Any) -> str:
    """A token through a new credential: nothing cached on the client's side."""
    with ManagedIdentityCredential(client_id=client_id, **options) as credential:
        return credential.get_token(SCOPE).token


async def aio_token(client_id: str) -> str:
    async with AsyncManagedIdentityCredential(client_id=client_id) as credential:
        return (await credential.get_token(SCOPE)).token


def msal_token(client_id: str) -> str:
    client = msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(client_id=client_id),
                                        http_client=requests.Session())
    result = client.acquire_token_for_client(resource=RESOURCE)
    assert "access_token" in result, result.get("error_description")
    return result["access_token"]


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(params=["app_service", "imds"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, endpoints: dict[str, Any]) -> str:
    use_source(monkeypatch, endpoints, request.param)
    return request.param


# --- one token per identity and resource ---------------------------------------------------

def test_every_request_gets_the_cached_token_until_it_is_rolled_over(mode, endpoints, control):
    reader = endpoints["identities"]["reader"]["client_id"]
    first = sync_token(reader)

    assert sync_token(reader) == first  # a new credential, so azure-identity's cache was bypassed
    assert msal_token(reader) == first
    stats = control.stats()["identity"]
    assert (stats["tokens_minted"], stats["tokens_from_platform_cache"]) == (1, 2)

    assert control.roll_over_tokens() == 1
    renewed = sync_token(reader)
    assert renewed != first
    assert claims(renewed)["iat"] >= claims(first)["iat"]


async def test_aio_requests_get_the_cached_token_too(mode, endpoints, control):
    reader = endpoints["identities"]["reader"]["client_id"]
    first = await aio_token(reader)
    assert await aio_token(reader) == first
    assert control.stats()["identity"]["tokens_minted"] == 1


def test_the_cache_is_per_identity_and_resource(mode, endpoints, control):
    reader, writer = (endpoints["identities"][n]["client_id"] for n in ("reader", "writer"))
    assert sync_token(reader) != sync_token(writer)
    with ManagedIdentityCredential(client_id=reader) as credential:
        other = credential.get_token("https://management.azure.com/.default").token
    assert claims(other)["aud"] == "https://management.azure.com"  # v1: the resource as requested
    assert control.stats()["identity"]["tokens_minted"] == 3


def test_rolling_over_one_identity_keeps_the_others(mode, endpoints, control):
    reader, writer = (endpoints["identities"][n]["client_id"] for n in ("reader", "writer"))
    reader_token, writer_token = sync_token(reader), sync_token(writer)
    control.roll_over_tokens("writer")
    assert sync_token(reader) == reader_token
    assert sync_token(writer) != writer_token


def test_an_expired_token_is_replaced_by_the_platform(monkeypatch):
    config = replace(load_config(), token_lifetime_seconds=1, token_backdate_seconds=0)
    with DevStack(config) as stack:
        use_source(monkeypatch, stack.endpoints, "app_service")
        reader = stack.endpoints["identities"]["reader"]["client_id"]
        first = sync_token(reader)
        deadline = time.time() + 5
        while time.time() <= claims(first)["exp"] and time.time() < deadline:
            time.sleep(0.05)
        assert sync_token(reader) != first
        assert Control(stack.endpoints["control_url"]).stats()["identity"]["tokens_minted"] == 2


# --- app roles change at runtime, tokens later ----------------------------------------------

def test_a_role_assigned_at_runtime_is_absent_until_the_cache_rolls_over(mode, endpoints, control):
    reader = endpoints["identities"]["reader"]["client_id"]
    read_role, write_role = endpoints["api_roles"]["read"], endpoints["api_roles"]["write"]
    before = sync_token(reader)

    # Its roles on every API (the devstack has two); a token for this API carries only this API's.
    assert control.assign_role("reader", write_role) == [*endpoints["identities"]["reader"]["roles"], write_role]
    assert sync_token(reader) == before
    assert msal_token(reader) == before
    assert claims(before)["roles"] == [read_role]

    control.roll_over_tokens()
    assert claims(sync_token(reader))["roles"] == [read_role, write_role]


def test_a_removed_role_stays_in_the_cached_token(mode, endpoints, control):
    writer = endpoints["identities"]["writer"]["client_id"]
    write_role = endpoints["api_roles"]["write"]
    before = sync_token(writer)
    control.assign_role("writer", endpoints["api_roles"]["read"])  # keep one role: the API requires one
    control.remove_role("writer", write_role)

    assert claims(sync_token(writer))["roles"] == [write_role]
    control.roll_over_tokens()
    assert claims(sync_token(writer))["roles"] == [endpoints["api_roles"]["read"]]
    assert sync_token(writer) != before


def test_an_identity_given_its_first_role_gets_a_token_at_once(mode, endpoints, control):
    # No token was cached for it (Entra refused to mint one), so the next request mints.
    unassigned = endpoints["identities"]["unassigned"]["client_id"]
    with pytest.raises(ClientAuthenticationError):
        sync_token(unassigned, retry_total=0)  # App Service answers 500, which clients retry
    control.assign_role("unassigned", endpoints["api_roles"]["read"])
    assert claims(sync_token(unassigned))["roles"] == [endpoints["api_roles"]["read"]]


def test_reset_restores_the_configured_roles(endpoints, control):
    control.assign_role("reader", endpoints["api_roles"]["write"])
    control.reset()
    assert control._call("GET", "/identity/roles")["reader"] == endpoints["identities"]["reader"]["roles"]


@pytest.mark.parametrize(("body", "problem"), [
    ({"identity": "nobody", "role": "Orders.Read"}, "unknown identity 'nobody'"),
    ({"identity": "reader", "role": "Orders.Admin"}, "unknown app role 'Orders.Admin'"),
    ({"identity": "reader"}, "give 'identity' and 'role'"),
])
def test_a_bad_role_change_is_a_400_that_names_the_problem(endpoints, control, body, problem):
    response = requests.post(endpoints["control_url"] + "/identity/roles", json=body, timeout=5)
    assert response.status_code == 400
    assert problem in response.json()["error"]


# --- signing keys -------------------------------------------------------------------------

# A rotated key would make the shared stack's APIM refuse new tokens for five minutes:
# each of these tests rotates the keys of a stack of its own.

@pytest.fixture
def own_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[DevStack]:
    with DevStack() as stack:
        use_source(monkeypatch, stack.endpoints, "app_service")
        yield stack


@pytest.fixture
def eager_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[DevStack]:
    """APIM refetches the OpenID configuration for every unknown kid (no rate limit)."""
    with DevStack(replace(load_config(), openid_refetch_seconds=0)) as stack:
        use_source(monkeypatch, stack.endpoints, "app_service")
        yield stack


def test_rotation_signs_new_tokens_with_a_new_key_and_keeps_the_old_one_published(own_stack):
    endpoints = own_stack.endpoints
    control = Control(endpoints["control_url"])
    reader = endpoints["identities"]["reader"]["client_id"]
    old = sync_token(reader)
    old_kid = jwt.get_unverified_header(old)["kid"]

    new_kid = control.rotate_signing_key()
    control.roll_over_tokens()
    new = sync_token(reader)

    assert jwt.get_unverified_header(new)["kid"] == new_kid != old_kid
    published = requests.get(endpoints["jwks_uri"], timeout=5).json()["keys"]
    assert [k["kid"] for k in published] == [new_kid, old_kid]
    keys = jwt.PyJWKSet.from_dict({"keys": published})
    for token in (old, new):  # a token signed before the rotation stays valid until it expires
        key = next(k for k in keys.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
        jwt.decode(token, key.key, algorithms=["RS256"], audience=endpoints["api_client_id"])


async def _apim_status(stack: DevStack, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "Ocp-Apim-Subscription-Key": stack.endpoints["subscription_key"]}
    async with aiohttp.ClientSession() as session, \
            session.get(stack.endpoints["apim_base_url"] + "/status", headers=headers) as response:
        return response.status


async def test_after_a_rotation_apim_refetches_the_keys_and_accepts_new_tokens(eager_stack):
    control = Control(eager_stack.endpoints["control_url"])
    reader = eager_stack.endpoints["identities"]["reader"]["client_id"]
    assert await _apim_status(eager_stack, await aio_token(reader)) == 200
    fetched = control.stats()["identity"]["openid_config_requests"]

    control.rotate_signing_key()
    control.roll_over_tokens()
    assert await _apim_status(eager_stack, await aio_token(reader)) == 200
    assert control.stats()["identity"]["openid_config_requests"] == fetched + 1  # the unknown kid's refetch
    assert await _apim_status(eager_stack, await aio_token(reader)) == 200
    assert control.stats()["identity"]["openid_config_requests"] == fetched + 1  # now a known kid


async def test_apim_refetches_at_most_every_five_minutes(own_stack):
    # APIM's keys were fetched moments ago, so a token signed by a key rotated in since
    # then is refused until five minutes have passed.
    control = Control(own_stack.endpoints["control_url"])
    reader = own_stack.endpoints["identities"]["reader"]["client_id"]
    assert await _apim_status(own_stack, await aio_token(reader)) == 200
    fetched = control.stats()["identity"]["openid_config_requests"]
    control.rotate_signing_key()
    control.roll_over_tokens()
    assert await _apim_status(own_stack, await aio_token(reader)) == 401
    assert control.stats()["identity"]["openid_config_requests"] == fetched  # no refetch yet


# --- the control API's counters ----------------------------------------------------------

def test_stats_always_has_the_four_services(control):
    stats = control.stats()
    assert {"identity", "apim", "backend", "ingestion"} <= set(stats)
