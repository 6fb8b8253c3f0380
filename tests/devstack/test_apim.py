"""The APIM gateway stand-in, called like the function app calls APIM: over HTTP, through to the backend."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from devstack import DevStack
from devstack.apim import create_app
from devstack.apim.jwt_validation import TokenRejected, TokenRules, validate
from devstack.apim.openid import HttpMetadataSource, MetadataError, OpenIdMetadata, StaticMetadataSource
from devstack.apim.statements import IssuerSigningKey, RequiredClaim
from devstack.config import PROJECT_ROOT, load_config
from devstack.entra import EntraSigningKey, TokenIssuer, v1_issuer, v2_issuer
from devstack.state import StackState
from tests.plugin import SAMPLE_BACKEND

UNAUTHORIZED = b'{ "statusCode": 401, "message": "Unauthorized. Access token is missing or invalid." }'
MISSING_KEY = (b'{ "statusCode": 401, "message": "Access denied due to missing subscription key. Make sure to '
               b'include subscription key when making requests to an API." }')
INVALID_KEY = (b'{ "statusCode": 401, "message": "Access denied due to invalid subscription key. Make sure to '
               b'provide a valid key for an active subscription." }')
NOT_FOUND = b'{ "statusCode": 404, "message": "Resource not found" }'
OTHER_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


class Gateway:
    """Calls the stand-in gateway the way the app does, with a token and the subscription key."""

    def __init__(self, session: aiohttp.ClientSession, stack: DevStack) -> None:
        self.session = session
        self.stack = stack
        self.base_url = stack.endpoints["apim_base_url"]
        self.key = stack.endpoints["subscription_key"]

    def token(self, identity: str, **changes: Any) -> str:
        """A token the identity stand-in would issue for the API, with `changes` to its claims."""
        issuer = self.stack.state.issuer
        claims = issuer.claims_for(self.stack.state.config.identities[identity], self.stack.state.config.api.app_id_uri)
        claims.update(changes)
        return issuer.sign({k: v for k, v in claims.items() if v is not None})

    async def call(self, method: str, path: str, *, token: str | None = None, key: str | None = "default",
                   headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[int, Any, bytes]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if key is not None:
            sent["Ocp-Apim-Subscription-Key"] = self.key if key == "default" else key
        async with self.session.request(method, self.base_url + path, headers=sent, **kwargs) as response:
            return response.status, response.headers, await response.read()


def devstack_config():
    return load_config()


@pytest.fixture
async def apim(devstack, control) -> AsyncIterator[Gateway]:
    async with aiohttp.ClientSession() as session:
        yield Gateway(session, devstack)


# --- through to the backend -----------------------------------------------------

async def test_reader_token_and_key_reach_the_backend(apim, endpoints, control):
    status, headers, body = await apim.call("GET", "/status", token=apim.token("reader"))
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    reader = endpoints["identities"]["reader"]["client_id"]
    assert json.loads(body)["caller"] == reader
    [received] = control.backend_requests()
    assert received["path"] == f"{SAMPLE_BACKEND}/status" and received["authorization_scheme"] == "Bearer"
    # The caller's token stays at APIM: the backend gets one of APIM's own managed identity.
    apim_identity = devstack_config().apim_identity
    assert received["token_claims"]["oid"] == apim_identity.principal_id
    assert received["token_claims"]["azp"] == apim_identity.client_id
    assert received["token_claims"]["aud"] == devstack_config().sample_backend.app.client_id
    sent = {k.lower(): v for k, v in received["headers"].items()}
    assert sent["x-caller-client-id"] == reader
    assert sent["x-caller-roles"] == endpoints["api_roles"]["read"]
    assert "ocp-apim-subscription-key" not in sent  # removed by api-policy.xml
    assert sent["x-forwarded-for"] == "127.0.0.1"  # APIM adds the caller's address


async def test_apim_appends_the_caller_to_an_incoming_x_forwarded_for(apim, control):
    status, _, _ = await apim.call("GET", "/status", token=apim.token("reader"),
                                   headers={"X-Forwarded-For": "203.0.113.7"})
    assert status == 200
    sent = {k.lower(): v for k, v in control.backend_requests()[0]["headers"].items()}
    assert sent["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"


async def test_the_caller_cannot_forge_the_caller_headers(apim, endpoints, control):
    forged = {"X-Caller-Client-Id": "someone-else", "X-Caller-Roles": "Orders.Write"}
    status, _, _ = await apim.call("GET", "/status", token=apim.token("reader"), headers=forged)
    assert status == 200
    sent = {k.lower(): v for k, v in control.backend_requests()[0]["headers"].items()}
    assert sent["x-caller-client-id"] == endpoints["identities"]["reader"]["client_id"]
    assert sent["x-caller-roles"] == endpoints["api_roles"]["read"]


async def test_key_in_the_query_works_and_is_not_forwarded(apim, control):
    status, _, body = await apim.call("GET", "/orders", token=apim.token("reader"), key=None,
                                      params={"subscription-key": apim.key, "top": "5"})
    assert status == 200, body
    assert control.backend_requests()[0]["query"] == {"top": "5"}


async def test_template_operations_pass_backend_answers_through(apim):
    token = apim.token("reader")
    status, _, body = await apim.call("GET", "/orders", token=token)
    first = json.loads(body)[0]["id"]
    status, _, body = await apim.call("GET", f"/orders/{first}", token=token)
    assert status == 200 and json.loads(body)["id"] == first
    status, _, body = await apim.call("GET", "/orders/no-such-order", token=token)
    assert status == 404 and json.loads(body)["error"]["code"] == "OrderNotFound"  # the backend's 404, not APIM's


async def test_writer_creates_an_order(apim, endpoints, control):
    order = {"item": "Northwind Sprocket", "quantity": 3}
    status, headers, body = await apim.call("POST", "/orders", token=apim.token("writer"), json=order)
    assert status == 201, body
    created = json.loads(body)
    assert created["created_by"] == endpoints["identities"]["writer"]["client_id"]
    assert headers["Location"] == f"orders/{created['id']}"  # relative: /orders/orders/<id> on the gateway
    assert json.loads(control.backend_requests()[0]["body"]) == order


async def test_a_v1_token_for_the_app_id_uri_is_accepted(apim, endpoints):
    tenant = endpoints["tenant_id"]
    reader = endpoints["identities"]["reader"]["client_id"]
    token = apim.token("reader", aud=endpoints["api_app_id_uri"], iss=v1_issuer(tenant), ver="1.0",
                       azp=None, azpacr=None, appid=reader, appidacr="2")
    status, _, body = await apim.call("GET", "/status", token=token)
    assert status == 200, body
    assert json.loads(body)["caller"] == reader


# --- app roles: 403 -------------------------------------------------------------------

@pytest.mark.parametrize(("identity", "method", "role"), [
    ("writer", "GET", "read"),
    ("reader", "POST", "write"),
])
async def test_a_token_without_the_operations_role_is_forbidden(apim, endpoints, control, identity, method, role):
    status, _, body = await apim.call(method, "/orders", token=apim.token(identity), json={"item": "x", "quantity": 1}
                                      if method == "POST" else None)
    assert status == 403
    assert json.loads(body) == {
        "statusCode": 403,
        "message": f"Forbidden. The caller is not assigned the '{endpoints['api_roles'][role]}' app role of the API.",
    }
    assert control.backend_requests() == []


async def test_the_reader_with_the_read_role_removed_is_forbidden(apim, endpoints, control):
    status, _, body = await apim.call("GET", "/orders", token=apim.token("reader", roles=None))
    assert status == 403 and endpoints["api_roles"]["read"] in json.loads(body)["message"]


# --- tokens: 401 ----------------------------------------------------------------------

@pytest.mark.parametrize("identity", ["unassigned", "system", "host"])
async def test_an_app_not_in_client_application_ids_is_unauthorized(apim, control, identity):
    # Only the reader, the writer and the Azure CLI may call (api-policy.xml); Entra would not even
    # issue the unassigned identity a token for the API (assignment required).
    status, _, body = await apim.call("GET", "/orders", token=apim.token(identity))
    assert (status, body) == (401, UNAUTHORIZED)
    assert control.backend_requests() == []


async def test_the_azure_cli_as_a_client_application_is_accepted(apim, endpoints):
    # A developer's own sign-in (AzureCliCredential): azp is the Azure CLI's client ID.
    token = apim.token("reader", azp="04b07795-8ddb-461a-bbee-02f9e1bf7b46", idtyp="user")
    status, _, body = await apim.call("GET", "/orders", token=token)
    assert status == 200, body

def _sign_with_another_key(apim: Gateway, *, keep_kid: bool) -> str:
    stack = apim.stack.state
    claims = stack.issuer.claims_for(stack.config.identities["reader"], stack.config.api.app_id_uri)
    other = EntraSigningKey.generate()
    # With keep_kid the token claims to be signed by Entra's key; the signature says otherwise.
    kid = stack.issuer.keys.current.kid if keep_kid else other.kid
    return jwt.encode(claims, other.private_key, algorithm="RS256", headers={"kid": kid})


def _unsigned(apim: Gateway) -> str:
    stack = apim.stack.state
    claims = stack.issuer.claims_for(stack.config.identities["reader"], stack.config.api.app_id_uri)
    return jwt.encode(claims, None, algorithm="none")


# Each bad token, and the reason APIM would record for it (context.LastError.Reason).
BAD_TOKENS = {
    "expired": (lambda g: g.token("reader", exp=int(time.time()) - 60), "TokenExpired"),
    "no expiry": (lambda g: g.token("reader", exp=None), "JwtInvalid"),
    "not yet valid": (lambda g: g.token("reader", nbf=int(time.time()) + 600), "JwtInvalid"),
    "wrong audience": (lambda g: g.token("reader", aud="api://someone-else"), "TokenAudienceNotAllowed"),
    "wrong issuer": (lambda g: g.token("reader", iss="https://issuer.example/"), "TokenIssuerNotAllowed"),
    "other tenant": (lambda g: g.token("reader", tid=OTHER_TENANT, iss=v2_issuer(OTHER_TENANT)),
                     "TokenIssuerNotAllowed"),
    "other key, unknown kid": (lambda g: _sign_with_another_key(g, keep_kid=False), "TokenSignatureKeyNotFound"),
    "other key, Entra's kid": (lambda g: _sign_with_another_key(g, keep_kid=True), "TokenSignatureInvalid"),
    "alg none": (_unsigned, "TokenSignatureInvalid"),
    "not a JWT": (lambda g: "not-a-jwt", "JwtInvalid"),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
async def test_a_bad_token_is_rejected_with_401(apim, control, caplog, case):
    make, reason = BAD_TOKENS[case]
    with caplog.at_level(logging.INFO, logger="devstack.apim"):
        status, _, body = await apim.call("GET", "/status", token=make(apim))
    assert (status, body) == (401, UNAUTHORIZED)
    assert f"validate-azure-ad-token rejected GET /status: {reason} " in caplog.text
    assert control.backend_requests() == []


async def test_tokens_and_keys_are_never_logged(apim, caplog):
    token = apim.token("reader")
    with caplog.at_level(logging.DEBUG):
        await apim.call("GET", "/status", token=token)
        await apim.call("GET", "/status", token=token, key=None, params={"subscription-key": apim.key})
        await apim.call("GET", "/status", token=token[:-4] + "AAAA")
    assert caplog.text  # the gateway did log
    assert token.split(".")[2][:20] not in caplog.text and apim.key not in caplog.text


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "token-without-scheme"])
async def test_no_bearer_token_is_rejected_with_401(apim, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    status, _, body = await apim.call("GET", "/status", headers=headers)
    assert (status, body) == (401, UNAUTHORIZED)


async def test_an_apim_error_body_is_apims_json_without_charset(apim):
    status, headers, _ = await apim.call("GET", "/status")
    assert status == 401
    assert headers["Content-Type"] == "application/json"


# --- subscription keys --------------------------------------------------------------

async def test_a_missing_key_is_refused_before_the_token_is_looked_at(apim, endpoints):
    status, headers, body = await apim.call("GET", "/status", key=None)
    assert (status, body) == (401, MISSING_KEY)
    gateway = endpoints["apim_gateway_url"]
    assert headers["WWW-Authenticate"] == (
        f'AzureApiManagementKey realm="{gateway}/orders",name="Ocp-Apim-Subscription-Key",type="header"')


async def test_a_wrong_key_is_refused(apim):
    status, headers, body = await apim.call("GET", "/status", token=apim.token("reader"), key="0" * 32)
    assert (status, body) == (401, INVALID_KEY)
    assert headers["WWW-Authenticate"].startswith("AzureApiManagementKey ")


async def test_the_header_wins_over_the_query_parameter(apim):
    status, _, body = await apim.call("GET", "/status", token=apim.token("reader"), key="wrong",
                                      params={"subscription-key": apim.key})
    assert (status, body) == (401, INVALID_KEY)


# --- routing --------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nothing-here"), ("DELETE", "/orders"), ("GET", "/orders/"), ("GET", "/orders/1/items"),
    ("PUT", "/status"),
])
async def test_no_matching_operation_is_apims_404(apim, control, method, path):
    status, _, body = await apim.call(method, path, token=apim.token("writer"))
    assert (status, body) == (404, NOT_FOUND)
    assert control.backend_requests() == []


async def test_a_path_outside_the_api_is_apims_404(apim, endpoints):
    async with apim.session.get(endpoints["apim_gateway_url"] + "/other-api/status") as response:
        assert (response.status, await response.read()) == (404, NOT_FOUND)


# --- faults, counters, backend failures ------------------------------------------------

async def test_an_injected_fault_answers_503_with_retry_after_and_is_counted(apim, control):
    control.fault("apim", status=503, retry_after=1)
    status, headers, body = await apim.call("GET", "/status", token=apim.token("reader"))
    assert status == 503 and headers["Retry-After"] == "1"
    assert json.loads(body)["statusCode"] == 503
    assert control.backend_requests() == []
    status, _, _ = await apim.call("GET", "/status", token=apim.token("reader"))
    assert status == 200
    stats = control.stats()["apim"]
    assert stats["requests"] == 2 and stats["by_status"] == {"503": 1, "200": 1}


async def test_every_outcome_is_counted_by_status(apim, control):
    await apim.call("GET", "/status", key=None)
    await apim.call("GET", "/nothing-here")
    await apim.call("POST", "/orders", token=apim.token("reader"), json={"item": "x", "quantity": 1})
    assert control.stats()["apim"]["by_status"] == {"401": 1, "404": 1, "403": 1}


async def test_a_backend_that_drops_the_connection_is_apims_500(apim, control):
    control.fault("backend", drop_connection=True)
    status, _, body = await apim.call("GET", "/status", token=apim.token("reader"))
    assert status == 500
    error = json.loads(body)
    assert error["message"] == "Internal server error" and error["activityId"]


async def test_a_backend_error_status_passes_through(apim, control):
    control.fault("backend", status=503, retry_after=2)
    status, headers, _ = await apim.call("GET", "/status", token=apim.token("reader"))
    assert status == 503 and headers["Retry-After"] == "2"


async def _through_another_gateway(state: StackState, policy_dir: Path | None, method: str, path: str,
                                   **kwargs: Any) -> tuple[int, str, Any, bytes]:
    """`method` /orders`path` through a second gateway app on this loop, for the given state and policy
    files, with the writer's token for a POST and the reader's otherwise."""
    server = TestServer(create_app(state, policy_dir=policy_dir), host="127.0.0.1")
    await server.start_server()
    try:
        role = "writer" if method == "POST" else "reader"
        token, _ = state.issuer.issue(state.config.identities[role], state.config.api.app_id_uri)
        headers = {"Authorization": f"Bearer {token}", "Ocp-Apim-Subscription-Key": state.subscription_key}
        async with aiohttp.ClientSession() as session, session.request(
                method, server.make_url(f"/orders{path}"), headers=headers, **kwargs) as response:
            return response.status, response.reason or "", response.headers, await response.read()
    finally:
        await server.close()


async def _status_through_another_gateway(state: StackState, policy_dir: Path | None = None) -> tuple[int, Any]:
    status, _, _, body = await _through_another_gateway(state, policy_dir, "GET", "/status")
    return status, json.loads(body)


def _with_global_policy(tmp_path: Path, policy: str) -> Path:
    """A copy of infra/apim with `policy` as its global-policy.xml."""
    policy_dir = Path(shutil.copytree(PROJECT_ROOT / "infra" / "apim", tmp_path / "apim"))
    (policy_dir / "global-policy.xml").write_text(policy, encoding="utf-8")
    return policy_dir


async def test_a_forward_request_timeout_is_apims_500(devstack, tmp_path):
    policy_dir = _with_global_policy(tmp_path,  # the backend gets no time at all
        '<policies><inbound /><backend><forward-request timeout="0" /></backend><outbound /><on-error /></policies>')
    status, body = await _status_through_another_gateway(devstack.state, policy_dir)
    assert status == 500
    assert body["message"] == "Internal server error" and body["activityId"]


async def test_without_a_token_of_its_own_for_the_backend_apim_answers_500(devstack, control):
    # authentication-managed-identity gets no token (here: Entra refuses it); nothing is forwarded.
    from devstack.identity.platform import Reason, Refusal

    class RefusingPlatform:
        def grant(self, identity: Any, resource: str) -> Any:
            raise Refusal(Reason.UNKNOWN_RESOURCE, resource)

    state = replace(devstack.state, platform=RefusingPlatform())
    status, body = await _status_through_another_gateway(state)
    assert (status, body["message"]) == (500, "Internal server error") and body["activityId"]
    assert control.backend_requests() == []


async def test_an_unreachable_backend_is_apims_500(devstack):
    state = replace(devstack.state, endpoints={**devstack.endpoints, "backend_url": "http://127.0.0.1:9"})  # discard
    status, body = await _status_through_another_gateway(state)
    assert (status, body["statusCode"], body["message"]) == (500, 500, "Internal server error")


# --- OpenID metadata from the identity stand-in ------------------------------------------

async def test_metadata_comes_from_the_tenants_discovery_document_and_is_cached(devstack, endpoints, control):
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        source = HttpMetadataSource(session=lambda: session, clock=lambda: now[0])
        url = endpoints["openid_config_url"]
        metadata = await source.get(url)
        assert metadata.issuer == v2_issuer(endpoints["tenant_id"])
        assert [k["kid"] for k in metadata.keys] == [k.kid for k in devstack.state.issuer.keys.published]
        await source.get(url)
        now[0] += 60
        await source.get(url, refresh=True)  # an unknown kid asks for a refetch: not within 5 minutes
        assert control.stats()["identity"]["openid_config_requests"] == 1
        now[0] += 300
        await source.get(url, refresh=True)
        assert control.stats()["identity"]["openid_config_requests"] == 2
        now[0] += 3600
        await source.get(url)  # an hour old: fetched again
        assert control.stats()["identity"]["openid_config_requests"] == 3


async def test_unreachable_metadata_is_an_error_and_stale_metadata_is_kept():
    async def config(request: web.Request) -> web.Response:
        return web.json_response({"issuer": "me", "jwks_uri": str(request.url.with_path("/keys"))})

    async def keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": [{"kty": "RSA", "kid": "1", "n": "AQAB", "e": "AQAB"}]})

    app = web.Application()
    app.router.add_get("/config", config)
    app.router.add_get("/keys", keys)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    config_url, missing_url = str(server.make_url("/config")), str(server.make_url("/nothing"))
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        source = HttpMetadataSource(session=lambda: session, clock=lambda: now[0])
        with pytest.raises(MetadataError):
            await source.get(missing_url)
        fresh = await source.get(config_url)
        assert fresh.issuer == "me" and fresh.keys[0]["kid"] == "1"
        await server.close()  # every later fetch fails
        now[0] += 7200
        assert await source.get(config_url) == fresh


# --- token checks in isolation (no identity service: keys from a static source) ----------

@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(load_config())


@pytest.fixture(scope="module")
def keys(issuer) -> StaticMetadataSource:
    tenant = issuer.config.tenant_id
    return StaticMetadataSource({"entra": OpenIdMetadata(issuer=v2_issuer(tenant), keys=tuple(issuer.jwks()["keys"]))})


def _claims(issuer: TokenIssuer, identity: str = "reader", **changes: Any) -> dict[str, Any]:
    claims = issuer.claims_for(issuer.config.identities[identity], issuer.config.api.app_id_uri)
    claims.update(changes)
    return claims


async def test_openid_metadata_supplies_keys_and_issuer(issuer, keys):
    token = issuer.sign(_claims(issuer))
    validated = await validate(token, TokenRules(metadata_urls=("entra",)), keys)
    assert validated.get_value_or_default("roles", "") == issuer.config.api.read_role
    with pytest.raises(TokenRejected) as rejected:
        await validate(issuer.sign(_claims(issuer, iss=v1_issuer(OTHER_TENANT))), TokenRules(metadata_urls=("entra",)),
                       keys)
    assert rejected.value.reason == "TokenIssuerNotAllowed"


@pytest.mark.parametrize(("claim", "token_roles", "ok"), [
    (RequiredClaim("roles", ("A", "B"), match="any"), ["B"], True),
    (RequiredClaim("roles", ("A", "B"), match="all"), ["B"], False),
    (RequiredClaim("roles", ("A", "B"), match="all"), ["B", "A", "C"], True),
    (RequiredClaim("roles", ("A",), match="any", separator=" "), "C A", True),
    (RequiredClaim("roles", ("A",)), None, False),
])
async def test_required_claims_match_all_or_any(issuer, keys, claim, token_roles, ok):
    token = issuer.sign(_claims(issuer, roles=token_roles))
    rules = TokenRules(metadata_urls=("entra",), required_claims=(claim,))
    if ok:
        await validate(token, rules, keys)
        return
    with pytest.raises(TokenRejected) as rejected:
        await validate(token, rules, keys)
    assert rejected.value.reason in ("TokenClaimValueNotAllowed", "TokenClaimNotFound")
    assert rejected.value.message.endswith("Access denied.")


async def test_default_messages_are_apims(issuer, keys):
    rules = TokenRules(metadata_urls=("entra",), required_claims=(RequiredClaim("scp", ("x",)),))
    missing = re.escape("JWT token is missing the following claims: scp. Access denied.")
    with pytest.raises(TokenRejected, match=missing):
        await validate(issuer.sign(_claims(issuer)), rules, keys)
    with pytest.raises(TokenRejected, match="The token is expired"):
        await validate(issuer.sign(_claims(issuer, exp=1)), TokenRules(metadata_urls=("entra",)), keys)


async def test_clock_skew_allows_a_just_expired_token(issuer, keys):
    token = issuer.sign(_claims(issuer, exp=int(time.time()) - 30))
    await validate(token, TokenRules(metadata_urls=("entra",), clock_skew=60), keys)


async def test_issuer_signing_keys_rsa_and_symmetric(issuer, keys):
    jwk = issuer.jwks()["keys"][0]
    rsa_rules = TokenRules(signing_keys=(IssuerSigningKey(kid=jwk["kid"], n=jwk["n"], e=jwk["e"]),))
    await validate(issuer.sign(_claims(issuer)), rsa_rules, keys)
    secret = b"0123456789abcdef0123456789abcdef"
    hs_token = jwt.encode(_claims(issuer), secret, algorithm="HS256")
    await validate(hs_token, TokenRules(signing_keys=(IssuerSigningKey(secret=secret),)), keys)
    with pytest.raises(TokenRejected):
        other = IssuerSigningKey(secret=b"another secret of 32 bytes!!!!!!")
        await validate(hs_token, TokenRules(signing_keys=(other,)), keys)


async def test_an_rsa_public_key_is_never_an_hmac_secret(issuer, keys):
    """The classic algorithm-confusion attack: HS256 'signed' with the public key."""
    key = issuer.keys.current
    public_pem = key.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": key.kid}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(_claims(issuer)).encode()).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest())
    forged = (header + b"." + payload + b"." + signature.rstrip(b"=")).decode()
    with pytest.raises(TokenRejected):
        await validate(forged, TokenRules(metadata_urls=("entra",)), keys)


async def test_unsigned_tokens_only_pass_when_the_policy_allows_them(issuer, keys):
    unsigned = jwt.encode(_claims(issuer), None, algorithm="none")
    with pytest.raises(TokenRejected, match="not signed"):
        await validate(unsigned, TokenRules(metadata_urls=("entra",)), keys)
    await validate(unsigned, TokenRules(require_signed_tokens=False), keys)



async def test_a_token_checked_before_is_checked_in_full_again(issuer, keys):
    """Parsing and signatures are remembered; lifetime, audience and keys are checked on every call."""
    token = issuer.sign(_claims(issuer))
    rules = TokenRules(metadata_urls=("entra",))
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    await validate(token, rules, keys)
    with pytest.raises(TokenRejected) as expired:
        await validate(token, rules, keys, now=expires + 1)
    assert expired.value.reason == "TokenExpired"
    with pytest.raises(TokenRejected) as audience:
        await validate(token, TokenRules(metadata_urls=("entra",), audiences=("api://another",)), keys)
    assert audience.value.reason == "TokenAudienceNotAllowed"
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-8]}{'A' * 8 if signature[-8:] != 'A' * 8 else 'B' * 8}"
    with pytest.raises(TokenRejected) as forged:
        await validate(tampered, rules, keys)
    assert forged.value.reason in ("TokenSignatureInvalid", "JwtInvalid")
    await validate(token, rules, keys)


async def test_a_remembered_token_fails_once_its_key_is_no_longer_published(issuer, keys):
    token = issuer.sign(_claims(issuer))
    await validate(token, TokenRules(metadata_urls=("entra",)), keys)
    kid = jwt.get_unverified_header(token)["kid"]
    other = TokenIssuer(issuer.config).jwks()["keys"][0]  # another key, published under the same kid
    tenant = issuer.config.tenant_id
    rolled = StaticMetadataSource({"entra": OpenIdMetadata(issuer=v2_issuer(tenant), keys=({**other, "kid": kid},))})
    with pytest.raises(TokenRejected) as rejected:
        await validate(token, TokenRules(metadata_urls=("entra",)), rolled)
    assert rejected.value.reason == "TokenSignatureInvalid"
    gone = StaticMetadataSource({"entra": OpenIdMetadata(issuer=v2_issuer(tenant), keys=())})
    with pytest.raises(TokenRejected) as missing:
        await validate(token, TokenRules(metadata_urls=("entra",)), gone)
    assert missing.value.reason == "TokenSignatureKeyNotFound"


# --- control flow and responses, run (the sample backend's policy uses all of them) --------------

CONTROL_FLOW = """<policies>
<inbound>
    <set-variable name="orders" value="listed" />
    <choose>
        <when condition='@(context.Operation.Id == "list-orders")'>
            <return-response>
                <set-status code="418" reason="Short and stout" />
                <set-header name="X-Answer" exists-action="override"><value>from return-response</value></set-header>
                <set-body>@((string)context.Variables["orders"])</set-body>
            </return-response>
        </when>
        <when condition='@(context.Operation.Id == "get-status")'>
            <set-body>replaced</set-body>
        </when>
        <otherwise>
            <return-response><set-status code="202" reason="Accepted" /></return-response>
        </otherwise>
    </choose>
