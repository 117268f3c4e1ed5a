"""Request and response shapes of the operator API (camelCase on the wire, like the rest of the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from datalab.accounts.models import ApiKey, Organization, User
from datalab.exports.models import Export
from datalab.record_out import record_out

Role = Literal["member", "admin"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganizationIn(_Body):
    name: str = Field(min_length=1, max_length=200)
    fice: str = Field(min_length=1, max_length=20, description="FICE code (text; leading zeros kept)")
    stateCode: str = Field(default="", max_length=2, description="Two-letter state code")


class OrganizationUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    stateCode: str | None = Field(default=None, max_length=2)
    active: bool | None = Field(default=None, description="false deactivates, true reactivates")


class AdminOrganizationOut(BaseModel):
    uid: str
    name: str
    fice: str
    stateCode: str
    active: bool
    createdAt: datetime


def organization_out(organization: Organization) -> AdminOrganizationOut:
    """An organization as operators see it."""
    return record_out(AdminOrganizationOut, organization, active=organization.deactivated_at is None)


class UserIn(_Body):
    userName: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=8, max_length=1024)
    firstName: str = Field(default="", max_length=100)
    lastName: str = Field(default="", max_length=100)
    email: str = Field(default="", max_length=254)
    organizations: list[str] = Field(
        default_factory=list, max_length=100, description="Organization uids or FICE codes, in order"
    )
    role: Role = "member"
    operator: bool = False


class UserUpdate(_Body):
    status: Literal["Active", "Inactive"] | None = None
    operator: bool | None = None


class MembershipIn(_Body):
    organization: str = Field(min_length=1, max_length=64, description="Organization uid or FICE code")
    role: Role = "member"


class MembershipOut(BaseModel):
    organizationUid: str
    name: str
    role: str


class AdminUserOut(BaseModel):
    uid: str
    userName: str
    firstName: str
    lastName: str
    email: str
    status: str
    operator: bool
    memberships: list[MembershipOut]


def admin_user_out(user: User) -> AdminUserOut:
    """A user as operators see it: status, operator role and every membership with its role."""
    return record_out(
        AdminUserOut,
        user,
        operator=user.is_operator,
        memberships=[
            MembershipOut(organizationUid=m.organization.uid, name=m.organization.name, role=m.role)
            for m in user.memberships
        ],
    )


class ApiKeyIn(_Body):
    name: str = Field(default="", max_length=100, description="A label to recognise the key by")


class ApiKeyOut(BaseModel):
    uid: str
    name: str
    prefix: str
    createdAt: datetime
    lastUsedAt: datetime | None
    revokedAt: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    apiKey: str = Field(description="The key itself: shown this once, stored only hashed")


def api_key_out(api_key: ApiKey) -> ApiKeyOut:
    """An API key without its value."""
    return record_out(ApiKeyOut, api_key)


class ExportFormIn(_Body):
    productKey: str = Field(min_length=1, max_length=40, description="e.g. prospect or score-reporter")
    orderName: str = Field(default="", max_length=200, description="Order name used in the file name")


class AdminExportOut(BaseModel):
    uid: str
    productKey: str
    fileName: str
    orderName: str
    state: Literal["awaiting_file", "published", "withdrawn", "expired"]
    status: str
    quantity: int
    sizeBytes: int
    createdAt: datetime
    publishedAt: datetime | None
    withdrawnAt: datetime | None


class ExportFormOut(BaseModel):
    export: AdminExportOut
    url: str = Field(description="POST the form here: every field, then the file as the last part")
    fields: dict[str, str]


def _export_state(export: Export) -> Literal["awaiting_file", "published", "withdrawn", "expired"]:
    if export.withdrawn_at is not None:
        return "withdrawn"
    if export.expired_at is not None:
        return "expired"
    return "awaiting_file" if export.published_at is None else "published"


def admin_export_out(export: Export) -> AdminExportOut:
    """An export as operators see it, with where it is in its life."""
    return record_out(AdminExportOut, export, state=_export_state(export))


class StudentModelOut(BaseModel):
    id: int
    students: int


class StudentsLoadOut(BaseModel):
    inserted: int
    updated: int
    model: StudentModelOut | None = Field(description="The matching model trained afterwards (train=true)")
