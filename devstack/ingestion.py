"""Application Insights ingestion ("Breeze"): what `azure-monitor-opentelemetry` sends to.

- `POST /v2.1/track` (and the older `/v2/track`): a JSON array of telemetry
  envelopes, or newline-delimited JSON (`application/x-json-stream`), optionally
  gzip-encoded (aiohttp undoes `Content-Encoding: gzip` before we read the body).
  Answers like the real endpoint: 200 when every item is accepted, 206 with an
  error per rejected item, and, when no item is accepted, the first item's status.
- `POST /QuickPulseService.svc/ping|post`: Live Metrics, which the distro turns
  on by default. We answer "nobody is watching", so the SDK keeps pinging at its
  slow rate and never streams.

The connection string's `IngestionEndpoint` ends with `/` as Azure's do, so the
exporter asks for `//v2.1/track`; the routes accept either form.

Authentication, as infra/ deploys Application Insights (`DisableLocalAuth: true`):
a track request needs `Authorization: Bearer` with a token from the stand-in's
Entra for `https://monitor.azure.com` (401 otherwise), and the token's identity
must hold Monitoring Metrics Publisher in the stack's configuration (403
otherwise). With local auth enabled (`ingestion.local_auth`), a request without a
token is accepted, and one with a token is still checked: ingestion then answers
403 to an identity without the role (microsoft/ApplicationInsights-dotnet#2795).
Refused items are counted (`ingestion.refused_items`, `refused_by_reason`), never stored.

Accepted envelopes land in `state.telemetry` (`GET {control_url}/telemetry`).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web

from devstack.entra import MONITOR_RESOURCE, v1_issuer, v2_issuer
from devstack.faults import fault_middleware
from devstack.state import StackState

STATE = web.AppKey("state", StackState)

MAX_AGE = timedelta(hours=48)  # Breeze rejects items older than this
MAX_BODY_BYTES = 64 * 1024 * 1024  # aiohttp's 1 MiB default is smaller than a full exporter batch
NDJSON = "application/x-json-stream"
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
TRACK_ROUTES = ("/{slash:/?}v2.1/track", "/{slash:/?}v2/track")
LIVE_ROUTES = ("/{slash:/?}QuickPulseService.svc/ping", "/{slash:/?}QuickPulseService.svc/post")


# The Azure role that lets an identity send telemetry (infra/modules/rbac.bicep assigns it).
PUBLISHER_ROLE = "Monitoring Metrics Publisher"


class UnreadableBody(ValueError):
    """The request body is not JSON or newline-delimited JSON."""


def parse_items(body: bytes, content_type: str) -> list[Any]:
    """The telemetry items in a track request body."""
    try:
        text = body.decode("utf-8")
        if content_type == NDJSON:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableBody(f"Invalid payload: {exc}") from None
    return document if isinstance(document, list) else [document]


def _missing(field: str, type_name: str, value: Any) -> str:
    actual = "undefined" if value is None else type(value).__name__
    return f"Field '{field}' on type '{type_name}' is required but missing or empty. Expected: string, Actual: {actual}"


def envelope_problem(item: Any, now: datetime) -> str | None:
    """Why Breeze would reject this envelope, in its words; None if it is acceptable."""
    if not isinstance(item, dict):
        return "Telemetry item is not a JSON object."
    for field in ("name", "time"):
        if not isinstance(item.get(field), str) or not item[field]:
            return _missing(field, "Envelope", item.get(field))
    try:
        sent = datetime.fromisoformat(item["time"])
    except ValueError:
        return f"Field 'time' on type 'Envelope' is not a valid date: '{item['time']}'."
    age = now - (sent if sent.tzinfo else sent.replace(tzinfo=UTC))
    if age > MAX_AGE:
        limit_ms, age_ms = int(MAX_AGE.total_seconds() * 1000), int(age.total_seconds() * 1000)
        return (f"Field 'time' on type 'Envelope' is older than the allowed min date. "
                f"Expected: now - {limit_ms}ms, Actual: now - {age_ms}ms")
    if not isinstance(item.get("iKey"), str) or not GUID.match(item["iKey"]):
        return "Invalid instrumentation key"
    data = item.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("baseType"), str) or not data["baseType"]:
        return _missing("baseType", "Data", data.get("baseType") if isinstance(data, dict) else None)
    if not isinstance(data.get("baseData"), dict):
        return "Field 'baseData' on type 'Data' is required but missing or empty. Expected: object, Actual: undefined"
    return None


def track_response(received: int, errors: list[dict[str, Any]]) -> web.Response:
    """The TrackResponse body and status for a batch with these per-item errors."""
    accepted = received - len(errors)
    if not errors:
        status = 200
    elif accepted > 0:
        status = 206
    else:
        status = errors[0]["statusCode"]  # nothing accepted: the first item's status
    body = {"itemsReceived": received, "itemsAccepted": accepted, "errors": errors}
    return web.json_response(body, status=status)


def unreadable_response(message: str) -> web.Response:
    body = {"itemsReceived": 0, "itemsAccepted": 0, "errors": [{"index": 0, "statusCode": 400, "message": message}]}
    return web.json_response(body, status=400)


def injected_error(status: int) -> dict[str, Any]:
    """A fault's body, shaped like Breeze's TrackResponse so the exporter can read it."""
    return {"itemsReceived": 0, "itemsAccepted": 0,
            "errors": [{"index": 0, "statusCode": status, "message": "Injected fault"}]}


class Refused(Exception):
    """A track request ingestion does not accept from this caller: 401 or 403."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_caller(state: StackState, token: str | None) -> None:
    """Raise Refused unless the caller may send telemetry (see the module docstring)."""
    if token is None:
        if state.config.ingestion_local_auth:
            return
        raise Refused(401, "unauthenticated", "Authorization is required: this Application Insights resource "
                      "accepts only Microsoft Entra authenticated telemetry (local authentication is disabled).")
    claims = _verified_claims(state, token)
    if claims is None:
        raise Refused(401, "invalid_token", "The access token is invalid, expired, or not issued for "
                      f"{MONITOR_RESOURCE}.")
    identity = next((i for i in state.config.identities.values()
                     if i.principal_id.lower() == str(claims.get("oid", "")).lower()), None)
    if identity is None or PUBLISHER_ROLE not in identity.azure_roles:
        raise Refused(403, "forbidden", f"The identity {claims.get('oid')} does not hold the {PUBLISHER_ROLE} "
                      "role on this Application Insights resource.")