</inbound>
<backend><forward-request /></backend>
<outbound><set-header name="X-Outbound" exists-action="override"><value>ran</value></set-header></outbound>
<on-error />
</policies>"""


@pytest.fixture
def control_flow_policies(tmp_path) -> Path:
    return _with_global_policy(tmp_path, CONTROL_FLOW)


async def test_return_response_answers_and_ends_the_pipeline(devstack, control, control_flow_policies):
    status, reason, headers, body = await _through_another_gateway(devstack.state, control_flow_policies,
                                                                   "GET", "/orders")
    assert (status, reason, body) == (418, "Short and stout", b"listed")
    assert headers["X-Answer"] == "from return-response"
    assert "X-Outbound" not in headers  # outbound did not run
    assert control.backend_requests() == []  # nor did forward-request


async def test_choose_runs_the_first_true_when_and_set_body_sets_the_request(devstack, control,
                                                                             control_flow_policies):
    status, _, headers, _ = await _through_another_gateway(devstack.state, control_flow_policies, "GET", "/status")
    assert status == 200 and headers["X-Outbound"] == "ran"
    [received] = control.backend_requests()
    assert received["body"] == "replaced"


async def test_choose_runs_otherwise_when_no_condition_holds(devstack, control, control_flow_policies):
    status, reason, _, body = await _through_another_gateway(devstack.state, control_flow_policies, "POST",
                                                             "/orders", json={"item": "x", "quantity": 1})
    assert (status, reason, body) == (202, "Accepted", b"")
    assert control.backend_requests() == []


async def test_a_failing_expression_is_apims_500(devstack, control, tmp_path):
    policy_dir = _with_global_policy(tmp_path,  # reads a variable nothing set
        "<policies><inbound><set-body>@((string)context.Variables[\"nothing\"])</set-body></inbound>"
        "<backend><forward-request /></backend><outbound /><on-error /></policies>")
    status, _, _, body = await _through_another_gateway(devstack.state, policy_dir, "GET", "/status")
    assert status == 500 and json.loads(body)["activityId"]
    assert control.backend_requests() == []


@pytest.mark.parametrize(("ignore_error", "expected"), [("true", 200), ("false", 500)])
async def test_a_managed_identity_token_entra_refuses_fails_unless_ignored(devstack, control, tmp_path,
                                                                          ignore_error, expected):
    apim_client_id = devstack.state.config.apim_identity.client_id
    policy_dir = _with_global_policy(tmp_path,  # a resource the tenant does not have
        f'<policies><inbound><authentication-managed-identity resource="api://no-such-app" '
        f'client-id="{apim_client_id}" ignore-error="{ignore_error}" output-token-variable-name="unused" />'
        "</inbound><backend><forward-request /></backend><outbound /><on-error /></policies>")
    status, _, _, _ = await _through_another_gateway(devstack.state, policy_dir, "GET", "/status")
    assert status == expected
    assert len(control.backend_requests()) == (1 if expected == 200 else 0)


async def test_a_request_that_cannot_be_parsed_logs_no_token_or_key(devstack, caplog):
    # aiohttp's parser error quotes the offending header line whole; the stand-ins log its kind only.
    host, port = devstack.endpoints["apim_gateway_url"].removeprefix("http://").split(":")
    secret_token = "eyJ-not-a-real-token-" + "x" * 20
    key = devstack.endpoints["subscription_key"]
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        for header in (f"Authorization: Bearer {secret_token}\x01", f"Ocp-Apim-Subscription-Key: {key}\x01"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /orders/status HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode("latin-1"))
            await writer.drain()
            assert b" 400 " in (await reader.read(65536)).split(b"\r\n", 1)[0]
            writer.close()
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "could not be parsed" in logged
    assert secret_token not in logged and key not in logged
