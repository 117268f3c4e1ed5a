"""The exceptions services raise: what went wrong in the domain's terms, with no transport in them.

A service says *what* failed (a kind: not found, invalid input, invalid state...) and *which* failure it
is (a stable ``code`` and a sentence for people). Each edge maps the kind once: the API to its JSON
envelope and an HTTP status (`errors.install_error_handlers`), the Data Center to a page or a message on
the form, the object store to S3's XML errors. Each domain package declares its own failures in its
``errors.py`` as subclasses of these kinds.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A failure a service reports to whoever called it.

    ``code`` is stable and machine-readable; ``message`` is a sentence for people; ``detail`` carries
    structured detail where there is some (a list of problems), else the message again.
    """

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.detail = message if detail is None else detail


class InvalidInput(DomainError):
    """What the caller sent cannot be used as it is (a bad parameter, file or mapping)."""

    code = "bad_request"


class Unprocessable(DomainError):
    """Understood, but not something this can do as it stands: values the domain's rules refuse (a mapping
    that does not fit the file, a URL deliveries cannot go to), or a thing whose status does not allow it
    where the API's clients expect that answer rather than a conflict."""

    code = "unprocessable"


class Unauthenticated(DomainError):
    """No valid credentials: a missing, wrong or expired token, key or password."""

    code = "unauthorized"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    code = "forbidden"


class NotFound(DomainError):
    """The thing asked for does not exist, or not for this caller."""

    code = "not_found"


class InvalidState(DomainError):
    """The thing exists but is not in a state that allows this (a finished upload, a used ticket...)."""

    code = "conflict"


class Expired(DomainError):
    """A ticket, link or token whose time is over."""

    code = "expired"


class TooLarge(DomainError):
    """More than the operation accepts."""

    code = "too_large"


class Throttled(DomainError):
    """Too many attempts: try again after ``retry_after`` seconds."""

    code = "throttled"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency or the server itself cannot serve now: try again after ``retry_after`` seconds."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
