"""What accounts report when a caller cannot be authenticated or may not act in an organization."""

from __future__ import annotations

from datalab.domain_errors import Forbidden, InvalidInput, Throttled, Unauthenticated

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
