"""Take secrets out of text we did not write before it reaches a message, a log line or telemetry.

APIM's and the backend's error messages are worth passing on ("Invalid JWT.",
"Access denied due to missing subscription key"), but a backend may echo what
it was sent, headers included. So their text is scrubbed of the secrets we
know (the subscription key, IDENTITY_HEADER), of anything shaped like a JWT,
and of long opaque strings, which is what keys and token parts look like.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import traceback
from collections.abc import Iterable
from typing import AnyStr

__all__ = ["LIBRARY_LOGGERS", "REDACTED", "RedactingFilter", "redact_exact", "redact_library_logs", "scrub"]

REDACTED = "[redacted]"
_REDACTED_BYTES = REDACTED.encode()
# The libraries that handle our secrets and log what they were answered (see RedactingFilter).
LIBRARY_LOGGERS = ("azure.identity", "azure.core", "msal")
# App Service's managed-identity secret (IDENTITY_HEADER; MSI_SECRET in the 2017 protocol).
_PLATFORM_SECRETS = ("IDENTITY_HEADER", "MSI_SECRET")
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?")
# 32+ characters of base64/hex with no break: subscription keys (32 hex digits), token segments.
_OPAQUE = re.compile(r"[A-Za-z0-9+/=_-]{32,}")
# Kept: a GUID is an ID (tenant, client, correlation) that helps support, and a run without
# both letters and digits is a word or an error code ("OrderServiceTemporarilyUnavailable").
_GUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_LETTER, _DIGIT = re.compile(r"[A-Za-z]"), re.compile(r"[0-9]")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with known secrets, JWTs and long opaque strings replaced by [redacted]."""
    known = [s for s in (*secrets, *(os.environ.get(name) for name in _PLATFORM_SECRETS)) if s and len(s) >= 8]
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _JWT.sub(REDACTED, text)
    return _OPAQUE.sub(_redact_if_opaque, text)


def redact_exact(data: AnyStr, secrets: Iterable[str | None]) -> AnyStr:
    """`data` with each of `secrets` (exact values) replaced by [redacted].

    For what the upstream answers, which goes back to the caller as it is: unlike `scrub`
    it changes nothing but the secrets we sent. A substring test comes first, so a clean
    answer costs one scan per secret and no copy.
    """
    texts, encoded = _prepared(tuple(secrets))
    if isinstance(data, bytes):
        for needle in encoded:
            if needle in data:
                data = data.replace(needle, _REDACTED_BYTES)
        return data
    for text in texts:
        if text in data:
            data = data.replace(text, REDACTED)
    return data


# The same few secrets (this call's token, the key) redact every answer: sorted and encoded once, not per call.
@functools.lru_cache(maxsize=8)
def _prepared(secrets: tuple[str | None, ...]) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    texts = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))  # longest first: no partial leftovers
    return texts, tuple(text.encode("utf-8", "surrogateescape") for text in texts)


def _redact_if_opaque(match: re.Match[str]) -> str:
    run = match.group()
    if _GUID.fullmatch(run) or not (_LETTER.search(run) and _DIGIT.search(run)):
        return run
    return REDACTED


class RedactingFilter(logging.Filter):
    """Scrubs a library's log record (message and traceback) before any handler sees it.

    azure-identity logs a failed token request with the exception's text, and azure-core
    appends the response body to it: an identity endpoint that echoed its request would
    put IDENTITY_HEADER in a warning that the Functions host ships to App Insights.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub(message, self.secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters print exc_text when it is set; exc_info itself could be read by a handler.
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)), self.secrets).rstrip()
            record.exc_info = None
        return True


def redact_library_logs(secrets: Iterable[str | None] = (), prefixes: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Put a RedactingFilter for `secrets` on every logger under `prefixes` that exists now.

    A logger's filters do not apply to its children's records, so each one gets it; call
    this after the libraries are imported (their modules create their loggers then).
    A filter from an earlier call (other settings) is replaced.
    """
    redacting = RedactingFilter(secrets)
    for name in [*prefixes, *logging.Logger.manager.loggerDict]:
        if name.startswith(prefixes):
            logger = logging.getLogger(name)
            for old in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
                logger.removeFilter(old)
            logger.addFilter(redacting)
