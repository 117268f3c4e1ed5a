"""Moving an upload's staged rows into the production tables of its product."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from sqlalchemy import Row, Table, delete, insert, literal, select, tuple_
from sqlalchemy.orm import Session

from datalab.db import TransactionLock, hold_lock
from datalab.exports.models import Export
from datalab.exports.service import publish_export
from datalab.records.models import AffinityRecord, EmatchResult, EnrollmentRecord, EnrollmentTerm
from datalab.scoping import OrgContext, scoped
from datalab.storage.base import ObjectStore
from datalab.students.linkage import CERTAIN
from datalab.students.matching import Match, Matcher, Person
from datalab.students.models import Student
from datalab.uploads.models import Upload

MATCH_BATCH = 1000
# People matched in one run of the matcher: each run scans the student snapshot's blocks once, so runs are
# large; the rows of one run are all that is held in memory.
MATCH_CHUNK = 50_000
EMATCH_EXPORT_COLUMNS = (
    "UniqueID",
    "FirstName",
    "LastName",
    "BirthDate",
    "Email",
    "ZipCode",
    "MatchedBy",
    "StudentKey",
    "StudentHSGradYear",
    "StudentStateCode",
    "MatchProbability",
    "MatchEvidence",
    "DuplicateStudentKeys",
)


@dataclass(frozen=True)
class Outputs:
    """Where processing may publish files: the object store and the exports bucket."""

    store: ObjectStore
    exports_bucket: str
    temp_dir: Path
    matcher: Matcher


def _owner(upload: Upload) -> OrgContext:
    # The pipeline acts for the organization that uploaded the file, without a user.
    return OrgContext(user=None, organization=upload.organization)


def _copy_staged(
    db: Session, model: type[EnrollmentRecord | AffinityRecord], upload: Upload, staged: Table, now: datetime
) -> int:
    columns = ["organization_id", "upload_id", "row_number", "unique_id", "record", "created_at"]
    sources: list[Any] = [
        literal(upload.organization_id),
        staged.c.upload_id,
        staged.c.row_number,
        staged.c.unique_id,
        staged.c.record,
        literal(now, type_=model.__table__.c.created_at.type),
    ]
    if model is EnrollmentRecord:
        columns += ["entry_year", "entry_term"]
        sources += [staged.c.entry_year, staged.c.entry_term]
    # Both drivers report the rows an INSERT ... SELECT wrote (kept by preserve_rowcount): no second pass
    # over a million rows to count them.
    copied = db.execute(
        insert(model).from_select(columns, select(*sources).where(staged.c.upload_id == upload.id)),
        execution_options={"preserve_rowcount": True},
    )
    return int(copied.rowcount)  # type: ignore[attr-defined]


def apply_enrollment(
    *, db: Session, upload: Upload, staged: Table, terms: Table, now: datetime
) -> dict[str, int]:
    """Replace the institution's earlier records for the entry terms in the file with the file's rows
    (`staged` and `terms`: the tables holding them and their entry terms, see
    `datalab.pipeline.staging.Staging.tables`)."""
    # Two files of the organization processed at once would each miss the other's uncommitted rows and
    # both keep theirs: the second waits for the first, then replaces what it committed.
    hold_lock(db, TransactionLock.ENROLLMENT_TERMS, upload.organization_id)
    owner = _owner(upload)
    db.execute(delete(EnrollmentRecord).where(EnrollmentRecord.upload_id == upload.id))
    db.execute(delete(EnrollmentTerm).where(EnrollmentTerm.upload_id == upload.id))
    db.execute(
        insert(EnrollmentTerm).from_select(
            ["organization_id", "upload_id", "entry_year", "entry_term"],
            select(
                literal(upload.organization_id), terms.c.upload_id, terms.c.entry_year, terms.c.entry_term
            ).where(terms.c.upload_id == upload.id),
        )
    )
    file_terms = (
        scoped(EnrollmentTerm, owner)
        .where(EnrollmentTerm.upload_id == upload.id)
        .with_only_columns(EnrollmentTerm.entry_year, EnrollmentTerm.entry_term)
    )
    # the other uploads holding a term of the file, whose rows of those terms the file replaces
    earlier_terms = scoped(EnrollmentTerm, owner).where(
        EnrollmentTerm.upload_id != upload.id,
        tuple_(EnrollmentTerm.entry_year, EnrollmentTerm.entry_term).in_(file_terms),
    )
    # the organization's condition from the scoping helper, in a DELETE of the rows themselves
    organization_rows = scoped(EnrollmentRecord, owner).whereclause
    assert organization_rows is not None
    replaced = db.execute(
        delete(EnrollmentRecord).where(
            organization_rows,
            EnrollmentRecord.upload_id.in_(earlier_terms.with_only_columns(EnrollmentTerm.upload_id)),
            tuple_(EnrollmentRecord.entry_year, EnrollmentRecord.entry_term).in_(file_terms),
        )
    )
    db.execute(
        delete(EnrollmentTerm).where(
            EnrollmentTerm.id.in_(earlier_terms.with_only_columns(EnrollmentTerm.id))
        )
    )
    loaded = _copy_staged(db, EnrollmentRecord, upload, staged, now)
    return {"loadedRows": loaded, "replacedRows": int(replaced.rowcount)}  # type: ignore[attr-defined]


def apply_affinity(*, db: Session, upload: Upload, staged: Table, now: datetime) -> dict[str, int]:
    """Add the file's people to the institution's affinity records."""
    db.execute(delete(AffinityRecord).where(AffinityRecord.upload_id == upload.id))
    return {"loadedRows": _copy_staged(db, AffinityRecord, upload, staged, now)}


# a staged row with its record parsed
_StagedPerson = tuple[Row[Any], dict[str, str]]


def _staged_chunks(db: Session, upload: Upload, staged: Table) -> Iterator[list[_StagedPerson]]:
    """The upload's staged rows in file order, MATCH_CHUNK at a time, read in one pass (a server-side
    cursor on PostgreSQL: staging has no index to read it by batches of row numbers)."""
    rows = db.execute(
        select(staged).where(staged.c.upload_id == upload.id).order_by(staged.c.row_number),
        execution_options={"yield_per": MATCH_BATCH},
    )
    for batch in rows.partitions(MATCH_CHUNK):
        yield [(row, json.loads(row.record)) for row in batch]


def _person(record: dict[str, str]) -> Person:
    return Person(
        first_name=record.get("FirstName", ""),
        last_name=record.get("LastName", ""),
        birth_date=record.get("BirthDate", ""),
        email=record.get("Email", ""),
        zip_code=record.get("ZipCode", ""),
        address=record.get("Address1", ""),
        city=record.get("City", ""),
        phone=record.get("CellPhoneNumber", ""),
        hs_code=record.get("HSCode", ""),
        gender=record.get("Gender", ""),
    )


class _RowWriter(Protocol):
    def writerow(self, row: Iterable[Any], /) -> Any: ...


@dataclass
class _MatchTally:
    bands: dict[str, int] = field(default_factory=lambda: {"certain": 0, "probable": 0, "none": 0})
    duplicates: int = 0


def _students_of(db: Session, matches: list[Match | None]) -> dict[int, tuple[str, str]]:
    """The high-school graduation year and state of every student matched, by id."""
    found = [m.student_id for m in matches if m]
    students: dict[int, tuple[str, str]] = {}
    for start in range(0, len(found), MATCH_BATCH):
        students.update(
            (id_, (grad_year, state))
            for id_, grad_year, state in db.execute(
                select(Student.id, Student.hs_grad_year, Student.state_code).where(
                    Student.id.in_(found[start : start + MATCH_BATCH])
                )
            )
        )
    return students


def _match_chunk(
    *,
    db: Session,
    upload: Upload,
    outputs: Outputs,
    chunk: list[_StagedPerson],
    writer: _RowWriter,
    tally: _MatchTally,
    now: datetime,
) -> None:
    """Match one chunk of people: keep a result row for each, and write the matched ones to the export."""
    matches = outputs.matcher.match(db=db, people=[_person(record) for _, record in chunk])
    students = _students_of(db, matches)
    results = []
    for (row, record), match in zip(chunk, matches, strict=True):
        results.append(
            {
                "organization_id": upload.organization_id,
                "upload_id": upload.id,
                "row_number": row.row_number,
                "unique_id": row.unique_id,
                "record": row.record,
                "created_at": now,
                "student_id": match.student_id if match else None,
                "matched_by": match.rule if match else "",
                "match_probability": match.probability if match else None,
                "evidence": match.evidence if match else "",
            }
        )
        if match is None:
            tally.bands["none"] += 1
            continue
        tally.bands["certain" if match.probability >= CERTAIN else "probable"] += 1
        tally.duplicates += bool(match.duplicate_keys)
        grad_year, state = students[match.student_id]
        writer.writerow(
            [
                *(record.get(name, "") for name in EMATCH_EXPORT_COLUMNS[:6]),
                match.rule,
                match.student_key,
                grad_year,
                state,
                f"{match.probability:.4f}",
                match.evidence,
                " ".join(match.duplicate_keys),
            ]
        )
    for start in range(0, len(results), MATCH_BATCH):
        db.execute(insert(EmatchResult), results[start : start + MATCH_BATCH])


def apply_ematch(
    *, db: Session, upload: Upload, staged: Table, outputs: Outputs, now: datetime
) -> dict[str, Any]:
    """Match every person against the student database, keep the results and publish the matched rows."""
    db.execute(delete(EmatchResult).where(EmatchResult.upload_id == upload.id))
    # Processing the file again replaces its results export (same object key, see below).
    for earlier in db.scalars(
        scoped(Export, _owner(upload)).where(Export.product_key == "ematch", Export.list_path == upload.uid)
    ):
        db.delete(earlier)
    db.flush()
    tally = _MatchTally()
    outputs.temp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=outputs.temp_dir) as work:
        export_path = Path(work) / "ematch.csv"
        with export_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(EMATCH_EXPORT_COLUMNS)
            for chunk in _staged_chunks(db, upload, staged):
                _match_chunk(
                    db=db, upload=upload, outputs=outputs, chunk=chunk, writer=writer, tally=tally, now=now
                )
        export = publish_export(
            db=db,
            store=outputs.store,
            bucket=outputs.exports_bucket,
            organization=upload.organization,
            product_key="ematch",
            source=export_path,
            now=now,
            order_name=f"eMatch results of {PurePosixPath(upload.file_name).stem}",
            # Stable across retries of the stage: a retry overwrites the same object.
            list_path=upload.uid,
            named_at=upload.created_at,
        )
    return {
        "matchedRows": tally.bands["certain"] + tally.bands["probable"],
        "unmatchedRows": tally.bands["none"],
        "matchBands": tally.bands,
        "matchThreshold": outputs.matcher.threshold,
        "duplicateStudentMatches": tally.duplicates,
        "exportUid": export.uid,
    }
