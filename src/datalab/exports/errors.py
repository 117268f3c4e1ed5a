"""What the exports service reports when a request cannot be served."""

from __future__ import annotations

from datalab.domain_errors import InvalidInput, NotFound
from datalab.storage.errors import LinkExpired, LinkRefused, LinkUsed, ObjectMissing


class ExportNotFound(NotFound):
    """No live export with this uid in the caller's organization."""

    code = "export_not_found"

    def __init__(self, uid: str) -> None:
        super().__init__(f"Export with uid: {uid} is NOT found.")
        self.uid = uid


class InvalidExportParameter(InvalidInput):
    """A filter, format or slice of an export request that is not one of its values (code names which)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


class UnknownDownloadUrl(LinkRefused):
    """A download URL whose token is no ticket's, or that names another file than its ticket's."""


class DownloadUrlExpired(LinkExpired):
    """A one-time download URL used after its time."""


class DownloadUrlUsed(LinkUsed):
    """A one-time download URL used a second time."""


class ExportFileMissing(ObjectMissing):
    """The stored file a download ticket serves is not in the store."""
