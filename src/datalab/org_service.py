"""What the services of one organization's data (exports, uploads) share for one request or command."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.storage.base import ObjectStore


@dataclass
class OrgService:
    """One organization's data as one request (or command) works with it.

    Built per request by `deps.service_dependency`: what every call shares (session, organization, store,
    settings, clock, the base URL clients reach this server at, the factory of sessions for work that
    commits on its own) is given once; methods take only what varies per call.
    """

    db: Session
    org: OrgContext
    store: ObjectStore
    settings: Settings
    now: datetime
    base_url: str
    session_factory: sessionmaker[Session]
