"""Removing the files of records whose retention is over, one record at a time, the record kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, Update
from sqlalchemy.orm import Session, sessionmaker

from datalab.audit.service import record
from datalab.db import transaction
from datalab.storage.base import ObjectStore


@dataclass(frozen=True)
class DueFiles:
    """One record whose files are due for removal."""

    record_id: int
    uid: str
    organization_id: int
    keys: tuple[str, ...]
    size_bytes: int | None = None


def remove_due_files(
    *,
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    bucket: str,
    due: Select[*tuple[Any, ...]],
    due_files: Callable[[Row[*tuple[Any, ...]]], DueFiles],
    mark_removed: Callable[[int], Update],
    action: str,
    now: datetime,
) -> int:
    """Delete the files of the records `due` selects, mark each record and audit it as `action`; how many.

    `due_files` reads a selected row, `mark_removed` is the update that records the removal on a record.
    """
    with transaction(session_factory) as db:
        found = [due_files(row) for row in db.execute(due)]
    target_type = action.split(".", 1)[0]
    for files in found:
        # The files go first: a crash in between leaves a live record whose files are gone, which the next
        # round marks; the other order could leave files no round would ever delete.
        for key in files.keys:
            store.delete(bucket=bucket, key=key)
        with transaction(session_factory) as db:
            db.execute(mark_removed(files.record_id))
            record(
                db,
                action=action,
                organization_id=files.organization_id,
                now=now,
                actor_name="retention",
                target=(target_type, files.uid),
                size_bytes=files.size_bytes,
            )
    return len(found)
