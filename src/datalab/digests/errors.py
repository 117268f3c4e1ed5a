"""What the e-mail digest service reports when a request cannot be served."""

from __future__ import annotations

from datalab.domain_errors import Forbidden, InvalidInput, NotFound


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


class UnknownUnsubscribeLink(NotFound):
    """An unsubscribe link whose token is not this server's for that user (or whose user is gone)."""

    code = "unknown_unsubscribe_link"

    def __init__(self) -> None:
        super().__init__(
            "This unsubscribe link is not valid (it may have been cut or changed). Sign in to Data Center "
            "and turn the e-mail digest off on the Exports page."
        )
