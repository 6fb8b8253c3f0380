"""shared.redaction: what is scrubbed from text we did not write, and what is kept."""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import logging
import re
import sys
import time
import traceback
import tracemalloc
from urllib.parse import unquote

import pytest

from shared.redaction import REDACTED, KnownSecrets, known_secrets, redact_exact, redact_library_logs, scrub

KEY = "0123456789abcdef0123456789abcdef"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcGk6Ly94In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(("text", "expected"), [
    (f"Invalid subscription key {KEY}.", f"Invalid subscription key {REDACTED}."),
    (f"Authorization: Bearer {JWT}", f"Authorization: Bearer {REDACTED}"),
    ("signature c2lnbmF0dXJlLW9mLWEtdG9rZW4tMTIzNDU2Nzg5", f"signature {REDACTED}"),
    ("tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 not found", "tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 not found"),
    ("OrderProcessingServiceTemporarilyUnavailable", "OrderProcessingServiceTemporarilyUnavailable"),
    ("Access denied due to missing subscription key.", "Access denied due to missing subscription key."),
])
def test_scrub_removes_secret_shapes_and_keeps_ids_and_words(text, expected):
    assert scrub(text) == expected


def test_scrub_removes_known_secrets_of_any_shape(monkeypatch):
    monkeypatch.setenv("IDENTITY_HEADER", "b6f1e4a2-0c3d-4e5f-8a9b-1c2d3e4f5a6b")  # a GUID, but a secret
    assert scrub("header b6f1e4a2-0c3d-4e5f-8a9b-1c2d3e4f5a6b, key short-key-1") == \
        f"header {REDACTED}, key short-key-1"
    assert scrub("key short-key-1", ["short-key-1"]) == f"key {REDACTED}"


@pytest.fixture
def held_key():
    known_secrets.add_key(KEY)
    yield KEY
    known_secrets.clear()


def test_library_records_are_redacted_as_they_are_made_messages_arguments_and_tracebacks(held_key):
    redact_library_logs()
    try:
        raise ValueError(f"Content: {JWT}")
    except ValueError as exc:
        record = logging.getLogRecordFactory()("azure.identity.x", logging.WARNING, __file__, 1, "failed: %s",
                                               (f"key {held_key}",), (type(exc), exc, exc.__traceback__))

    text = logging.Formatter().format(record)
    assert held_key not in text and JWT not in text
    assert f"failed: key {REDACTED}" in text and f"ValueError: Content: {REDACTED}" in text


