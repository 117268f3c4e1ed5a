"""Pipeline benchmark: a generated enrollment CSV uploaded, analyzed, cleansed, ingested and processed.

Prints the time from the start of the upload to `done` as a ratio of reading the same file with polars
(every column as text) in the same run, rows per second, each stage's time and its own ratio to that read,
and the peak memory of the server (which runs the pipeline) and of the polars reader. Run with
`make bench` (or `python -m bench.pipeline --rows 100000` for a quicker look; `--database-url` for
PostgreSQL; compare the peak RSS of `--rows 1000000` and `--rows 5000000` for memory flat in file size).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from sqlalchemy import select
from tests.support.databases import DatabaseFactory
from tests.support.server import LiveServer, server_env

from bench.download import peak_report, status_kib
from bench.upload import new_form, timed_upload
from datalab.demo.uploads import write_enrollment_csv
from datalab.lifecycle import SETTLED
from datalab.pipeline.models import PipelineJob
from datalab.uploads.models import Upload

POLARS_READ = """
import json, resource, sys, time
import polars as pl
started = time.perf_counter()
frame = pl.read_csv(sys.argv[1], infer_schema=False)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "rows": frame.height,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


# polars reads of the file whose median is the baseline
BASELINE_RUNS = 3


def polars_read(path: Path) -> dict[str, float]:
    """Seconds, rows and peak RSS of polars reading the file with every column as text (own process)."""
    result = subprocess.run(
        [sys.executable, "-c", POLARS_READ, str(path)], check=True, capture_output=True, text=True
    )
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def polars_baseline(path: Path, runs: int = BASELINE_RUNS) -> tuple[dict[str, float], list[float]]:
    """The median of several polars reads (one read alone varied from 0.5 s to 1.3 s on a busy machine),
    and each read's seconds."""
    reads = sorted((polars_read(path) for _ in range(runs)), key=lambda figures: figures["seconds"])
    return reads[len(reads) // 2], [figures["seconds"] for figures in reads]


def wait_done(server: LiveServer, uid: str, headers: dict[str, str]) -> dict[str, object]:
    """Poll the file until the pipeline is finished with it.

    On one kept connection: a new client per request costs this process about 25 ms of CPU (its TLS
    context), taken from the server being measured on a small machine.
    """
    with httpx2.Client(timeout=120) as client:
        while True:
            answer = client.get(f"{server.base_url}/files/{uid}", headers=headers)
            if answer.status_code == 401:
                # a large file outlasts a session token
                headers = server.login().headers
                continue
            if answer.status_code == 200:
                record: dict[str, object] = answer.json()
                if record["status"] in SETTLED:
                    return record
            # a busy server (503 while SQLite's one writer moves a large file) is asked again
            time.sleep(0.1)


def stage_seconds(server: LiveServer, uid: str) -> dict[str, float]:
    """How long each stage's job took, from the database's job records."""
    with server.db() as db:
        upload_id = db.scalar(select(Upload.id).where(Upload.uid == uid))
        jobs = db.scalars(
            select(PipelineJob).where(PipelineJob.upload_id == upload_id).order_by(PipelineJob.id)
        )
        return {
            job.stage: (job.finished_at - job.created_at).total_seconds()
            for job in jobs
            if job.finished_at is not None
        }


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in the file (default 1,000,000)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL URL to create a database in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="datalab-bench-") as work:
        home = Path(work)
        source = home / "enrollment.csv"
        write_enrollment_csv(source, count=args.rows, seed=1)
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
            assert server.process is not None
            baseline, reads = polars_baseline(source)
            form = new_form(server)
            headers = server.login().headers
            peak_before = status_kib(server.process.pid, "VmHWM")
            started = time.perf_counter()
            posted = timed_upload(form, source)
            record = wait_done(server, str(form["id"]), headers)
            elapsed = time.perf_counter() - started
            if record["status"] != "done":
                raise SystemExit(f"the file ended in {record['status']}: {record.get('error')}")
            size = source.stat().st_size
            print(f"file: {args.rows:,} rows, {size / 2**20:.0f} MiB, database {database_url.split(':')[0]}")
            print(
                f"polars read_csv (all text): {baseline['seconds']:.2f} s, the median of "
                f"{', '.join(f'{seconds:.2f}' for seconds in reads)} s; "
                f"peak RSS {baseline['peak_kib'] / 1024:.0f} MiB"
            )
            meta = record["meta"]
            assert isinstance(meta, dict)
            print(f"pipeline upload -> done: {elapsed:.2f} s, {args.rows / elapsed:,.0f} rows/s")
            print(
                f"rows: {meta['acceptedRows']:,} accepted ({meta['warnedRows']:,} with warnings), "
                f"{meta['rejectedRows']:,} rejected, {meta['loadedRows']:,} loaded"
            )
            read = baseline["seconds"]
            print(f"ratio pipeline/polars: {elapsed / read:.1f}")
            print(f"  {'upload':<8} {posted:7.2f} s  {posted / read:5.1f}x  (the POST of the file)")
            stages = stage_seconds(server, str(form["id"]))
            for stage, seconds in stages.items():
                print(f"  {stage:<8} {seconds:7.2f} s  {seconds / read:5.1f}x  (queued to finished)")
            # a stage's finish is stamped before its transaction commits: the last commit is in no stage
            rest = elapsed - posted - sum(stages.values())
            print(f"  {'rest':<8} {rest:7.2f} s  {rest / read:5.1f}x  (last commit, polling)")
            print(peak_report(server.process.pid, peak_before, f"the pipeline of {args.rows:,} rows"))
        finally:
            server.stop()
            factory.drop_all()


if __name__ == "__main__":
    main()
