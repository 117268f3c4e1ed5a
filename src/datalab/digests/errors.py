"""What the e-mail digest service reports when a request cannot be served."""

from __future__ import annotations

from datalab.domain_errors import Forbidden, InvalidInput


class DigestsNeedAUser(Forbidden):
    """Digests are a person's: an operator's context (no user) has none to read or change."""

    code = "user_required"

    def __init__(self) -> None:
        super().__init__("Only a signed-in user has e-mail digests")


class UnknownDigestChoice(InvalidInput):
    """A form asking for digests neither on nor off."""

    code = "invalid_digest_choice"

    def __init__(self, choice: str) -> None:
        super().__init__(f"The e-mail digest is turned on or off, not {choice!r}")
