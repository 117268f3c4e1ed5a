"""Retention of exports: a file is deleted once its retention period after publication is over.

The record stays, marked expired: the organization no longer sees it, operators and the audit trail do.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from datalab.audit.service import record
from datalab.db import transaction
from datalab.exports.models import Export
from datalab.scoping import across_organizations
from datalab.storage.base import ObjectStore

EXPIRE_BATCH = 100


def expire_exports(
    *,
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    bucket: str,
    cutoff: datetime,
    now: datetime,
) -> int:
    """Delete the files of exports published before the cutoff and mark them expired; how many."""
    with transaction(session_factory) as db:
        due = db.execute(
            across_organizations(Export)
            .where(Export.expired_at.is_(None), Export.created_at < cutoff)
            .order_by(Export.created_at)
            .limit(EXPIRE_BATCH)
            .with_only_columns(
                Export.id, Export.uid, Export.organization_id, Export.object_key, Export.size_bytes
            )
        ).all()
    for export_id, uid, organization_id, key, size in due:
        # The file goes first: a crash in between leaves a live record whose file is gone, which the next
        # round marks; the other order could leave a file no round would ever delete.
        store.delete(bucket=bucket, key=key)
        with transaction(session_factory) as db:
            db.execute(update(Export).where(Export.id == export_id).values(expired_at=now))
            record(
                db,
                action="export.expired",
                organization_id=organization_id,
                now=now,
                actor_name="retention",
                target=("export", uid),
                size_bytes=size,
            )
    return len(due)
