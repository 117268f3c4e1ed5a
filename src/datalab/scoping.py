"""The one way to reach organization-owned rows: every such query starts here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, select

from datalab.accounts.models import Organization, User
from datalab.db import MaybeOrgOwned, OrgOwned

OwnedT = TypeVar("OwnedT", bound=OrgOwned | MaybeOrgOwned)


@dataclass(frozen=True)
class OrgContext:
    """The authenticated user acting in one organization they belong to (no user: an operator's command)."""

    user: User | None
    organization: Organization
    api_key_id: int | None = None


def scoped(model: type[OwnedT], org: OrgContext) -> Select[OwnedT]:
    """A SELECT of the model's rows restricted to the organization of the context."""
    return select(model).where(model.organization_id == org.organization.id)


def across_organizations(model: type[OwnedT]) -> Select[OwnedT]:
    """A SELECT over every organization's rows: for system tasks (sweeps), never for a request."""
    return select(model)
