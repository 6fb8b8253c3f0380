"""Take secrets out of text we did not write before it reaches a caller, a log line or telemetry.

APIM's and the backend's error messages are worth passing on ("Invalid JWT.",
"Access denied due to missing subscription key"), but a backend may echo what
it was sent, headers included. So their text is scrubbed of the secrets we
know (the subscription keys, the access tokens we hold, IDENTITY_HEADER), of
anything shaped like a JWT, and of long opaque strings, which is what keys and
token parts look like. `known_secrets` is every key and token the process holds;
`redact_library_logs` puts the log records of the libraries that handle them
(and this package's own) through the same redaction.
"""

from __future__ import annotations

import base64
import bisect
import functools
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, AnyStr, Generic, TypeVar

__all__ = ["LIBRARY_LOGGERS", "REDACTED", "KnownSecrets", "known_secrets", "redact_exact", "redact_library_logs",
           "redact_log_text", "redact_query", "scrub"]

REDACTED = "[redacted]"
# Shorter secrets are not looked for: they would turn up in the API's own words ("orders"), and guessing
# one is easy anyway. APIM's subscription keys are 32 characters; tokens and IDENTITY_HEADER are longer.
MIN_SECRET_LENGTH = 8
QUERY_REDACTED = "REDACTED"  # a query value in a URL shown (OpenTelemetry's convention for url.full)
_Needle = TypeVar("_Needle", str, bytes)
_Extra = TypeVar("_Extra")
_REDACTED_BYTES = REDACTED.encode()
# The loggers (and their children) whose records are redacted: the libraries that handle our secrets
# and log what they were answered (the exporter's own credential and ingestion included)...
LIBRARY_LOGGERS = frozenset({"azure", "msal", "aiohttp", "opentelemetry"})
# ...and this package's, of the secrets we hold only: its messages are ours, and paths in them must stay as they are.
PACKAGE_LOGGER = __package__ or __name__.rpartition(".")[0]
_PACKAGE_PREFIX = PACKAGE_LOGGER + "."
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
    known = [s for s in (*secrets, *(os.environ.get(name) for name in _PLATFORM_SECRETS))
             if s and len(s) >= MIN_SECRET_LENGTH]
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _JWT.sub(REDACTED, text)
    return _OPAQUE.sub(_redact_if_opaque, text)


class KnownSecrets:
    """The subscription keys and access tokens this process holds, for redacting whatever comes back.

    An answer may echo any of them, not only what its own request carried: an API's
    audit endpoint shows a writer's token to a reader, a resend's answer the token
    refused a moment ago. A token is kept until it expires (at most MAX_TOKENS of them:
    beyond, the one that expires first goes). Read from any thread; changed from the event loop's.
    """

    MAX_TOKENS = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, None] = {}
        self._tokens: dict[str, float] = {}  # token: expires_on, oldest first
        self._current: tuple[str, ...] = ()

    def current(self) -> tuple[str, ...]:
        """The secrets held now: the same tuple until one is added (redact_exact's forms are made once for it)."""
        return self._current

    def add_key(self, key: str | None) -> None:
        if key:
            with self._lock:
                if key not in self._keys:
                    self._keys[key] = None
                    self._publish()

    def add_token(self, token: str, expires_on: float) -> None:
        with self._lock:
            if token in self._tokens:
                return
            now = time.time()
            self._tokens = {held: ends for held, ends in self._tokens.items() if ends > now}
            self._tokens[token] = expires_on
            while len(self._tokens) > self.MAX_TOKENS:  # the one that expires first: the least likely in use
                del self._tokens[min(self._tokens, key=self._tokens.__getitem__)]
            self._publish()

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()
            self._tokens.clear()
            self._publish()

    def _publish(self) -> None:
        self._current = (*self._keys, *self._tokens)


known_secrets = KnownSecrets()


def redact_query(url: str) -> str:
    """`url` with each query value replaced by REDACTED (names kept: they say what was asked)."""
    base, mark, query = url.partition("?")
    if not mark:
        return url  # the common case, and no parsing for it
    fields = (field.partition("=") for field in query.split("&") if field)
    return base + "?" + "&".join(f"{name}={QUERY_REDACTED}" if equals else name for name, equals, _ in fields)


