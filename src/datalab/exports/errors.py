"""What the exports service reports when a request cannot be served."""

from __future__ import annotations

from datalab.domain_errors import InvalidInput, InvalidState, NotFound
from datalab.storage.errors import (
    FormTokenExpired,
    FormTokenUnknown,
    LinkExpired,
    LinkRefused,
    LinkUsed,
    ObjectMissing,
)


class ExportNotFound(NotFound):
    """No live export with this uid in the caller's organization."""

    code = "export_not_found"

    def __init__(self, uid: str) -> None:
        super().__init__(f"Export with uid: {uid} is NOT found.")
        self.uid = uid


class ExportError(InvalidInput):
    """A file that cannot be published as asked."""

    code = "invalid_export"


class ExportWithdrawn(InvalidState):
    """The export was withdrawn already."""

    code = "export_withdrawn"

    def __init__(self, uid: str) -> None:
        super().__init__(f"Export {uid} has been withdrawn already")


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


class UnknownExportForm(FormTokenUnknown):
    """A POST form whose token is no export's."""


class ExportFormExpired(FormTokenExpired):
    """A POST form for an export no longer waiting for its file (withdrawn, published, or too late)."""


class WrongExportKey(LinkRefused):
    """A POST form whose key is not the one its export was given."""
