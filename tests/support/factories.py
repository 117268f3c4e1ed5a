"""Factories of the rows functional tests start from, written through the services into a server's database.

Organizations, users (with a password and an API key), exports and uploads are created the way the
product creates them (the same service functions, in one transaction each), without an HTTP round
trip or an admin command per row.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.accounts import service as accounts
from datalab.accounts.models import Organization as OrganizationRow
from datalab.accounts.models import User
from datalab.db import make_session_factory, transaction, utcnow
from datalab.exports.service import publish_export
from datalab.lifecycle import UploadStatus
from datalab.runtime import make_store
from datalab.scoping import OrgContext
from datalab.uploads.models import Upload
from datalab.uploads.schemas import UploadRequest
from datalab.uploads.service import create_upload
from tests.support.accounts import Account, Organization, unique, unique_fice
from tests.support.server import Deployment
from tests.support.uploads import server_settings


@contextmanager
def _transaction(server: Deployment) -> Iterator[Session]:
    """A transaction on the server's database, committed when the block ends without error."""
    with transaction(make_session_factory(server.engine)) as db:
        yield db


def _organization_row(db: Session, uid: str) -> OrganizationRow:
    return db.scalars(select(OrganizationRow).where(OrganizationRow.uid == uid)).one()


def add_organization(server: Deployment, *, name: str | None = None, state_code: str = "KS") -> Organization:
    """A new organization with a unique name and FICE code."""
    with _transaction(server) as db:
        organization = accounts.create_organization(
            db=db, name=name or unique("Test College"), fice=unique_fice(), state_code=state_code
        )
        return Organization(
            uid=organization.uid,
            name=organization.name,
            fice=organization.fice,
            state_code=organization.state_code,
        )


def add_account(
    server: Deployment, *, organization_uids: Sequence[str] | None = None, password: str | None = None
) -> Account:
    """A new user with a password and one API key, member of these organizations (the demo's by default)."""
    assert server.demo is not None
    uids = tuple(organization_uids or [server.demo.organization_uid])
    user_name = unique("user") + "@example.edu"
    password = password or secrets.token_urlsafe(12)
    with _transaction(server) as db:
        organizations = [_organization_row(db, uid) for uid in uids]
        user = accounts.create_user(
            db=db, user_name=user_name, password=password, organizations=organizations
        )
        issued = accounts.create_api_key(db=db, user=user, name="test")
        return Account(
            uid=user.uid,
            user_name=user_name,
            password=password,
            api_key=issued.plain_key,
            api_key_uid=issued.api_key.uid,
            organization_uids=uids,
        )


def add_export(
    server: Deployment,
    source: Path,
    *,
    product: str,
    organization_uid: str | None = None,
    order_name: str = "",
) -> str:
    """A CSV file published as a new, not yet delivered export of the organization (the demo's by default);
    its uid."""
    assert server.demo is not None
    settings = server_settings(server)
    with _transaction(server) as db:
        export = publish_export(
            db=db,
            store=make_store(settings),
            bucket=settings.exports_bucket,
            organization=_organization_row(db, organization_uid or server.demo.organization_uid),
            product_key=product,
            source=source,
            order_name=order_name,
            now=utcnow(),
        )
        return export.uid


def add_upload(
    server: Deployment,
    *,
    account: Account | None = None,
    file_name: str = "roster.csv",
    product_type: str = "enrollment",
) -> str:
    """A new upload record in `uploading`, announced by the account (an operator's when None) in its first
    organization (the demo's without an account); its uid."""
    assert server.demo is not None
    settings = server_settings(server)
    organization_uid = account.organization_uids[0] if account else server.demo.organization_uid
    with _transaction(server) as db:
        user = db.scalars(select(User).where(User.uid == account.uid)).one() if account else None
        form = create_upload(
            db=db,
            store=make_store(settings),
            bucket=settings.uploads_bucket,
            org=OrgContext(user=user, organization=_organization_row(db, organization_uid)),
            request=UploadRequest(
                file_name=file_name, product_type=product_type, data_source="API", file_description=""
            ),
            base_url=server.root,
            ttl_seconds=settings.upload_form_ttl_seconds,
            max_size=settings.max_upload_bytes,
            now=utcnow(),
        )
        return form.upload.uid


def add_upload_row(
    db: Session, *, organization_id: int, status: UploadStatus, product_type: str = "enrollment"
) -> int:
    """An upload row in the status given, written straight into the session (for tests of the stages' tables
    that need no file); its id."""
    upload = Upload(
        organization_id=organization_id,
        file_name=f"{product_type}.csv",
        object_key=f"uploads/{unique('key')}",
        product_type=product_type,
        status=status.value,
        form_token=unique("token"),
        form_expires_at=utcnow() + timedelta(hours=1),
    )
    db.add(upload)
    db.flush()
    return upload.id
