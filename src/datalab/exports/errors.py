"""What the exports service reports when a request cannot be served."""

from __future__ import annotations

from datalab.domain_errors import InvalidInput, InvalidState, NotFound


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
