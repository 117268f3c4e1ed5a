"""Every exception the client raises, in one place.

DataLabError
├── ConfigurationError      credentials or the base URL are missing or malformed
├── ConnectionFailed        the server could not be reached (after the retries)
├── ApiError                the API answered with an error (status, code, message, detail)
│   ├── AuthenticationError 401/403: bad API key, password, or organization
│   └── NotFound            404: no such export or file in this organization
├── DownloadError           a download was cut short, failed its check, or would overwrite a file
└── UploadError             the store refused the file (S3 error code and message)
    └── ProcessingFailed    the file was received but ended in `failure` (or needs a mapping)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datalab.client.models import FileRecord


class DataLabError(Exception):
    """Base of every error the client raises."""


class ConfigurationError(DataLabError):
    """The client lacks something it needs (credentials, base URL); the message says what and how."""


class ConnectionFailed(DataLabError):
    """The server could not be reached, or kept failing, after every retry."""


class ApiError(DataLabError):
    """An error answer of the API: its HTTP status and the `{code, message, detail}` envelope."""

    def __init__(self, status: int, message: str, *, code: str = "", detail: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class AuthenticationError(ApiError):
    """The API key, user name, password or organization was refused."""


class NotFound(ApiError):
    """No such export or file in this organization."""


class DownloadError(DataLabError):
    """A download did not produce a complete, verified file (nothing partial is left behind)."""


class UploadError(DataLabError):
    """The object store refused the file: S3's error code and message."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ProcessingFailed(UploadError):
    """The file was uploaded but the server could not process it; `record.error` says why."""

    def __init__(self, record: FileRecord) -> None:
        reason = record.error or f"the file is {record.status}"
        super().__init__(f"{record.file_name}: {reason}", code=record.status)
        self.record = record
