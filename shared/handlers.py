"""What each trigger does, for one API connection (None: the default one). `blueprint` wires triggers to these."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from . import telemetry
from .errors import AppError, BadRequest, BodyTooLarge, ConfigurationError, UnexpectedError, UpstreamError
from .paths import without_function_key
from .runtime import get_runtime, settings_or_error
from .settings import routes
from .tokens import token_report

__all__ = ["MAX_BODY_BYTES", "forward", "health", "scheduled_call"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_HEADER_TEXT = re.compile(r"[\t\x20-\x7e]*")  # a media type is ASCII by its grammar (RFC 9110)


async def forward(req: func.HttpRequest, context: func.Context | None = None,
                  connection: str | None = None) -> func.HttpResponse:
    """Forward the call under the proxy's route to the same path under the connection's APIM_BASE_URL."""
    with telemetry.invocation(context):
        try:
            body, content_type = _request_body(req)
            response = await get_runtime(connection).client.call(
                req.method, req.route_params.get("path", ""), query=without_function_key(urlsplit(req.url).query),
                body=body, content_type=content_type)
        except Exception as exc:
            return _error_response(exc, f"{req.method} /api/{routes(connection)['proxy']}")
        content_type = response.content_type or "application/octet-stream"
        return func.HttpResponse(body=response.body, status_code=response.status,
                                 headers={**response.headers, "Content-Type": content_type},
                                 mimetype=content_type.split(";")[0].strip())


async def health(req: func.HttpRequest, context: func.Context | None = None,
                 connection: str | None = None) -> func.HttpResponse:
    """Configuration status; with ?probe=token, also a token's non-secret claims and age."""
    with telemetry.invocation(context):
        settings = settings_or_error(connection)
        if isinstance(settings, ConfigurationError):
            return _json({"status": "misconfigured", **settings.to_json()}, 503)
        report: dict[str, Any] = {"status": "ok", "settings": settings.summary(), "telemetry": telemetry.configure()}
        if telemetry.problem():
            report["telemetry_problem"] = telemetry.problem()
        if req.params.get("probe") == "token":
            try:
                token = await get_runtime(connection).token_source("GET").get()
                report["token"] = token_report(token)
            except Exception as exc:
                return _error_response(exc, "health token probe")
        return _json(report, 200)


async def scheduled_call(timer: func.TimerRequest, context: func.Context | None = None,
                         connection: str | None = None) -> None:
    """GET TIMER_API_PATH; any answer but a 2xx fails the invocation, so it shows as failed in App Insights."""
    with telemetry.invocation(context):
        if timer.past_due:
            logger.warning("Timer is past due: this run is late (the app was stopped or busy).")
        runtime = get_runtime(connection)
        target = runtime.settings.timer()
        started = time.perf_counter()
        try:
            response = await runtime.client.call("GET", target.path, query=target.query)
            if not 200 <= response.status < 300:
                # The API's own 4xx (a 404 for a wrong path, say) is passed back to a caller as it is; the
                # timer has no caller to look at it, so it is a failure like a 5xx.
                name = runtime.settings.name("TIMER_API_PATH")
                raise UpstreamError(f"The scheduled call GET {target} answered {response.status}, not a success.",
                                    status=response.status,
                                    hint=f"Check {name} (a path under the API that answers GET with 2xx).")
        except AppError as error:
            logger.error("Scheduled call GET %s failed: %s", target, error)
            raise
        logger.info("Scheduled call GET %s answered %s in %.0f ms (%d bytes).", target, response.status,
                    (time.perf_counter() - started) * 1000, len(response.body))


def _request_body(req: func.HttpRequest) -> tuple[bytes | None, str | None]:
    body = req.get_body() or None
    if body is None:
        if req.method.upper() in _BODY_METHODS and _is_json(req.headers.get("Content-Type") or ""):
            raise BadRequest("The request body is empty, but its Content-Type says JSON: send a JSON value "
                               "(e.g. {}), or no Content-Type.")
        return None, None
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB.")
    content_type = req.headers.get("Content-Type")
    if content_type and not _HEADER_TEXT.fullmatch(content_type):
        # It is sent on to APIM as a header: CR/LF could split it (header injection).
        raise BadRequest("The Content-Type header contains control or non-ASCII characters.")
    if content_type and _is_json(content_type):
        _check_json(body)
    return body, content_type


def _is_json(content_type: str) -> bool:
    """application/json, or a JSON-based type such as application/merge-patch+json (RFC 6839)."""
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == JSON or media_type.endswith("+json")


def _check_json(body: bytes) -> None:
    try:
        # RFC 8259 JSON between systems is UTF-8; json.loads(bytes) would also take UTF-16/32.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The request body is not JSON: JSON must be UTF-8 text (RFC 8259).") from None
    if text.startswith("\ufeff"):
        raise BadRequest("The request body starts with a byte order mark: send UTF-8 JSON without one.")
    try:
        # Numbers are checked, not converted: Python caps int() at 4300 digits, JSON does not.
        json.loads(text, parse_int=str, parse_float=str, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column "
                           f"{exc.colno}).") from None
    except ValueError as exc:  # from _not_json
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:  # json.loads gives up on deep nesting ("[[[[…") this way, not with ValueError
        raise BadRequest("The request body is JSON nested too deeply to check.") from None


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")  # Python accepts NaN and Infinity; JSON (RFC 8259) does not


def _error_response(exc: BaseException, what: str) -> func.HttpResponse:
    error = exc if isinstance(exc, AppError) else UnexpectedError(cause=type(exc))
    if isinstance(error, UnexpectedError):  # not one we anticipated: log its type, never its text
        logger.error("%s failed with an unexpected %s.", what, error.cause_type)
    else:
        logger.warning("%s failed: %s", what, error)
    return _json(error.to_json(), error.status, error.headers)


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers, mimetype=JSON)
