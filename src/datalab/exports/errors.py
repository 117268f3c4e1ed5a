"""What the exports service reports when a request cannot be served."""

from __future__ import annotations

from datalab.domain_errors import NotFound


class ExportNotFound(NotFound):
    """No live export with this uid in the caller's organization."""

    code = "export_not_found"

    def __init__(self, uid: str) -> None:
        super().__init__(f"Export with uid: {uid} is NOT found.")
        self.uid = uid