def _verified_claims(state: StackState, token: str) -> dict[str, Any] | None:
    """The token's claims if the stand-in's Entra signed it for the monitor resource and it is valid."""
    tenant = state.config.tenant_id
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = next((k for k in state.issuer.keys.published if k.kid == kid), None)
        if key is None:
            return None
        claims = jwt.decode(token, key.private_key.public_key(), algorithms=["RS256"],
                            audience=[MONITOR_RESOURCE, MONITOR_RESOURCE + "/"],
                            issuer=[v1_issuer(tenant), v2_issuer(tenant)])
    except jwt.PyJWTError:
        return None
    return claims


def refused_response(refused: Refused, received: int) -> web.Response:
    """A TrackResponse in which every item carries the refusal's status."""
    errors = [{"index": i, "statusCode": refused.status, "message": refused.message} for i in range(max(received, 1))]
    return web.json_response({"itemsReceived": received, "itemsAccepted": 0, "errors": errors},
                             status=refused.status)


def _count_items(body: bytes, content_type: str) -> int:
    try:
        return len(parse_items(body, content_type))
    except UnreadableBody:
        return 0


async def track(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.read()
    try:
        check_caller(state, _bearer_token(request))
    except Refused as refused:
        received = _count_items(body, request.content_type)
        state.stats.count("ingestion", "refused_requests")
        state.stats.count("ingestion", "refused_items", amount=received)
        state.stats.count("ingestion", "refused_by_reason", refused.reason, amount=received)
        return refused_response(refused, received)
    try:
        items = parse_items(body, request.content_type)
    except UnreadableBody as exc:
        return unreadable_response(str(exc))
    now = datetime.now(UTC)
    errors = []
    for index, item in enumerate(items):
        problem = envelope_problem(item, now)
        if problem:
            errors.append({"index": index, "statusCode": 400, "message": problem})
            continue
        state.telemetry.append(item)
        state.stats.count("ingestion", "by_type", item["data"]["baseType"])
    state.stats.count("ingestion", "items", amount=len(items) - len(errors))
    if errors:
        state.stats.count("ingestion", "rejected", amount=len(errors))
    return track_response(len(items), errors)


async def live_metrics(request: web.Request) -> web.Response:
    request.app[STATE].stats.count("ingestion", "live_metrics_requests")
    # An empty CollectionConfigurationInfo and "not subscribed": no one is watching.
    body = {"ETag": "", "Metrics": [], "DocumentStreams": []}
    return web.json_response(body, headers={"x-ms-qps-subscribed": "false"})


def is_track(request: web.Request) -> bool:
    """Faults and request counts are about telemetry uploads, not Live Metrics pings
    (those arrive on the SDK's own timer and would eat a fault meant for telemetry)."""
    return request.path.endswith("/track")


@web.middleware
async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    if is_track(request):
        request.app[STATE].stats.count("ingestion", "requests")
    return await handler(request)


def create_app(state: StackState) -> web.Application:
    faults = fault_middleware("ingestion", state.faults, error_body=injected_error, applies_to=is_track)
    app = web.Application(middlewares=[count_requests, faults], client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    for path in TRACK_ROUTES:
        app.router.add_post(path, track)
    for path in LIVE_ROUTES:
        app.router.add_post(path, live_metrics)
    return app
