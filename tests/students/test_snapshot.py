"""The student snapshot: stored by training, read by the matcher, replaced when the students change."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from datalab.db import utcnow
from datalab.settings import DEFAULT_EMATCH_TRAINING_PAIRS
from datalab.students.matching import Person, ProbabilisticMatcher
from datalab.students.service import load_students, train_and_store
from tests.support.databases import DatabaseFactory


def _student(key: str, first: str, last: str, birth: str, email: str) -> dict[str, str]:
    return {"StudentKey": key, "FirstName": first, "LastName": last, "BirthDate": birth, "Email": email}


ANN = Person(first_name="Ann", last_name="Lee", birth_date="2008/04/01", email="ann@example.com")
BO = Person(first_name="Bo", last_name="Diaz", birth_date="2008/05/02", email="bo@example.com")


def test_the_snapshot_is_stored_by_training_and_read_until_students_change(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    engine = create_engine(database_factory.migrated_url(tmp_path))
    snapshots = tmp_path / "matching"
    now = utcnow()
    try:
        with Session(engine) as db:
            load_students(
                db=db,
                rows=[
                    _student("S1", "Ann", "Lee", "2008-04-01", "ann@example.com"),
                    _student("S2", "Cy", "Park", "2007-06-03", "cy@example.com"),
                ],
                now=now,
            )
            trained = train_and_store(
                db=db, now=now, snapshot_dir=snapshots, pairs=DEFAULT_EMATCH_TRAINING_PAIRS
            )
            db.commit()
            (stored,) = snapshots.glob("students-*.parquet")
            assert stored.name.startswith(f"students-{trained.model_id}-2-")
            assert pq.read_table(stored).num_rows == 2

            matcher = ProbabilisticMatcher(threshold=0.9, snapshot_dir=snapshots)
            try:
                (ann,) = matcher.match(db=db, people=[ANN])
                assert ann is not None and ann.student_key == "S1"
                # The matcher reads the stored file, not the database: a file without Ann matches nobody.
                table = pq.read_table(stored)
                without_ann = [row for row in table.to_pylist() if row["first_name"] != "ann"]
                pq.write_table(pa.Table.from_pylist(without_ann, schema=table.schema), stored)
                fresh = ProbabilisticMatcher(threshold=0.9, snapshot_dir=snapshots)
                assert fresh.match(db=db, people=[ANN]) == [None]
                fresh.close()
                # Loading students changes the state: the snapshot is rebuilt from the database and stored.
                load_students(
                    db=db,
                    rows=[_student("S3", "Bo", "Diaz", "2008-05-02", "bo@example.com")],
                    now=now + timedelta(seconds=1),
                )
                db.commit()
                ann, bo = matcher.match(db=db, people=[ANN, BO])
                assert (ann and ann.student_key, bo and bo.student_key) == ("S1", "S3")
                (replaced,) = snapshots.glob("students-*.parquet")
                assert replaced != stored and pq.read_table(replaced).num_rows == 3
            finally:
                matcher.close()
    finally:
        engine.dispose()
