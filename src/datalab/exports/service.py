"""Exports: publishing files, listing them, one-time download URLs and deliveries."""

from __future__ import annotations

import csv
import functools
import io
import os
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import quote

import pydantic_core
from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from datalab.accounts.models import Organization, User
from datalab.audit.service import record, record_for
from datalab.db import new_uid, transaction
from datalab.digests.service import record_new_export
from datalab.exports.errors import (
    DownloadUrlExpired,
    DownloadUrlUsed,
    ExportError,
    ExportFileMissing,
    ExportNotFound,
    InvalidExportParameter,
    UnknownDownloadUrl,
)
from datalab.exports.models import (
    EXPORT_STATUSES,
    PRODUCT_KEYS,
    Delivery,
    DownloadTicket,
    Export,
    listed_to_organization,
)
from datalab.exports.naming import export_file_name
from datalab.exports.schemas import delivery_row_out, export_row_out
from datalab.org_service import OrgService
from datalab.pagination import Page, paginate
from datalab.scoping import OrgContext, scoped
from datalab.storage.base import ObjectStore
from datalab.webhooks.models import EXPORT_PUBLISHED
from datalab.webhooks.service import emit

CSV_CONTENT_TYPE = "text/csv"
# fileType → (delimiter, extension, content type); csv is the stored format.
FILE_TYPES = {
    "csv": (",", "csv", CSV_CONTENT_TYPE),
    "txt": ("\t", "txt", "text/tab-separated-values"),
}


