"""Signed URLs are redacted before they reach a log line."""

from __future__ import annotations

from datalab.logs import redact_url


def test_signature_token_and_credential_are_redacted() -> None:
    line = (
        "GET /datalab-exports/a/b.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026"
        "&X-Amz-Date=20261128T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok"
        "&X-Amz-Signature=abcdef HTTP/1.1"
    )
    redacted = redact_url(line)
    assert "abcdef" not in redacted and "tok&" not in redacted and "AKIA" not in redacted
    assert "X-Amz-Signature=*** HTTP/1.1" in redacted
    assert "X-Amz-Expires=60" in redacted


def test_sigv2_parameters_are_redacted() -> None:
    redacted = redact_url("/b/k?AWSAccessKeyId=AKIB&Expires=1617208732&Signature=87Xrs%2DE")
    assert redacted == "/b/k?AWSAccessKeyId=***&Expires=1617208732&Signature=***"
