"""What accounts report: a caller who cannot be authenticated or may not act in an organization, and an
account operation that cannot be done as asked."""

from __future__ import annotations

from datalab.domain_errors import Forbidden, InvalidInput, NotFound, Throttled, Unauthenticated

INVALID_CREDENTIALS = "Invalid userName or password"
INVALID_API_KEY = "Invalid API key"


class InvalidApiKey(Unauthenticated):
    """An API key that is unknown, revoked, or another user's."""

    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__(INVALID_API_KEY)


class MissingApiKey(Unauthenticated):
    """Login without the API key this deployment requires."""

    code = "missing_api_key"

    def __init__(self) -> None:
        super().__init__("Missing x-api-key header")


class SignInFailed(Unauthenticated):
    """A refused sign-in: wrong name or password (`invalid_credentials`) or an inactive account."""

    code = "invalid_credentials"

    def __init__(self, message: str = INVALID_CREDENTIALS, *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class MissingToken(Unauthenticated):
    """A request without the session token it needs."""

    code = "missing_token"

    def __init__(self) -> None:
        super().__init__("Missing Authorization header")


class InvalidSessionToken(Unauthenticated):
    """A session token that is malformed, expired, revoked, or whose account is inactive or unknown."""

    code = "invalid_token"


class TooManyLoginFailures(Throttled):
    """Sign-in attempts locked for this userName or address until the lock runs out."""

    code = "too_many_login_failures"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed logins; try again in {retry_after} seconds", retry_after=retry_after
        )


class MissingOrganization(InvalidInput):
    """A request that acts in an organization without naming it."""

    code = "missing_organization"

    def __init__(self) -> None:
        super().__init__(
            "Missing Organization header: send 'Organization: <uid>' with one of the organization uids "
            "returned by /v1/login"
        )


class OrganizationForbidden(Forbidden):
    """The caller is not a member of the organization named."""

    code = "organization_forbidden"

    def __init__(self, organization_uid: str) -> None:
        super().__init__(f"You do not have access to organization {organization_uid}")
        self.organization_uid = organization_uid


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
