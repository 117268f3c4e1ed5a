"""What the audit trail reports when a caller may not read it."""

from __future__ import annotations

from datalab.domain_errors import Forbidden


class AuditAdminRequired(Forbidden):
    """Only the organization's admins (or an operator) read its audit trail."""

    code = "admin_required"

    def __init__(self) -> None:
        super().__init__("Only the organization's admins can read its audit trail")
