"""Request dependencies shared by every router: settings, database session, clock, org context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from datalab.accounts import service as accounts
from datalab.accounts.models import User
from datalab.db import transaction, utcnow
from datalab.exports.service import ExportService
from datalab.org_service import OrgService
from datalab.runtime import Runtime
from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.storage.base import ObjectStore
from datalab.uploads.service import UploadService


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> ObjectStore:
    """The app's object store."""
    store: ObjectStore = request.app.state.store
    return store


def _finish(session: Session, write_factory: sessionmaker[Session], *, ok: bool) -> None:
    try:
        if ok:
            session.commit()
    finally:
        session.close()
    touches = accounts.pending_api_key_uses(session)
    if ok and touches:
        # At most once a minute per key: a short write transaction of its own, after the read.
        with transaction(write_factory) as db:
            accounts.record_api_key_uses(db=db, uses=touches)


async def _session(request: Request, factory: sessionmaker[Session]) -> AsyncIterator[Session]:
    # Created here (no I/O until first used); committed and closed in one worker thread hop.
    write_factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_finish, session, write_factory, ok=False)
        raise
    await run_in_threadpool(_finish, session, write_factory, ok=True)


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A session for the request, committed when the handler returns, rolled back when it raises."""
    async for session in _session(request, request.app.state.session_factory):
        yield session


async def get_read_db(request: Request) -> AsyncIterator[Session]:
    """A session for a request that only reads: on SQLite it never takes or waits for the write lock.

    With a store that does not report arrivals (S3), reading an upload may record its arrival, so
    there the session is a writing one.
    """
    store: ObjectStore = request.app.state.store
    factory = (
        request.app.state.read_session_factory if store.reports_uploads else request.app.state.session_factory
    )
    async for session in _session(request, factory):
        yield session


async def get_now() -> datetime:
    """The request's notion of now."""
    return utcnow()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
# scope="function": commit before the response goes out, so a client never sees a 200 for unsaved data.
DbDep = Annotated[Session, Depends(get_db, scope="function")]
ReadDbDep = Annotated[Session, Depends(get_read_db, scope="function")]
NowDep = Annotated[datetime, Depends(get_now)]
AuthorizationHeader = Annotated[
    str | None, Header(description="Bearer <sessionToken> or JWT <sessionToken>", max_length=8192)
]
ApiKeyHeader = Annotated[
    str | None, Header(description="Your API key; optional with a session token", max_length=256)
]
OrganizationHeader = Annotated[
    str | None, Header(description="Organization uid from the login response", max_length=256)
]


def _org_context(*, read_only: bool) -> Callable[..., OrgContext]:
    """A dependency giving the authenticated user and the organization the request acts in, looked up on
    the route's database session (the read-only one for a route that only reads)."""
    # The same dependency as DbDep/ReadDbDep, so the route and its context share one database session.
    database_session: Session = Depends(get_read_db if read_only else get_db, scope="function")

    def org_context(
        settings: SettingsDep,
        now: NowDep,
        authorization: AuthorizationHeader = None,
        x_api_key: ApiKeyHeader = None,
        organization: OrganizationHeader = None,
        db: Session = database_session,
    ) -> OrgContext:
        return accounts.org_context(
            db=db,
            settings=settings,
            authorization=authorization,
            api_key=x_api_key,
            organization_uid=organization,
            now=now,
        )

    return org_context


def get_operator(
    db: DbDep,
    settings: SettingsDep,
    now: NowDep,
    authorization: AuthorizationHeader = None,
    x_api_key: ApiKeyHeader = None,
) -> User:
    """The authenticated operator (401 without valid credentials, 403 for anyone else)."""
    return accounts.operator(
        db=db, settings=settings, authorization=authorization, api_key=x_api_key, now=now
    )


OperatorDep = Annotated[User, Depends(get_operator)]
get_org_context = _org_context(read_only=False)
# Routes that only read take this one: on SQLite they never wait for the write lock.
get_read_org_context = _org_context(read_only=True)
OrgDep = Annotated[OrgContext, Depends(get_org_context)]
ReadOrgDep = Annotated[OrgContext, Depends(get_read_org_context)]

T = TypeVar("T")
ServiceT = TypeVar("ServiceT", bound=OrgService)


