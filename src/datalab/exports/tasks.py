"""Retention of exports: a file is deleted once its retention period after publication is over.

The record stays, marked expired: the organization no longer sees it, operators and the audit trail do.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from datalab.exports.models import Export
from datalab.retention import DueFiles, remove_due_files
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
    return remove_due_files(
        session_factory=session_factory,
        store=store,
        bucket=bucket,
        due=across_organizations(Export)
        .where(Export.expired_at.is_(None), Export.created_at < cutoff)
        .order_by(Export.created_at)
        .limit(EXPIRE_BATCH)
        .with_only_columns(
            Export.id, Export.uid, Export.organization_id, Export.object_key, Export.size_bytes
        ),
        due_files=lambda row: DueFiles(
            record_id=row.id,
            uid=row.uid,
            organization_id=row.organization_id,
            keys=(row.object_key,),
            size_bytes=row.size_bytes,
        ),
        mark_removed=lambda export_id: update(Export).where(Export.id == export_id).values(expired_at=now),
        action="export.expired",
        now=now,
    )
