"""Contract tests: the stand-ins' wire formats pinned to facts from Microsoft's documentation
and published SDK captures, one test per protocol. Each fact names its source; the values
are restated, not copied. Where a source shows only a shape (a redacted token, an example
time), the test checks the shape and the relations, not the example's numbers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jwt
import requests

from tests.devstack.conftest import ingestion_session

RESOURCE = "https://management.azure.com"  # the resource the SDK captures below ask for


def _decoded(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def test_app_service_managed_identity_protocol(endpoints, control):
    # Source: Azure/azure-sdk-for-python, sdk/identity/azure-identity/tests/recordings/
    # test_app_service.test_user_assigned.yaml (api-version 2019-08-01): a 200 whose JSON body has
    # exactly access_token, expires_on (epoch seconds as a string), resource (as requested),
    # token_type "Bearer" and client_id; there is no not_before.
    reader = endpoints["identities"]["reader"]["client_id"]
    response = requests.get(endpoints["identity_endpoint"], timeout=5,
                            params={"api-version": "2019-08-01", "resource": RESOURCE, "client_id": reader},
                            headers={"X-IDENTITY-HEADER": endpoints["identity_header"]})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str) and body["expires_on"].isdigit()
    assert (body["resource"], body["token_type"], body["client_id"]) == (RESOURCE, "Bearer", reader)


def test_imds_managed_identity_protocol(endpoints, control):
    url = endpoints["imds_endpoint"] + "/metadata/identity/oauth2/token"
    query = {"api-version": "2018-02-01", "resource": RESOURCE,
             "client_id": endpoints["identities"]["reader"]["client_id"]}
    # Source: azure-identity recording test_imds_credential.pyTestImdstest_user_assigned.json: without
    # the Metadata header IMDS answers 400 {"error": "invalid_request", "error_description":
    # "Required metadata header not specified"}.
    probe = requests.get(url, params=query, timeout=5)
    assert probe.status_code == 400
    assert probe.json() == {"error": "invalid_request", "error_description": "Required metadata header not specified"}

    # Same recording: with Metadata: true a 200 whose every value is a string: access_token,
    # client_id, expires_in, expires_on, ext_expires_in, not_before, resource, token_type.
    response = requests.get(url, params=query, headers={"Metadata": "true"}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before",
                         "resource", "token_type"}
    assert all(isinstance(value, str) for value in body.values())
    header, claims = _decoded(body["access_token"])
    # Its token (v1, for ARM): exp - iat is 86700 s (24 h 5 min), nbf == iat == not_before, and
    # expires_in is below ext_expires_in because the platform served a token minted earlier.
    assert claims["exp"] - claims["iat"] == 86700
    assert claims["nbf"] == claims["iat"] == int(body["not_before"])
    assert int(body["expires_on"]) == claims["exp"]
    assert int(body["expires_in"]) <= int(body["ext_expires_in"])
    # Its header names the key twice (kid and x5t) in a v1 token; its claims include ver "1.0",
    # aud as the resource was requested, appid, appidacr "2", idtyp "app", oid == sub, tid, xms_mirid.
    assert header["alg"] == "RS256" and header["kid"] == header["x5t"]
    assert (claims["ver"], claims["aud"], claims["appidacr"], claims["idtyp"]) == ("1.0", RESOURCE, "2", "app")
    assert claims["oid"] == claims["sub"] and claims["tid"] == endpoints["tenant_id"] and claims["xms_mirid"]


def test_entra_discovery_and_signing_keys(endpoints):
    # Source: Microsoft Learn, "Signing key rollover in the Microsoft identity platform": the
    # OpenID configuration's jwks_uri lists several keys at a time, each an RSA key for signatures
    # with its certificate (x5c) and thumbprint (x5t, also its kid); validators pick the key by kid
    # and must not assume the first key or a single key. Entra's keys carry no alg.
    config = requests.get(endpoints["openid_config_url"], timeout=5).json()
    keys = requests.get(config["jwks_uri"], timeout=5).json()["keys"]
    assert len(keys) >= 2
    for key in keys:
        assert {"kty", "use", "kid", "x5t", "n", "e", "x5c"} <= set(key) and "alg" not in key
        assert (key["kty"], key["use"], key["kid"]) == ("RSA", "sig", key["x5t"])
        assert isinstance(key["x5c"], list) and key["x5c"]


async def test_application_insights_ingestion_protocol(devstack, endpoints, control):
    # Source: azure-monitor-opentelemetry-exporter, _generated/exporter/models TrackResponse and
    # TelemetryErrorDetails: the answer is {"itemsReceived": int, "itemsAccepted": int, "errors":
    # [{"index": int, "statusCode": int, "message": str}]}.
    item = {"name": "Microsoft.ApplicationInsights.Message", "time": datetime.now(UTC).isoformat(),
            "iKey": endpoints["connection_string"].split(";")[0].split("=")[1],
            "data": {"baseType": "MessageData", "baseData": {"ver": 2, "message": "contract"}}}
    body = json.dumps([item])
    # Source: MicrosoftDocs/azure-monitor-docs, app/azure-ad-authentication.md ("Token audience"):
    # the token is for https://monitor.azure.com; with local authentication disabled, ingestion
    # takes Entra-authenticated telemetry only. Source: the exporter's export/_base.py: it treats 401
    # (no or a bad token) and 403 (an identity without Monitoring Metrics Publisher) as retryable.
    for identity, status in ((None, 401), ("reader", 403), ("host", 200)):
        async with ingestion_session(devstack, identity) as session, \
                session.post(endpoints["ingestion_endpoint"] + "/v2.1/track", data=body,
                             headers={"Content-Type": "application/json"}) as response:
            answer = await response.json()
        assert response.status == status
        assert set(answer) >= {"itemsReceived", "itemsAccepted", "errors"}
        assert isinstance(answer["itemsReceived"], int) and isinstance(answer["itemsAccepted"], int)
        for error in answer["errors"]:
            assert set(error) >= {"index", "statusCode", "message"}


def test_apim_openid_metadata_cache():
    # Source: MicrosoftDocs/azure-docs#93033 (validate-jwt): APIM caches the OpenID configuration
    # and its keys for an hour. Microsoft.IdentityModel's ConfigurationManager, which refreshes on an
    # unknown kid, does so at most every 5 minutes by default (RefreshInterval); APIM does not
    # document its interval, so the README lists it among the known differences.
    from devstack.apim import openid
    from devstack.config import load_config

    assert openid.CACHE_SECONDS == 3600
    assert openid.MIN_REFRESH_SECONDS == load_config().openid_refetch_seconds == 300