@dataclass(frozen=True)
class ApiCall:
    """One organization-scoped API call that only reads: its credentials and the app's runtime.

    `read(work)` does all of the call's database work in one worker thread: it opens a read-only
    session, authenticates the call and resolves its organization, runs `work(db, org, now)`, and ends
    the transaction — one thread hop and one pooled connection per call, however many queries.
    """

    runtime: Runtime
    authorization: str | None
    api_key: str | None
    organization: str | None
    # The base URL clients reach this server at (what links in answers start with).
    base_url: str

    async def read(self, work: Callable[[Session, OrgContext, datetime], T]) -> T:
        """The result of `work`, run after authentication in a read-only transaction."""
        return await run_in_threadpool(self.run, work)

    async def serve(self, service_type: type[ServiceT], work: Callable[[ServiceT], T]) -> T:
        """The result of `work` on the call's service of `service_type`, built in the same worker thread
        and transaction as `read`."""

        def on_service(db: Session, org: OrgContext, now: datetime) -> T:
            service = service_type.in_runtime(self.runtime, db=db, org=org, now=now, base_url=self.base_url)
            return work(service)

        return await self.read(on_service)

    def run(self, work: Callable[[Session, OrgContext, datetime], T]) -> T:
        """The same, in the calling thread (what `read` runs in a worker thread)."""
        runtime = self.runtime
        # Reading an upload may record its arrival when the store does not report arrivals (S3).
        factory = runtime.read_session_factory if runtime.store.reports_uploads else runtime.session_factory
        now = utcnow()
        session = factory()
        ok = False
        try:
            org = accounts.org_context(
                db=session,
                settings=runtime.settings,
                authorization=self.authorization,
                api_key=self.api_key,
                organization_uid=self.organization,
                now=now,
            )
            result = work(session, org, now)
            ok = True
        finally:
            _finish(session, runtime.session_factory, ok=ok)
        return result


async def get_api_call(
    request: Request,
    authorization: AuthorizationHeader = None,
    x_api_key: ApiKeyHeader = None,
    organization: OrganizationHeader = None,
) -> ApiCall:
    """The read-only API call of the request (see ApiCall)."""
    runtime: Runtime = request.app.state.runtime
    return ApiCall(
        runtime=runtime,
        authorization=authorization,
        api_key=x_api_key,
        organization=organization,
        base_url=public_base_url(request, runtime.settings),
    )


ApiCallDep = Annotated[ApiCall, Depends(get_api_call)]


def public_base_url(request: Request, settings: Settings) -> str:
    """The base URL clients reach this server at: the configured one, else the request's own."""
    return settings.base_url(str(request.base_url))


async def raw_body(request: Request) -> bytes:
    """The request body, read before a sync handler runs in a worker thread."""
    return await request.body()


def service_dependency(
    service_type: type[ServiceT], *, org_context: Callable[..., OrgContext], read_only: bool
) -> Callable[..., ServiceT]:
    """A dependency giving the request's service of the organization `org_context` gives (the API's
    Organization header, or a Data Center session), on the route's database session (the read-only one
    for a route that only reads)."""
    call_context: OrgContext = Depends(org_context)
    # The same dependency as DbDep/ReadDbDep, so the route and its service share one database session.
    database_session: Session = Depends(get_read_db if read_only else get_db, scope="function")

    def service(
        request: Request, now: NowDep, org: OrgContext = call_context, db: Session = database_session
    ) -> ServiceT:
        runtime: Runtime = request.app.state.runtime
        return service_type.in_runtime(
            runtime, db=db, org=org, now=now, base_url=public_base_url(request, runtime.settings)
        )

    return service


def _api_service(service_type: type[ServiceT], *, read_only: bool) -> Callable[..., ServiceT]:
    org_context = get_read_org_context if read_only else get_org_context
    return service_dependency(service_type, org_context=org_context, read_only=read_only)


ExportServiceDep = Annotated[ExportService, Depends(_api_service(ExportService, read_only=False))]
UploadServiceDep = Annotated[UploadService, Depends(_api_service(UploadService, read_only=False))]
ReadUploadServiceDep = Annotated[UploadService, Depends(_api_service(UploadService, read_only=True))]
