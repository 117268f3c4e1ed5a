"""eMatch matching benchmark: a student database loaded, the model trained, an eMatch file matched against it.

The seeded student-shaped generator (``datalab.demo.people``) writes a student file and an eMatch file with
every corruption the quality tests use. Prints the seconds of ``datalab admin students load --no-train``
and ``datalab admin students train``, the eMatch file's time from the start of the upload to ``done`` as a
ratio of reading both files with polars (every column as text) in the same run, the server's peak memory,
and the precision, recall and F1 of the matches at this scale. Run with `make bench` (or
`python -m bench.matching --students 100000 --people 10000` for a quicker look; `--database-url` for
PostgreSQL).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import httpx2
from sqlalchemy import select
from tests.support.databases import DatabaseFactory
from tests.support.server import LiveServer, server_env

from bench.download import peak_report, status_kib
from bench.pipeline import polars_read, stage_seconds, wait_done
from bench.upload import timed_upload
from datalab.demo.people import LinkageSet, generate, score
from datalab.records.models import EmatchResult
from datalab.students.models import Student
from datalab.students.service import STUDENT_COLUMNS
from datalab.uploads.models import Upload

EMATCH_COLUMNS = (
    "UniqueID",
    "FirstName",
    "LastName",
    "BirthDate",
    "Email",
    "ZipCode",
    "Address1",
    "City",
    "CellPhoneNumber",
    "HSCode",
    "Gender",
)


def _write(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([row.get(name, "") for name in columns] for row in rows)


def _timed_cli(server: LiveServer, *args: str) -> tuple[float, object]:
    started = time.perf_counter()
    result = server.cli(*args, "--json")
    return time.perf_counter() - started, json.loads(result.stdout)


def _ematch_form(server: LiveServer, headers: dict[str, str]) -> dict[str, object]:
    response = httpx2.post(
        server.base_url + "/files/upload",
        headers=headers,
        json={"fileName": "people.csv", "productType": "ematch", "datasource": "API"},
    )
    response.raise_for_status()
    form: dict[str, object] = response.json()
    return form


def _timed_ematch(server: LiveServer, people_csv: Path) -> tuple[str, float, dict[str, object], int]:
    """Upload the eMatch file and wait until it is done: its id, the seconds it took, its meta, and the
    server's peak memory before the upload."""
    assert server.process is not None
    headers = server.login().headers
    form = _ematch_form(server, headers)
    peak_before = status_kib(server.process.pid, "VmHWM")
    started = time.perf_counter()
    timed_upload(form, people_csv)
    record = wait_done(server, str(form["id"]), headers)
    elapsed = time.perf_counter() - started
    if record["status"] != "done":
        raise SystemExit(f"the file ended in {record['status']}: {record.get('error')}")
    meta = record["meta"]
    assert isinstance(meta, dict)
    return str(form["id"]), elapsed, meta, peak_before


def _matched_keys(server: LiveServer, upload_uid: str) -> dict[str, str | None]:
    """The student key each eMatch row was matched to (None when it matched nobody), by UniqueID."""
    with server.db() as db:
        upload_id = db.scalar(select(Upload.id).where(Upload.uid == upload_uid))
        return dict(
            db.execute(
                select(EmatchResult.unique_id, Student.student_key)
                .outerjoin(Student, Student.id == EmatchResult.student_id)
                .where(EmatchResult.upload_id == upload_id)
            ).all()
        )


def _measure(server: LiveServer, args: argparse.Namespace, data: LinkageSet, home: Path) -> None:
    """Load the students, train the model, match the eMatch file and print the figures."""
    assert server.process is not None
    students_csv, people_csv = home / "students.csv", home / "people.csv"
    baseline = polars_read(students_csv)["seconds"] + polars_read(people_csv)["seconds"]
    load_seconds, loaded = _timed_cli(server, "admin", "students", "load", "--no-train", str(students_csv))
    train_seconds, _ = _timed_cli(server, "admin", "students", "train")
    upload_uid, elapsed, meta, peak_before = _timed_ematch(server, people_csv)
    print(
        f"students: {args.students:,}, eMatch rows: {args.people:,}, "
        f"database {server.database_url.split(':')[0]}"
    )
    print(f"polars read_csv of both files (all text): {baseline:.2f} s")
    print(f"students load: {load_seconds:.2f} s ({loaded}), {args.students / load_seconds:,.0f} rows/s")
    print(f"model training (u sampling on the students): {train_seconds:.2f} s")
    print(f"eMatch upload -> done: {elapsed:.2f} s, {args.people / elapsed:,.0f} rows/s")
    print(f"ratio eMatch/polars: {elapsed / baseline:.1f}")
    print(
        f"rows: {meta['acceptedRows']:,} accepted, {meta['rejectedRows']:,} rejected by the layout "
        f"(no email and no address or ZIP); bands {meta['matchBands']}, "
        f"threshold {meta['matchThreshold']}"
    )
    for stage, seconds in stage_seconds(server, upload_uid).items():
        print(f"  {stage:<8} {seconds:7.2f} s (queued to finished)")
    print(peak_report(server.process.pid, peak_before, f"matching {args.people:,} rows"))
    found = _matched_keys(server, upload_uid)
    scores = score([found.get(person["UniqueID"]) for person in data.people], data.truth)
    print(f"quality: P={scores.precision:.3f} R={scores.recall:.3f} F1={scores.f1:.3f}")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=1_000_000, help="students (default 1,000,000)")
    parser.add_argument("--people", type=int, default=100_000, help="eMatch rows (default 100,000)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL URL to create a database in")
    args = parser.parse_args()
    data = generate(seed=1, students=args.students, people=args.people)
    with tempfile.TemporaryDirectory(prefix="datalab-bench-") as work:
        home = Path(work)
        _write(home / "students.csv", STUDENT_COLUMNS, data.students)
        _write(home / "people.csv", EMATCH_COLUMNS, data.people)
        factory = DatabaseFactory(args.database_url)
        database_url = factory.new_url(home)
        server = LiveServer(
            own_process=True,
            home=home,
            database_url=database_url,
            env=server_env(home=home, database_url=database_url, extra={"DATALAB_PIPELINE_WORKERS": "1"}),
        )
        server.start()
        try:
            _measure(server, args, data, home)
        finally:
            server.stop()
            factory.drop_all()


if __name__ == "__main__":
    main()
