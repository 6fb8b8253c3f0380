"""APIM's own error vocabulary: the refusal to start, policy failures and the error bodies.

The bodies copy what the real gateway sends, byte for byte where we could check it:
`{ "statusCode": 401, "message": "..." }` with a space inside the braces (the
Content-Length of real APIM 401 responses, 152 and 143 bytes, only fits that
layout), `Content-Type: application/json` without a charset.
"""

from __future__ import annotations

import json

from aiohttp import web

RESOURCE_NOT_FOUND = "Resource not found"
MISSING_SUBSCRIPTION_KEY = (
    "Access denied due to missing subscription key."
    " Make sure to include subscription key when making requests to an API."
)
INVALID_SUBSCRIPTION_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
)
INTERNAL_SERVER_ERROR = "Internal server error"


class PolicyError(ValueError):
    """The files under infra/apim use something the stand-in does not implement, or are malformed.

    Raised when the stand-in starts, listing every problem with its file, so that a
    security policy is never silently skipped.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        listing = "\n  - ".join(self.problems)
        super().__init__(f"the APIM stand-in refuses these policy files:\n  - {listing}")


class PolicyFailure(Exception):
    """A request failed inside the pipeline; APIM answers it and runs the on-error section.

    `reason` and `source` are what APIM exposes as context.LastError.Reason/.Source.
    """

    def __init__(self, status: int, message: str, *, reason: str, source: str,
                 with_activity_id: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.source = source
        self.with_activity_id = with_activity_id


def error_body(status: int, message: str, activity_id: str | None = None) -> bytes:
    """APIM's JSON error body, laid out as the gateway lays it out."""
    fields = {"statusCode": status, "message": message}
    if activity_id is not None:
        fields["activityId"] = activity_id  # only on 5xx errors the gateway raises itself
    return ("{ " + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items()) + " }").encode()


def error_response(status: int, message: str, *, activity_id: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message, activity_id),
                        headers={"Content-Type": "application/json", **(headers or {})})
