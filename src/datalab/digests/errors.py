"""What the e-mail digest service reports when a request cannot be served."""

from __future__ import annotations

from datalab.domain_errors import Forbidden


class DigestsNeedAUser(Forbidden):
    """Digests are a person's: an operator's context (no user) has none to read or change."""

    code = "user_required"

    def __init__(self) -> None:
        super().__init__("Only a signed-in user has e-mail digests")
