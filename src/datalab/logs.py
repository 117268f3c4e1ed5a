"""Keeping secrets out of log lines."""

from __future__ import annotations

import re

# Query parameters of signed URLs whose values grant access: a logged URL must not be replayable.
_SECRET_QUERY = re.compile(
    r"(?i)((?:^|[?&])(?:x-amz-signature|x-amz-security-token|x-amz-credential|signature|awsaccesskeyid)=)[^&\s]*"
)


def redact_url(text: str) -> str:
    """The text with the values of signature-bearing query parameters replaced by '***'."""
    return _SECRET_QUERY.sub(r"\1***", text)
