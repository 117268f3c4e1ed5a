"""What a bucket's gate reports when a presigned request may not go through, in the domain's terms.

The gates (exports' one-time download URLs, uploads' POST forms) raise subclasses of these; the store's
endpoints answer each with S3's error document once (`storage.routes.s3_error_for`), so no gate speaks
S3.
"""

from __future__ import annotations

from datetime import datetime

from datalab.domain_errors import DomainError, Expired, Forbidden, InvalidState, NotFound, Unauthenticated


class LinkRefused(Forbidden):
    """No permission behind this URL for this object (an unknown token, or another object's)."""

    code = "link_refused"


class _DeadLink(DomainError):
    """A one-time URL that no longer works, with its times (S3 answers both kinds as expired)."""

    def __init__(
        self, message: str, *, expires_at: datetime, issued_at: datetime, refused_at: datetime
    ) -> None:
        super().__init__(message)
        self.expires_at = expires_at
        self.issued_at = issued_at
        self.refused_at = refused_at


class LinkExpired(_DeadLink, Expired):
    """A one-time URL whose time is over."""

    code = "link_expired"


class LinkUsed(_DeadLink, InvalidState):
    """A one-time URL that was used already."""

    code = "link_used"


class ObjectMissing(NotFound):
    """The object a permission is for is not in the store."""

    code = "object_missing"

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class _FormTokenFailure(DomainError):
    """A POST form refused for its session token, which S3's error names."""

    def __init__(self, message: str, *, token: str) -> None:
        super().__init__(message)
        self.token = token


class FormTokenUnknown(_FormTokenFailure, Unauthenticated):
    """A POST form whose session token belongs to nothing."""

    code = "form_token_unknown"


class FormTokenExpired(_FormTokenFailure, Expired):
    """A POST form whose session token is past its life or was used already."""

    code = "form_token_expired"


# Everything a gate may refuse a request with, as the store's endpoints catch it.
GATE_FAILURES = (LinkRefused, LinkExpired, LinkUsed, ObjectMissing, FormTokenUnknown, FormTokenExpired)
