"""What the services of one organization's data (exports, uploads) share for one request or command."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Self

from sqlalchemy.orm import Session, sessionmaker

from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.storage.base import ObjectStore

if TYPE_CHECKING:
    from datalab.runtime import Runtime


@dataclass
class OrgService:
    """One organization's data as one request (or command) works with it.

    Built per request (`deps.service_dependency`, `ApiCall.serve`): what every call shares (session,
    organization, store, settings, clock, the base URL clients reach this server at, the factory of
    sessions for work that commits on its own) is given once; methods take only what varies per call.
    """

    db: Session
    org: OrgContext
    store: ObjectStore
    settings: Settings
    now: datetime
    base_url: str
    session_factory: sessionmaker[Session]

    @classmethod
    def in_runtime(
        cls, runtime: Runtime, *, db: Session, org: OrgContext, now: datetime, base_url: str
    ) -> Self:
        """The service on one session of the runtime, with its store, settings and session factory."""
        return cls(
            db=db,
            org=org,
            store=runtime.store,
            settings=runtime.settings,
            now=now,
            base_url=base_url,
            session_factory=runtime.session_factory,
        )