def test_an_exception_stays_an_exception_of_its_type_for_handlers_that_read_exc_info(held_key):
    redact_library_logs()
    make = logging.getLogRecordFactory()
    records = []
    for text in (f"echoed {held_key}", "nothing secret"):
        try:
            raise ConnectionError(text)
        except ConnectionError as exc:
            records.append(make("azure.core.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()))
            original = exc
    redacted, clean = records
    kind, value, tb = redacted.exc_info
    assert (kind.__name__, str(value), tb is not None) == ("ConnectionError", f"echoed {REDACTED}", True)
    assert held_key not in "".join(traceback.format_exception(*redacted.exc_info))
    assert "ConnectionError: echoed [redacted]" in logging.Formatter().format(redacted)
    assert clean.exc_info[1] is original  # nothing to take out: the record keeps its own exception


def test_the_tokens_that_expire_last_are_kept_when_there_are_too_many():
    secrets = KnownSecrets()
    secrets.add_token("token-in-use-for-a-day", time.time() + 86_400)
    for number in range(KnownSecrets.MAX_TOKENS + 4):
        secrets.add_token(f"token-of-an-hour-{number}", time.time() + 3600 + number)
    assert "token-in-use-for-a-day" in secrets.current() and len(secrets.current()) == KnownSecrets.MAX_TOKENS
    assert "token-of-an-hour-0" not in secrets.current()
    secrets.add_token("expired-token", time.time() - 1)
    secrets.add_token("another-token", time.time() + 60)
    assert "expired-token" not in secrets.current()


def test_a_logger_made_after_the_set_up_is_redacted_too_in_every_form_a_secret_may_take(held_key, caplog):
    redact_library_logs()
    redact_library_logs()  # once per process: a second call changes nothing
    percent = "".join(f"%{byte:02X}" for byte in held_key.encode())
    late = logging.getLogger("azure.monitor.opentelemetry.exporter.test_redaction_late")  # made just now
    with caplog.at_level(logging.INFO):
        late.error("Data drop 400: %s", f"echoed {percent} and {held_key.upper()} and {JWT}")
        logging.getLogger("someone.else").error("not ours: %s", held_key)  # the app's users' loggers are theirs

    [ours, theirs] = caplog.records
    assert ours.getMessage() == f"Data drop 400: echoed {REDACTED} and {REDACTED} and {REDACTED}"
    assert theirs.getMessage() == f"not ours: {held_key}"


# --- redact_exact: the secrets we sent, in the forms an API echoes them back in ----------------------

TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "eyJhdWQiOiJhcGk6Ly9jb250b3NvIn0" * 20 + ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


def _echoes() -> dict[str, str]:
    header = f"Bearer {TOKEN}"
    return {"token": TOKEN, "key": KEY, "key upper-case": KEY.upper(),
            "token percent-encoded": "".join(f"%{b:02X}" for b in TOKEN.encode()),
            "key percent-encoded, lower-case hex": "".join(f"%{b:02x}" for b in KEY.encode()),
            **{f"header in base64 after {n} bytes": base64.b64encode(b"x" * n + header.encode()).decode()
               for n in range(3)},
            "key and token in url-safe base64": base64.urlsafe_b64encode(f"k={KEY}&t={TOKEN}".encode()).decode()}


@pytest.mark.parametrize("codec", ["utf-8", "utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("form", list(_echoes()))
def test_an_echoed_secret_is_redacted_in_each_form_and_charset(codec, form):
    body = json.dumps({"echo": _echoes()[form], "ok": True}).encode(codec)
    redacted = redact_exact(body, (TOKEN, KEY)).decode(codec)  # still text in its own charset
    assert json.loads(redacted)["ok"] is True and REDACTED in redacted
    assert not _recoverable(redacted), redacted


def _recoverable(text: str) -> bool:
    """A secret in the text, or in what its base64 or percent-encoded parts decode to."""
    decoded = [text, unquote(text)]
    for run in re.findall(r"[A-Za-z0-9+/_=-]{16,}", text):
        for alphabet in (b"+/", b"-_"):
            with contextlib.suppress(ValueError):
                decoded.append(base64.b64decode(run + "=" * (-len(run) % 4), altchars=alphabet).decode("latin-1"))
    return any(piece in candidate for candidate in decoded for piece in (KEY, KEY.upper(), TOKEN[-30:]))


@pytest.mark.parametrize("size", [10, 5000, 2_000_000])
def test_a_clean_answer_comes_back_as_the_same_object_without_a_copy(size):
    body = json.dumps({"data": "x" * size}).encode()
    redact_exact(body, (TOKEN, KEY))  # the forms, made once
    # tracemalloc counts every allocation: no other thread runs meanwhile, and no collection runs finalizers
    # (an unclosed session's logs a warning, which is redacted, which allocates).
    switch = sys.getswitchinterval()
    sys.setswitchinterval(60)
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        assert redact_exact(body, (TOKEN, KEY)) is body
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.enable()
        sys.setswitchinterval(switch)
    assert peak < 64_000  # a Latin-1 view of a small answer at most, never a copy of a large one


def test_only_the_secrets_change():
    body = f'{{"id": 42, "note": "a % sign, a NUL \\u0000, and {KEY}"}}'.encode()
    assert redact_exact(body, (TOKEN, KEY)) == body.replace(KEY.encode(), REDACTED.encode())
