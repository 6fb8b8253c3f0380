"""Take secrets out of text we did not write before it reaches a message, a log line or telemetry.

APIM's and the backend's error messages are worth passing on ("Invalid JWT.",
"Access denied due to missing subscription key"), but a backend may echo what
it was sent, headers included. So their text is scrubbed of the secrets we
know (the subscription key, IDENTITY_HEADER), of anything shaped like a JWT,
and of long opaque strings, which is what keys and token parts look like.
"""

from __future__ import annotations

import base64
import bisect
import functools
import logging
import os
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import AnyStr, Generic, TypeVar

__all__ = ["LIBRARY_LOGGERS", "REDACTED", "RedactingFilter", "redact_exact", "redact_library_logs", "scrub"]

REDACTED = "[redacted]"
_Needle = TypeVar("_Needle", str, bytes)
_Extra = TypeVar("_Extra")
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
    """`data` with each of `secrets` replaced by [redacted], as text or in an encoding an echo would use.

    For what the upstream answers, which goes back to the caller as it is: unlike `scrub`
    it changes nothing but the secrets we sent. Each secret is looked for as it is, in the
    other letter case if it has one case only (a hex key), percent-encoded byte by byte and
    in base64 (either alphabet, at any alignment: the header `Bearer <token>` encoded, say);
    in bytes, each of those in UTF-8 and in UTF-16 (a body in that charset). A clean answer
    is not copied. Not found: base64 broken into lines (MIME's 76 characters a line).
    """
    forms = _prepared(tuple(secrets))
    if isinstance(data, bytes):
        return _redact_bytes(data, forms)
    for text, _ in forms.texts.within(len(data)):
        if text in data:
            data = data.replace(text, REDACTED)
    return data


# Up to this size an answer is searched as Latin-1 text, byte for byte the same: a str search costs
# a fraction of a bytes one, whose `in` first tries the needle as an integer (raising a TypeError inside).
# A larger answer is searched as it is, so that it is not copied.
_TEXT_VIEW_LIMIT = 4096
# A byte that an answer must have for some forms to be in it: '%' for the percent-encoded ones, and
# NUL for those in UTF-16 (of ASCII text). Looked for as ints: plain byte searches.
_PERCENT, _NUL = ord("%"), 0


def _redact_bytes(data: bytes, forms: _Forms) -> bytes:
    view = data.decode("latin-1") if len(data) <= _TEXT_VIEW_LIMIT else None
    for marker, needles in forms.encoded:
        if marker is not None and marker not in data:
            continue
        for needle, (as_text, replacement) in needles.within(len(data)):
            if (as_text in view) if view is not None else (data.find(needle) != -1):
                data = data.replace(needle, replacement)
    return data


@dataclass(frozen=True)
class _Needles(Generic[_Needle, _Extra]):
    """Forms to look for, longest first (a form that is part of another, a key inside a token say,
    must not break the other up), and their lengths, to skip those longer than what is searched."""

    forms: tuple[tuple[_Needle, _Extra], ...]
    sizes: tuple[int, ...]  # negated, so that they ascend for bisect

    @classmethod
    def of(cls, forms: Iterable[tuple[_Needle, _Extra]]) -> _Needles[_Needle, _Extra]:
        ordered = tuple(sorted(forms, key=lambda form: len(form[0]), reverse=True))
        return cls(ordered, tuple(-len(needle) for needle, _ in ordered))

    def within(self, size: int) -> tuple[tuple[_Needle, _Extra], ...]:
        return self.forms[bisect.bisect_left(self.sizes, -size):]


@dataclass(frozen=True)
class _Forms:
    texts: _Needles[str, None]
    # By the byte an answer must have for them (None: any answer): each in bytes, with itself as
    # Latin-1 text and what replaces it.
    encoded: tuple[tuple[int | None, _Needles[bytes, tuple[str, bytes]]], ...]


_MIN_BASE64_RUN = 16  # shorter runs of a secret's base64 could turn up by chance


# The same few secrets (this call's token, the key) redact every answer: their forms are made once, not per call.
@functools.lru_cache(maxsize=8)
def _prepared(secrets: tuple[str | None, ...]) -> _Forms:
    texts = {form for secret in secrets if secret for form in _text_forms(secret)}
    replacements = {text.encode("utf-8", "surrogateescape"): _REDACTED_BYTES for text in texts}
    for codec in ("utf-16-le", "utf-16-be"):  # replaced in the body's own encoding
        replacements |= {text.encode(codec, "surrogatepass"): REDACTED.encode(codec) for text in texts}
    by_marker: dict[int | None, list[tuple[bytes, tuple[str, bytes]]]] = {}
    for needle, replacement in replacements.items():
        marker = _NUL if _NUL in needle else _PERCENT if _PERCENT in needle else None
        by_marker.setdefault(marker, []).append((needle, (needle.decode("latin-1"), replacement)))
    return _Forms(texts=_Needles.of((text, None) for text in texts),
                  encoded=tuple((marker, _Needles.of(forms)) for marker, forms in by_marker.items()))


def _text_forms(secret: str) -> set[str]:
    raw = secret.encode("utf-8", "surrogateescape")
    percent = "".join(f"%{byte:02X}" for byte in raw)
    forms = {secret, percent, percent.lower()}
    if secret in (secret.lower(), secret.upper()):  # one case only (a hex key): the other case says the same
        forms |= {secret.lower(), secret.upper()}
    for skip in range(3):  # where the secret starts in a 3-byte group of whatever was encoded
        # Only the characters that come from the secret's bytes alone: whole groups, none shared.
        middle = base64.b64encode(b"\0" * skip + raw).decode()[4 if skip else 0:]
        middle = middle[:len(middle) - (4 if (skip + len(raw)) % 3 else 0)]
        if len(middle) >= _MIN_BASE64_RUN:
            forms |= {middle, middle.translate(_URLSAFE)}
    return forms


_URLSAFE = str.maketrans("+/", "-_")


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
