"""What the accounts service reports when an operation cannot be done as asked."""

from __future__ import annotations

from datalab.domain_errors import Forbidden, InvalidInput, NotFound


class AccountError(InvalidInput):
    """An account operation that cannot be done as asked (duplicate name, invalid value, ...)."""

    code = "invalid_account_request"


class OrganizationNotFound(NotFound):
    """No organization with this uid (or FICE code)."""

    code = "organization_not_found"

    def __init__(self, ref: str) -> None:
        super().__init__(f"no organization with uid or FICE {ref!r}")


class UserNotFound(NotFound):
    """No user with this uid (or userName)."""

    code = "user_not_found"

    def __init__(self, ref: str) -> None:
        super().__init__(f"no user with uid or userName {ref!r}")


class ApiKeyNotFound(NotFound):
    """No API key with this uid (of this user, when one is given)."""

    code = "api_key_not_found"

    def __init__(self, uid: str) -> None:
        super().__init__(f"no API key with uid {uid}")


class MembershipNotFound(NotFound):
    """The user does not belong to the organization."""

    code = "membership_not_found"

    def __init__(self, user_name: str, organization_name: str) -> None:
        super().__init__(f"{user_name} is not a member of {organization_name}")


class OrganizationInactive(Forbidden):
    """The organization was deactivated: nobody acts in it any more."""

    code = "organization_inactive"

    def __init__(self, uid: str) -> None:
        super().__init__(f"Organization {uid} has been deactivated")


class OperatorRequired(Forbidden):
    """The caller is signed in but is not an operator."""

    code = "operator_required"

    def __init__(self, message: str = "Only operators can use the admin API") -> None:
        super().__init__(message)