def redact_exact(data: AnyStr, secrets: Iterable[str | None]) -> AnyStr:
    """`data` with each of `secrets` replaced by [redacted], as text or in an encoding an echo would use.

    For what the upstream answers, which goes back to the caller as it is: unlike `scrub`
    it changes nothing but the secrets we hold. Each secret is looked for as it is, in the
    other letter case if it has one case only (a hex key), percent-encoded byte by byte and
    in base64 (either alphabet, at any alignment: the header `Bearer <token>` encoded, say);
    a token's signature on its own too (a token shown in parts); in bytes, each of those in
    UTF-8 and UTF-16 (a body in that charset). A clean answer is not copied. Not found: base64
    broken into lines (MIME's 76 characters a line), UTF-32 (which the web does not use, and whose
    forms would take four times the memory).
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
    texts = {form for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH
             for part in _parts(secret) for form in _text_forms(part)}
    replacements = {text.encode("utf-8", "surrogateescape"): _REDACTED_BYTES for text in texts}
    for codec in ("utf-16-le", "utf-16-be"):  # replaced in the body's own encoding
        replacements |= {text.encode(codec, "surrogatepass"): REDACTED.encode(codec) for text in texts}
    by_marker: dict[int | None, list[tuple[bytes, tuple[str, bytes]]]] = {}
    for needle, replacement in replacements.items():
        marker = _NUL if _NUL in needle else _PERCENT if _PERCENT in needle else None
        by_marker.setdefault(marker, []).append((needle, (needle.decode("latin-1"), replacement)))
    return _Forms(texts=_Needles.of((text, None) for text in texts),
                  encoded=tuple((marker, _Needles.of(forms)) for marker, forms in by_marker.items()))


def _parts(secret: str) -> tuple[str, ...]:
    """The secret, and a JWT's signature on its own: the part that makes the token usable, shown apart."""
    head, dot, signature = secret.rpartition(".")
    if dot and head.startswith("eyJ") and len(signature) >= _MIN_BASE64_RUN:
        return secret, signature
    return (secret,)


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


def _platform_secrets() -> tuple[str, ...]:
    return tuple(value for name in _PLATFORM_SECRETS if (value := os.environ.get(name)))


def redact_log_text(text: str) -> str:
    """`text` with every secret we hold (in each form `redact_exact` knows) and every secret shape scrubbed."""
    return scrub(_redact_held(text), known_secrets.current())


def _redact_held(text: str) -> str:
    # Two look-ups, not one of both: the held secrets' forms are the ones every answer is redacted with.
    return redact_exact(redact_exact(text, known_secrets.current()), _platform_secrets())


def _redact_record(record: logging.LogRecord, redact: Callable[[str], str]) -> None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the message: logging would print them, unredacted
        message = f"{record.msg} (its arguments did not format and are left out)"
    redacted = redact(message)
    if redacted != message or record.args:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info))
        redacted = redact(text)
        if redacted != text:
            # Formatters print exc_text when it is set; OpenTelemetry's handler reads exc_info, so it gets a twin.
            record.exc_text = redacted.rstrip()
            record.exc_info = _redacted_exc_info(record.exc_info[1], redact)


def _redacted_exc_info(exc: BaseException, redact: Callable[[str], str]) -> tuple[type[BaseException],
                                                                                   BaseException, Any]:
    """A stand-in for `exc` that App Insights still shows as an exception of its type, at the same frames, with
    its message redacted and without its chain (a library's own exceptions may quote what it was answered)."""
    kind = type(exc)
    twin: type[BaseException] = type(kind.__name__, (Exception,), {"__module__": kind.__module__,
                                                                   "__qualname__": kind.__qualname__})
    stand_in = twin(redact(str(exc)))
    return twin, stand_in.with_traceback(exc.__traceback__), exc.__traceback__


_install_lock = threading.Lock()
_installed = False


def redact_library_logs() -> None:
    """Redact every log record of LIBRARY_LOGGERS and PACKAGE_LOGGER (and their children) as it is made.

    A log record factory, not filters on loggers: a logger's filter does not see its children's
    records, and libraries create their loggers as their modules are imported, some only at the
    first token request. azure-identity logs a failed token request with the exception's text, to
    which azure-core appends the answer: an identity endpoint that echoed its request would put
    IDENTITY_HEADER in a warning that the Functions host ships to App Insights. Once per process.
    """
    global _installed
    with _install_lock:
        if not _installed:
            logging.setLogRecordFactory(_redacting(logging.getLogRecordFactory()))
            _installed = True


def _redacting(make_record: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def redacting_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        name = record.name
        if name.partition(".")[0] in LIBRARY_LOGGERS:
            _redact_record(record, redact_log_text)
        elif name.startswith(_PACKAGE_PREFIX) or name == PACKAGE_LOGGER:
            _redact_record(record, _redact_held)
        return record

    return redacting_record_factory
