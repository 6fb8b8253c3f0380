"""What each trigger does. `function_app.py` only wires triggers to these."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared import telemetry
from shared.errors import AppError, BadRequest, BodyTooLarge, ConfigurationError, UnexpectedError
from shared.runtime import get_runtime, settings_or_error
from shared.tokens import token_report

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
_HEADER_TEXT = re.compile(r"[\t\x20-\x7e]*")  # a media type is ASCII by its grammar (RFC 9110)


async def forward(req: func.HttpRequest, context: func.Context | None = None) -> func.HttpResponse:
    """Forward the call under /api/apim/ to the same path under APIM_BASE_URL."""
    with telemetry.invocation(context):
        try:
            body, content_type = _request_body(req)
            response = await get_runtime().client.call(
                req.method, req.route_params.get("path", ""), query=urlsplit(req.url).query,
                body=body, content_type=content_type)
        except Exception as exc:
            return _error_response(exc, f"{req.method} /api/apim")
        content_type = response.content_type or "application/octet-stream"
        return func.HttpResponse(body=response.body, status_code=response.status,
                                 headers={**response.headers, "Content-Type": content_type},
                                 mimetype=content_type.split(";")[0].strip())


async def health(req: func.HttpRequest, context: func.Context | None = None) -> func.HttpResponse:
    """Configuration status; with ?probe=token, also a token's non-secret claims and age."""
    with telemetry.invocation(context):
        settings = settings_or_error()
        if isinstance(settings, ConfigurationError):
            return _json({"status": "misconfigured", **settings.to_json()}, 503)
        report: dict[str, Any] = {"status": "ok", "settings": settings.summary(), "telemetry": telemetry.configure()}
        if req.params.get("probe") == "token":
            try:
                token = await get_runtime().token_source("GET").get()
            except Exception as exc:
                return _error_response(exc, "health token probe")
            report["token"] = token_report(token)
        return _json(report, 200)


async def scheduled_call(timer: func.TimerRequest, context: func.Context | None = None) -> None:
    """GET TIMER_API_PATH; raising fails the invocation, so it shows as failed in App Insights."""
    with telemetry.invocation(context):
        if timer.past_due:
            logger.warning("Timer is past due: this run is late (the app was stopped or busy).")
        runtime = get_runtime()
        path = runtime.settings.timer_api_path
        if not path:
            raise ConfigurationError(["TIMER_API_PATH is not set: the path the timer calls, e.g. /status."])
        started = time.perf_counter()
        try:
            response = await runtime.client.call("GET", path)
        except AppError as error:
            logger.error("Scheduled call GET %s failed: %s", path, error)
            raise
        logger.info("Scheduled call GET %s answered %s in %.0f ms (%d bytes).", path, response.status,
                    (time.perf_counter() - started) * 1000, len(response.body))


def _request_body(req: func.HttpRequest) -> tuple[bytes | None, str | None]:
    body = req.get_body() or None
    if body is None:
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
        # Numbers are checked, not converted: Python caps int() at 4300 digits, JSON does not.
        json.loads(body, parse_int=str, parse_float=str, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column "
                           f"{exc.colno}).") from None
    except UnicodeDecodeError:
        raise BadRequest("The request body is not JSON: it is not UTF-8 (or UTF-16/32) text.") from None
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
