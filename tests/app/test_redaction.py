"""shared.redaction: what is scrubbed from text we did not write, and what is kept."""

from __future__ import annotations

import logging

import pytest

from shared.redaction import REDACTED, RedactingFilter, redact_library_logs, scrub

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


def test_the_filter_scrubs_message_arguments_and_tracebacks():
    record = logging.LogRecord("azure.identity.x", logging.WARNING, __file__, 1, "failed: %s", (f"key {KEY}",), None)
    try:
        raise ValueError(f"Content: {JWT}")
    except ValueError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)

    assert RedactingFilter().filter(record)

    text = logging.Formatter().format(record)
    assert KEY not in text and JWT not in text
    assert f"failed: key {REDACTED}" in text and f"ValueError: Content: {REDACTED}" in text


def test_every_library_logger_gets_one_filter_with_the_current_secrets():
    child = logging.getLogger("azure.identity.test_redaction_child")
    redact_library_logs(["first-secret-1"])
    redact_library_logs(["second-secret"])

    filters = [f for f in child.filters if isinstance(f, RedactingFilter)]
    assert len(filters) == 1 and filters[0].secrets == ("second-secret",)
    assert any(isinstance(f, RedactingFilter) for f in logging.getLogger("azure.core").filters)
