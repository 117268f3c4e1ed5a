"""Request dependencies shared by every router: settings, database session, clock, org context."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from datalab.accounts import service as accounts
from datalab.db import utcnow
from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.storage.base import ObjectStore


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> ObjectStore:
    """The app's object store."""
    store: ObjectStore = request.app.state.store
    return store


def get_db(request: Request) -> Iterator[Session]:
    """A session for the request, committed when the handler returns, rolled back when it raises."""
    with request.app.state.session_factory() as session:
        yield session
        session.commit()


def get_now() -> datetime:
    """The request's notion of now."""
    return utcnow()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
# scope="function": commit before the response goes out, so a client never sees a 200 for unsaved data.
DbDep = Annotated[Session, Depends(get_db, scope="function")]
NowDep = Annotated[datetime, Depends(get_now)]


def get_org_context(
    db: DbDep,
    settings: SettingsDep,
    now: NowDep,
    authorization: Annotated[
        str | None, Header(description="Bearer <sessionToken> or JWT <sessionToken>")
    ] = None,
    x_api_key: Annotated[
        str | None, Header(description="Your API key; optional with a session token")
    ] = None,
    organization: Annotated[
        str | None, Header(description="Organization uid from the login response")
    ] = None,
) -> OrgContext:
    """The authenticated user and the organization the request acts in."""
    return accounts.org_context(
        db=db,
        settings=settings,
        authorization=authorization,
        api_key=x_api_key,
        organization_uid=organization,
        now=now,
    )


OrgDep = Annotated[OrgContext, Depends(get_org_context)]


def public_base_url(request: Request, settings: Settings) -> str:
    """The base URL clients reach this server at: the configured one, else the request's own."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


async def raw_body(request: Request) -> bytes:
    """The request body, read before a sync handler runs in a worker thread."""
    return await request.body()
