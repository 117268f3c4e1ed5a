"""What Data Center sessions report when a user cannot sign in or act in an organization."""

from __future__ import annotations

from datalab.domain_errors import Forbidden, InvalidInput


class NoOrganization(Forbidden):
    """The account signed in correctly but belongs to no organization to act in."""

    code = "no_organization"

    def __init__(self) -> None:
        super().__init__("This account belongs to no active organization.")


class NotAMember(Forbidden):
    """The user asked to act in an organization they are not a member of."""

    code = "not_a_member"

    def __init__(self) -> None:
        super().__init__("You are not a member of that organization.")


class UnknownOperatorChoice(InvalidInput):
    """An operator page's form asking for the operator role to be neither granted nor revoked."""

    code = "invalid_operator_choice"

    def __init__(self, choice: str) -> None:
        super().__init__(f"The operator role is granted or revoked, not {choice!r}")
