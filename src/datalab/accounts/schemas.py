"""Request and response shapes of login and token refresh, as the documentation shows them."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel

from datalab.accounts.models import User
from datalab.accounts.service import MAX_PASSWORD_LENGTH, MAX_USER_NAME_LENGTH
from datalab.bodies import check_text, decode_text, parse_json_object
from datalab.errors import bad_request
from datalab.record_out import record_out

LOGIN_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["userName", "password", "acceptedTerms"],
    "properties": {
        "userName": {
            "type": "string",
            "maxLength": MAX_USER_NAME_LENGTH,
            "description": "Service account email (also accepted as 'username')",
        },
        "password": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH},
        "acceptedTerms": {
            "type": "boolean",
            "description": "Must be true (the strings 'true'/'True' work too)",
        },
    },
}


class OrganizationOut(BaseModel):
    uid: str
    name: str
    fice: str
    stateCode: str


class AttributeOut(BaseModel):
    key: str
    value: Any


class UserOut(BaseModel):
    uid: str
    type: str
    userName: str
    firstName: str
    lastName: str
    email: str
    status: str
    organizations: list[OrganizationOut]
    attributes: list[AttributeOut]


class LoginOut(BaseModel):
    user: UserOut
    sessionToken: str


class TokenOut(BaseModel):
    sessionToken: str


def user_out(user: User) -> UserOut:
    """The login response's user object."""
    return record_out(
        UserOut,
        user,
        organizations=[
            OrganizationOut(
                uid=m.organization.uid,
                name=m.organization.name,
                fice=m.organization.fice,
                stateCode=m.organization.state_code,
            )
            for m in user.memberships
        ],
        attributes=[
            AttributeOut(key=str(a.get("key", "")), value=a.get("value", {})) for a in user.attributes
        ],
    )


class LoginForm(BaseModel):
    userName: str
    password: str


def _accepted(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def check_credentials_size(user_name: str, password: str) -> None:
    """A 400 for a userName or password longer than any account can have (nothing is looked up)."""
    if len(user_name) > MAX_USER_NAME_LENGTH:
        raise bad_request(
            f"userName must be at most {MAX_USER_NAME_LENGTH} characters", code="invalid_user_name"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise bad_request(
            f"password must be at most {MAX_PASSWORD_LENGTH} characters", code="invalid_password"
        )
    check_text(user_name, where="userName")
    check_text(password, where="password")


def parse_login_body(raw: bytes, content_type: str) -> LoginForm:
    """Read a login body sent as JSON (whatever the Content-Type says) or as a urlencoded form."""
    text = decode_text(raw).strip()
    fields: dict[str, Any]
    media_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded" and not text.startswith("{"):
        fields = {name: values[-1] for name, values in parse_qs(text, keep_blank_values=True).items()}
    else:
        fields = parse_json_object(text, wanted="userName, password and acceptedTerms")
    by_name = {str(name).lower(): value for name, value in fields.items()}
    user_name, password = by_name.get("username"), by_name.get("password")
    if (
        not isinstance(user_name, str)
        or not user_name.strip()
        or not isinstance(password, str)
        or not password
    ):
        raise bad_request("userName and password are required", code="missing_credentials")
    check_credentials_size(user_name, password)
    if not _accepted(by_name.get("acceptedterms")):
        raise bad_request("acceptedTerms must be true", code="terms_not_accepted")
    return LoginForm(userName=user_name, password=password)