def data_rows(stream: IO[bytes], name: str) -> Iterator[list[str]]:
    """The non-blank rows of a UTF-8 CSV stream (header first); ExportError when it is not CSV text."""
    with io.TextIOWrapper(stream, newline="", encoding="utf-8-sig") as source:
        reader = csv.reader(source)
        try:
            for row in reader:
                if row:
                    yield row
        except UnicodeDecodeError as exc:
            raise ExportError(f"{name} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
        except csv.Error as exc:
            raise ExportError(f"{name} is not valid CSV (line {reader.line_num}): {exc}") from exc


def countdata_rows(path: Path) -> int:
    """Records in a CSV file after its header row; blank lines are not records."""
    rows = data_rows(path.open("rb"), path.name)
    if next(rows, None) is None:
        raise ExportError(f"{path.name} is empty: an export needs at least a header row")
    return sum(1 for _ in rows)


def publish_export(
    *,
    db: Session,
    store: ObjectStore,
    bucket: str,
    organization: Organization,
    product_key: str,
    source: Path,
    now: datetime,
    order_name: str = "",
    created_by: User | None = None,
    list_path: str | None = None,
    named_at: datetime | None = None,
) -> Export:
    """Store a CSV file as a new, not yet delivered export of the organization.

    A caller that may publish the same file again after a failed transaction passes a stable
    `list_path` and `named_at`: the object key is then the same and a retry overwrites, not orphans.
    """
    if product_key not in PRODUCT_KEYS:
        raise ExportError(f"productKey must be one of {', '.join(PRODUCT_KEYS)}, not {product_key!r}")
    if not source.is_file():
        raise ExportError(f"{source} is not a readable file")
    quantity = countdata_rows(source)
    file_name = export_file_name(
        product_key=product_key,
        organization_name=organization.name,
        fice=organization.fice,
        order_name=order_name,
        at=named_at or now,
    )
    list_path = list_path or new_uid()
    key = f"{organization.uid}/{product_key}/{list_path}/{file_name}"
    info = store.put_file(bucket=bucket, key=key, source=source, content_type=CSV_CONTENT_TYPE)
    export = Export(
        organization_id=organization.id,
        product_key=product_key,
        order_name=order_name,
        file_name=file_name,
        object_key=key,
        size_bytes=info.size,
        sha256=info.sha256,
        quantity=quantity,
        list_path=list_path,
        created_by=created_by,
        created_at=now,
        published_at=now,
    )
    db.add(export)
    try:
        db.flush()
    except Exception:
        store.delete(bucket=bucket, key=key)
        raise
    announce_export(db, export, actor=created_by, now=now)
    return export


def record_export_event(
    db: Session,
    export: Export,
    action: str,
    *,
    now: datetime,
    actor: User | None,
    detail: dict[str, object],
    size_bytes: int | None = None,
) -> None:
    """Add what happened to an export to its organization's audit trail."""
    record(
        db,
        action=action,
        organization_id=export.organization_id,
        now=now,
        actor=actor,
        target=("export", export.uid),
        detail=detail,
        size_bytes=size_bytes,
    )


def announce_export(db: Session, export: Export, *, actor: User | None, now: datetime) -> None:
    """Record a complete export, tell the organization's webhooks and queue it for e-mail digests."""
    record_export_event(
        db,
        export,
        "export.published",
        now=now,
        actor=actor,
        detail={"productKey": export.product_key, "fileName": export.file_name, "quantity": export.quantity},
        size_bytes=export.size_bytes,
    )
    emit(
        db=db,
        organization_id=export.organization_id,
        event_type=EXPORT_PUBLISHED,
        data=_event_data(export),
        now=now,
    )
    record_new_export(db=db, export=export, now=now)


def _event_data(export: Export) -> dict[str, object]:
    """What a webhook learns of a new export: enough to list and download it through the API."""
    return {
        "export": {
            "uid": export.uid,
            "productKey": export.product_key,
            "fileName": export.file_name,
            "orderName": export.order_name,
            "quantity": export.quantity,
            "sizeBytes": export.size_bytes,
            "sha256": export.sha256,
            "createdAt": export.created_at.isoformat().replace("+00:00", "Z"),
        }
    }


def parse_export_filters(*, status: str | None, product_key: str | None) -> tuple[str | None, str | None]:
    """Validate the list filters; invalid values get a 400 naming the valid ones."""
    if status is not None and status not in EXPORT_STATUSES:
        raise InvalidExportParameter(
            f"Invalid status {status!r}: valid values are {', '.join(EXPORT_STATUSES)} (case-sensitive)",
            code="invalid_status",
        )
    if product_key is not None and product_key not in PRODUCT_KEYS:
        raise InvalidExportParameter(
            f"Invalid productKey {product_key!r}: valid values are "
            f"{', '.join(PRODUCT_KEYS)} (case-sensitive)",
            code="invalid_product_key",
        )
    return status, product_key


def list_exports(
    *,
    db: Session,
    org: OrgContext,
    status: str | None,
    product_key: str | None,
    limit: int | None,
    offset: int,
    include_expired: bool = False,
) -> Page[Export]:
    """The organization's exports, newest first, filtered and paged (deliveries loaded with the page).

    Expired exports (their file deleted by retention) are listed to operators only (`include_expired`).
    """
    query = scoped(Export, org).options(selectinload(Export.deliveries))
    if not include_expired:
        query = query.where(listed_to_organization())
    if status is not None:
        query = query.where(Export.status == status)
    if product_key is not None:
        query = query.where(Export.product_key == product_key)
    return paginate(
        db=db, query=query.order_by(Export.created_at.desc(), Export.id.desc()), limit=limit, offset=offset
    )


def _user_columns() -> tuple[Any, ...]:
    return (
        User.uid.label("user_uid"),
        User.first_name,
        User.last_name,
        User.user_name,
        User.type.label("user_type"),
        User.email,
    )


# A SELECT of any columns (Select is generic in its row's column types).
_Rows = Select[*tuple[Any, ...]]


@functools.cache
def _export_page_query(*, by_status: bool, by_product: bool, limited: bool) -> _Rows:
    """The export list's page query with its total as a window count, built once per filter shape."""
    query: _Rows = (
        select(
            Export.id,
            Export.uid,
            Export.product_key,
            Export.status,
            Export.list_path,
            Export.quantity,
            Export.cost_in_points,
            Export.cost_in_dollars,
            Export.created_at,
            Export.expires_at,
            Export.overdue_email_sent_at,
            Export.is_continuous,
            *_user_columns(),
            func.count().over().label("total"),
        )
        .outerjoin(User, User.id == Export.created_by_user_id)
        .where(Export.organization_id == bindparam("organization_id"), listed_to_organization())
    )
    if by_status:
        query = query.where(Export.status == bindparam("status"))
    if by_product:
        query = query.where(Export.product_key == bindparam("product_key"))
    query = query.order_by(Export.created_at.desc(), Export.id.desc()).offset(bindparam("offset"))
    if limited:
        query = query.limit(bindparam("limit"))
    return query


@functools.cache
def _export_count_query(*, by_status: bool, by_product: bool) -> _Rows:
    page = _export_page_query(by_status=by_status, by_product=by_product, limited=False)
    return select(func.count()).select_from(page.offset(None).order_by(None).subquery())


@functools.cache
def _deliveries_query() -> _Rows:
    return (
        select(
            Delivery.export_id,
            Delivery.uid,
            Delivery.method,
            Delivery.file_type,
            Delivery.delivered_at,
            *_user_columns(),
        )
        .outerjoin(User, User.id == Delivery.user_id)
        .where(Delivery.export_id.in_(bindparam("export_ids", expanding=True)))
        .order_by(Delivery.export_id, Delivery.delivered_at, Delivery.id)
    )


def export_list_json(
    *,
    db: Session,
    org: OrgContext,
    status: str | None,
    product_key: str | None,
    limit: int | None,
    offset: int,
    now: datetime,
) -> tuple[bytes, int]:
    """The JSON body of one page of `list_exports` and the total number of matches, in two queries.

    The same body `EXPORT_LIST.dump_json([export_out(e) ...])` gives, without ORM objects: the page
    with its total as a window count, then the page's deliveries with their users. The statements
    are built once and run on the session's connection (Core rows, no ORM loading).
    """
    by_status, by_product = status is not None, product_key is not None
    params: dict[str, Any] = {"organization_id": org.organization.id, "offset": offset}
    if by_status:
        params["status"] = status
    if by_product:
        params["product_key"] = product_key
    if limit is not None:
        params["limit"] = limit
    connection = db.connection()
    query = _export_page_query(by_status=by_status, by_product=by_product, limited=limit is not None)
    rows = connection.execute(query, params).all()
    if rows:
        total = int(rows[0].total)
    elif offset == 0 and limit != 0:
        total = 0
    else:
        # An empty page past the end (or limit=0): the window count has no row to ride on.
        total = int(
            connection.execute(
                _export_count_query(by_status=by_status, by_product=by_product), params
            ).scalar_one()
        )
    deliveries: dict[int, list[dict[str, Any]]] = {row.id: [] for row in rows}
    if rows:
        for delivery in connection.execute(_deliveries_query(), {"export_ids": list(deliveries)}):
            deliveries[delivery.export_id].append(delivery_row_out(delivery))
    organization = org.organization
    body = [
        export_row_out(
            row,
            fice=organization.fice,
            organization_uid=organization.uid,
            deliveries=deliveries[row.id],
            now=now,
        )
        for row in rows
    ]
    return pydantic_core.to_json(body), total


def get_export(*, db: Session, org: OrgContext, uid: str) -> Export:
    """One of the organization's live exports by uid, else 404 (also for other organizations' uids)."""
    export = db.scalar(scoped(Export, org).where(Export.uid == uid, listed_to_organization()))
    if export is None:
        raise ExportNotFound(uid)
    return export


def _derive_file(*, source: IO[bytes], target: Path, delimiter: str, skip: int, limit: int | None) -> None:
    rows = data_rows(source, target.name)
    with target.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        header = next(rows, None)
        if header is not None:
            writer.writerow(header)
        for index, row in enumerate(rows):
            if index < skip:
                continue
            if limit is not None and index >= skip + limit:
                break
            writer.writerow(row)


def _sweep_expired_tickets(*, db: Session, store: ObjectStore, bucket: str, now: datetime) -> None:
    stale = db.scalars(
        select(DownloadTicket).where(
            DownloadTicket.expires_at < now - timedelta(minutes=5), DownloadTicket.derived_key.is_not(None)
        )
    )
    for ticket in stale:
        if ticket.derived_key:
            store.delete(bucket=bucket, key=ticket.derived_key)
        ticket.derived_key = None


@dataclass
class DownloadGrant:
    """A claimed one-time URL: the object to serve and what to record once it was served."""

    session_factory: sessionmaker[Session]
    store: ObjectStore
    bucket: str
    ticket_id: int
    key: str
    derived: bool

    def finish(self, *, bytes_sent: int, complete: bool, now: datetime) -> None:
        """Record the delivery when every byte went out; drop a derived file either way."""
        with transaction(self.session_factory) as db:
            ticket = db.get(DownloadTicket, self.ticket_id)
            if ticket is not None and complete:
                record_delivery(db=db, ticket=ticket, bytes_sent=bytes_sent, now=now)
            if ticket is not None and self.derived:
                ticket.derived_key = None
        if self.derived:
            self.store.delete(bucket=self.bucket, key=self.key)


def record_delivery(*, db: Session, ticket: DownloadTicket, bytes_sent: int, now: datetime) -> Delivery:
    """Mark the export Delivered with a delivery record for the ticket's user."""
    delivery = Delivery(
        export_id=ticket.export_id,
        user_id=ticket.user_id,
        method=ticket.method,
        file_type=ticket.file_type,
        bytes_sent=bytes_sent,
        delivered_at=now,
    )
    db.add(delivery)
    db.execute(update(Export).where(Export.id == ticket.export_id).values(status="Delivered"))
    db.flush()
    export = ticket.export
    record_export_event(
        db,
        export,
        "export.downloaded",
        now=now,
        actor=db.get(User, ticket.user_id) if ticket.user_id is not None else None,
        detail={"fileName": export.file_name, "fileType": ticket.file_type, "method": ticket.method},
        size_bytes=bytes_sent,
    )
    return delivery


def _claim_ticket(*, db: Session, ticket: DownloadTicket, now: datetime) -> None:
    """Claim a download ticket exactly once (atomically); a used or expired one has expired."""
    claimed = db.execute(
        update(DownloadTicket)
        .where(
            DownloadTicket.id == ticket.id,
            DownloadTicket.claimed_at.is_(None),
            DownloadTicket.expires_at > now,
        )
        .values(claimed_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise _refused(ticket, now, used=ticket.expires_at > now)


def _refused(ticket: DownloadTicket, now: datetime, *, used: bool) -> DownloadUrlExpired | DownloadUrlUsed:
    times = {"expires_at": ticket.expires_at, "issued_at": ticket.created_at, "refused_at": now}
    if used:
        return DownloadUrlUsed("This download URL was used already", **times)
    return DownloadUrlExpired("This download URL has expired", **times)


def _served_key(ticket: DownloadTicket) -> str:
    return ticket.derived_key or ticket.export.object_key


def redeem_ticket(
    *,
    db: Session,
    store: ObjectStore,
    bucket: str,
    token: str,
    file_name: str,
    base_url: str,
    redirect_ttl: int,
    now: datetime,
) -> str:
    """For stores that cannot serve one-time URLs (S3): claim the ticket, record the delivery, and return a
    short-lived presigned GET to redirect to; S3 cannot tell whether that transfer finished."""
    ticket = db.scalar(select(DownloadTicket).where(DownloadTicket.token == token))
    if (
        ticket is None
        or PurePosixPath(_served_key(ticket)).name != file_name
        or ticket.export.withdrawn_at is not None
    ):
        raise UnknownDownloadUrl("No download URL has this token and file name")
    _claim_ticket(db=db, ticket=ticket, now=now)
    key = _served_key(ticket)
    info = store.info(bucket=bucket, key=key)
    if info is None:
        raise ExportFileMissing("The export's file is not in the store", key=key)
    record_delivery(db=db, ticket=ticket, bytes_sent=info.size, now=now)
    return store.presigned_get_url(
        bucket=bucket, key=key, base_url=base_url, session_token=token, expires_in=redirect_ttl, now=now
    )


@dataclass
class ExportDownloads:
    """The embedded exports bucket's gate: turns a verified one-time URL into a grant, exactly once."""

    session_factory: sessionmaker[Session]
    store: ObjectStore
    bucket: str

    def _usable_ticket(
        self, db: Session, session_token: str | None, key: str, now: datetime
    ) -> DownloadTicket:
        ticket = db.scalar(select(DownloadTicket).where(DownloadTicket.token == (session_token or "")))
        if ticket is None or key != _served_key(ticket) or ticket.export.withdrawn_at is not None:
            raise UnknownDownloadUrl("No download URL has this token and key")
        if ticket.claimed_at is not None or ticket.expires_at <= now:
            raise _refused(ticket, now, used=ticket.expires_at > now)
        return ticket

    def check(self, *, session_token: str | None, key: str, now: datetime) -> None:
        """Refuse a URL that is unknown, used or expired, without claiming it."""
        with transaction(self.session_factory) as db:
            self._usable_ticket(db, session_token, key, now)

    def claim(self, *, session_token: str | None, key: str, now: datetime) -> DownloadGrant:
        """Claim the ticket behind a URL; a second use is refused like an expired URL."""
        with transaction(self.session_factory) as db:
            ticket = self._usable_ticket(db, session_token, key, now)
            _claim_ticket(db=db, ticket=ticket, now=now)
            return DownloadGrant(
                session_factory=self.session_factory,
                store=self.store,
                bucket=self.bucket,
                ticket_id=ticket.id,
                key=key,
                derived=ticket.derived_key is not None,
            )


@dataclass
class ExportBundle:
    """Several exports zipped into one temporary file, delivered together once every byte went out."""

    session_factory: sessionmaker[Session]
    path: Path
    ticket_ids: list[int]

    def finish(self, *, bytes_sent: int, complete: bool, now: datetime) -> None:
        """Record a delivery of each export when the whole archive was sent; remove the archive."""
        try:
            if complete:
                with transaction(self.session_factory) as db:
                    for ticket_id in self.ticket_ids:
                        ticket = db.get(DownloadTicket, ticket_id)
                        if ticket is not None:
                            record_delivery(db=db, ticket=ticket, bytes_sent=bytes_sent, now=now)
        finally:
            self.path.unlink(missing_ok=True)


def _zip_exports(*, store: ObjectStore, bucket: str, exports: list[Export], temp_dir: Path) -> Path:
    """The exports zipped into a temporary file (streamed from the store, never held in memory)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=temp_dir, suffix=".zip")
    os.close(handle)
    path = Path(name)
    used: set[str] = set()
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for export in exports:
                member = f"{export.product_key}/{export.file_name}"
                if member in used:
                    member = f"{export.product_key}/{export.uid}-{export.file_name}"
                used.add(member)
                with (
                    store.open_stream(bucket=bucket, key=export.object_key) as source,
                    archive.open(member, "w") as target,
                ):
                    shutil.copyfileobj(source, target, 1024 * 1024)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _file_type(file_type: str | None) -> str:
    chosen = (file_type or "csv").strip().lower()
    if chosen not in FILE_TYPES:
        raise InvalidExportParameter(
            f"fileType {file_type!r} is not available for this export; available: {', '.join(FILE_TYPES)}",
            code="invalid_file_type",
        )
    return chosen


class ExportService(OrgService):
    """The exports of one organization as one request (or command) works with them."""

    def list(
        self, *, status: str | None, product_key: str | None, limit: int | None, offset: int
    ) -> Page[Export]:
        """The organization's live exports, newest first, filtered and paged."""
        return list_exports(
            db=self.db, org=self.org, status=status, product_key=product_key, limit=limit, offset=offset
        )

    def list_json(
        self, *, status: str | None, product_key: str | None, limit: int | None, offset: int
    ) -> tuple[bytes, int]:
        """The JSON body of one page of `list` and the total number of matches (see export_list_json)."""
        return export_list_json(
            db=self.db,
            org=self.org,
            status=status,
            product_key=product_key,
            limit=limit,
            offset=offset,
            now=self.now,
        )

    def get(self, uid: str) -> Export:
        """One of the organization's live exports, else ExportNotFound."""
        return get_export(db=self.db, org=self.org, uid=uid)

    def issue_download_url(
        self,
        uid: str,
        *,
        file_type: str | None = None,
        skip: int | None = None,
        limit: int | None = None,
        method: str = "API",
    ) -> str:
        """A one-time signed URL for an export (optionally a slice of its rows, or another format)."""
        export = self.get(uid)
        chosen_type = _file_type(file_type)
        for name, value in (("skip", skip), ("limit", limit)):
            if value is not None and value < 0:
                raise InvalidExportParameter(f"{name} must be a non-negative integer", code=f"invalid_{name}")
        bucket = self.settings.exports_bucket
        _sweep_expired_tickets(db=self.db, store=self.store, bucket=bucket, now=self.now)
        token = secrets.token_urlsafe(32)
        derived_key = None
        if chosen_type != "csv" or skip or limit is not None:
            derived_key = self._derive(
                export, token=token, file_type=chosen_type, skip=skip or 0, limit=limit
            )
        ttl_seconds = self.settings.download_url_ttl_seconds
        self.db.add(
            DownloadTicket(
                token=token,
                export_id=export.id,
                user_id=self.org.user.id if self.org.user else None,
                method=method,
                file_type=chosen_type,
                derived_key=derived_key,
                created_at=self.now,
                expires_at=self.now + timedelta(seconds=ttl_seconds),
            )
        )
        self.db.flush()
        # The URL itself is a credential until used: only what it serves is recorded.
        record_for(
            self.db,
            self.org,
            action="export.download_url_issued",
            now=self.now,
            target=("export", export.uid),
            detail={"fileType": chosen_type, "skip": skip, "limit": limit, "method": method},
        )
        key = derived_key or export.object_key
        if not self.store.one_time_urls:
            return f"{self.base_url}/download/{token}/{quote(PurePosixPath(key).name)}"
        return self.store.presigned_get_url(
            bucket=bucket,
            key=key,
            base_url=self.base_url,
            session_token=token,
            expires_in=ttl_seconds,
            now=self.now,
        )

    def _derive(self, export: Export, *, token: str, file_type: str, skip: int, limit: int | None) -> str:
        """Store the export's rows in another format or as a slice, under a key of the ticket's own."""
        delimiter, extension, content_type = FILE_TYPES[file_type]
        derived_key = f"derived/{token}/{Path(export.file_name).stem}.{extension}"
        bucket = self.settings.exports_bucket
        self.settings.temp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.settings.temp_dir) as work:
            derived = Path(work) / "derived"
            _derive_file(
                source=self.store.open_stream(bucket=bucket, key=export.object_key),
                target=derived,
                delimiter=delimiter,
                skip=skip,
                limit=limit,
            )
            self.store.put_file(bucket=bucket, key=derived_key, source=derived, content_type=content_type)
        return derived_key

    def bundle(self, uids: Sequence[str], *, method: str) -> ExportBundle:
        """Several of the organization's exports zipped for one download, delivered once it all went out."""
        exports = [self.get(uid) for uid in dict.fromkeys(uids)]
        if not exports:
            raise InvalidExportParameter("Choose at least one export file", code="nothing_selected")
        path = _zip_exports(
            store=self.store,
            bucket=self.settings.exports_bucket,
            exports=exports,
            temp_dir=self.settings.temp_dir,
        )
        tickets = [
            DownloadTicket(
                token=secrets.token_urlsafe(32),
                export_id=export.id,
                user_id=self.org.user.id if self.org.user else None,
                method=method,
                created_at=self.now,
                expires_at=self.now,
                claimed_at=self.now,
            )
            for export in exports
        ]
        self.db.add_all(tickets)
        self.db.flush()
        return ExportBundle(
            session_factory=self.session_factory, path=path, ticket_ids=[t.id for t in tickets]
        )
