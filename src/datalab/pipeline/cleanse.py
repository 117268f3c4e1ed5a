"""The `cleansing` stage: map the file's columns to the layout, clean them, accept or reject each row.

The file is cleansed frame by frame (bounded batches of rows), column by column (see `columnar`).
Accepted rows go, already in the shape of staging rows, to an Arrow stream beside the upload (the input
of `ingesting`); every warning and rejection goes to the upload's row report (`GET /v1/files/{id}/errors`).
Nothing is dropped silently: the counts are written to `meta`, and a file whose rejected share is over
the configured limit fails.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl

from datalab.db import transaction, utcnow
from datalab.layouts import Layout, LayoutField, load_layout, normalize_header
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import REPORT_COLUMNS, CsvObject, StagedRowsObject
from datalab.pipeline.columnar import ColumnCleaner, ColumnWarnings, clean_columns, json_records
from datalab.pipeline.keys import cleansed_key, report_key
from datalab.pipeline.readers import ReadError, open_table, read_ahead
from datalab.pipeline.runner import ClaimedJob, StageContext, fail_unreadable, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.uploads.models import Upload

# Frames cleaned at once: polars works on a frame's columns mostly one at a time (see cleansed_frames).
CLEANING_THREADS = 2
# The staging row's columns that repeat UniqueID, EntryYear and EntryTerm (the keys processing uses).
_KEY_COLUMNS = ("unique_id", "entry_year", "entry_term")


@dataclass(frozen=True)
class _MappedField:
    position: int
    layout_field: LayoutField
    column: int
    header: str
    value_map: Mapping[str, str] | None


@dataclass
class CleanseCounts:
    """What cleansing did to the file's rows."""

    accepted: int = 0
    warned: int = 0
    rejected: int = 0
    warnings: int = 0
    rejected_by_field: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows read."""
        return self.accepted + self.rejected

    def add(self, frame: FrameCounts) -> None:
        """Count a frame's rows, the frames taken in the file's order."""
        self.accepted += frame.accepted
        self.warned += frame.warned
        self.rejected += frame.rejected
        self.warnings += frame.warnings
        # a field is listed from the row where it was first missing, as a row-by-row pass would list it
        for name in sorted(frame.rejected_by_field, key=frame.first_missing.__getitem__):
            self.rejected_by_field[name] = self.rejected_by_field.get(name, 0) + frame.rejected_by_field[name]


@dataclass
class FrameCounts(CleanseCounts):
    """What cleansing did to one frame's rows, with the first row (and check) where each field was missing."""

    first_missing: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class CleansedFrame:
    """One frame cleansed: its accepted rows as staging rows, its report lines (CSV) and its counts."""

    staged: pl.DataFrame
    report: bytes
    counts: FrameCounts


def _plan(layout: Layout, headers: list[str], upload: Upload) -> list[_MappedField]:
    by_name = {header: index for index, header in enumerate(headers)}
    by_key = {normalize_header(header): index for index, header in enumerate(headers)}
    values_map: dict[str, Any] = upload.values_map or {}
    plan = []
    for position, layout_field in enumerate(layout.fields):
        header = (upload.fields_map or {}).get(layout_field.name)
        if not header:
            continue
        column = by_name.get(header, by_key.get(normalize_header(header)))
        if column is None:
            continue
        plan.append(
            _MappedField(position, layout_field, column, headers[column], values_map.get(layout_field.name))
        )
    return plan


_REPORT_SCHEMA = {
    "row": pl.Int64,
    "column": pl.String,
    "field": pl.String,
    "value": pl.String,
    "severity": pl.String,
    "code": pl.String,
    "message": pl.String,
    "seq": pl.Int64,
}


def _every_row(value: bool, height: int, name: str = "") -> pl.Series:
    # made by polars: built from a Python list of its height, it cost more than the rest of the bookkeeping
    return pl.repeat(value, height, dtype=pl.Boolean, eager=True).alias(name)


class Cleanser:
    """Cleans the frames of one file against one layout and mapping, column by column.

    Each frame gives the accepted rows as staging rows (``artifacts.STAGED_SCHEMA``, the record as JSON of
    its non-blank fields) and its report lines, in row order and, within a row, in the order of the layout's
    fields: each field's warnings, then the missing required fields, then the unmet "one of" groups.
    Frames may be cleaned by several threads at once (the column cleaners keep what they learn under a lock).
    """

    def __init__(self, *, layout: Layout, plan: list[_MappedField], today: date) -> None:
        self.layout = layout
        self.plan = plan
        # the file's counts so far (see cleansed_frames)
        self.counts = CleanseCounts()
        # each mapped field's cleaner and the frame column it cleans
        self.columns = [(ColumnCleaner(m.layout_field, m.value_map, today), f"c{m.column}") for m in plan]
        by_position = {mapped.position: index for index, mapped in enumerate(plan)}
        self.required = [
            (by_position.get(position), f.name)
            for position, f in enumerate(layout.fields)
            if f.required and f.row_required
        ]
        # Required fields whose blank or unusable value only warns: the row is kept without it.
        self.wanted = [
            (by_position.get(position), f.name)
            for position, f in enumerate(layout.fields)
            if f.required and not f.row_required
        ]
        positions = {f.name: index for index, f in enumerate(layout.fields)}
        self.groups = [
            (
                [by_position[positions[name]] for name in group if positions[name] in by_position],
                ", ".join(group),
            )
            for group in layout.require_one_of
        ]
        self.record_columns = {mapped.layout_field.name: f"v{index}" for index, mapped in enumerate(plan)}
        names = {mapped.layout_field.name: f"v{index}" for index, mapped in enumerate(plan)}
        self.key_columns = [names.get(name) for name in ("UniqueID", "EntryYear", "EntryTerm")]

    def clean(self, frame: pl.DataFrame, first_row: int) -> CleansedFrame:
        """The frame cleansed; `first_row` is the file's row number of its first row (the header is row 1)."""
        height = frame.height
        rows = pl.int_range(first_row, first_row + height, dtype=pl.Int64, eager=True).alias("row")
        counts = FrameCounts()
        lines: list[pl.DataFrame] = []
        cleaned = clean_columns(frame, self.columns)
        values = pl.DataFrame([rows, *cleaned.values.get_columns()])
        warned = self._warning_lines(frame, cleaned.warnings, rows, lines)
        warned = warned | self._unusable_wanted(values, rows, lines)
        counts.warnings = sum(part.height for part in lines)
        rejected = self._rejected(values, rows, lines, counts)
        counts.rejected = int(rejected.sum())
        counts.accepted = height - counts.rejected
        counts.warned = int((warned & rejected.not_()).sum())
        report = (
            pl.concat(lines).sort(["row", "seq"], maintain_order=True)
            if lines
            else pl.DataFrame(schema=_REPORT_SCHEMA)
        )
        staged = self._staged(values.filter(rejected.not_()), cleaned.escaped)
        return CleansedFrame(staged, csv_bytes(report.drop("seq")), counts)

    def _warning_lines(
        self, frame: pl.DataFrame, warnings: list[ColumnWarnings], rows: pl.Series, lines: list[pl.DataFrame]
    ) -> pl.Series:
        """Which rows got a warning; each field's warnings are added to `lines`."""
        warned = _every_row(False, frame.height, "warned")
        for index, (mapped, column) in enumerate(zip(self.plan, warnings, strict=True)):
            if column.position.null_count() == len(column.position):
                continue
            has_warning = column.position.is_not_null()
            warned = warned | has_warning
            lines.append(
                pl.DataFrame(
                    {
                        "row": rows.filter(has_warning),
                        "value": frame.get_column(f"c{mapped.column}").filter(has_warning),
                        "warning": column.of(has_warning),
                    }
                )
                .explode("warning")
                .select(
                    "row",
                    pl.lit(mapped.header).alias("column"),
                    pl.lit(mapped.layout_field.name).alias("field"),
                    "value",
                    pl.lit("warning").alias("severity"),
                    pl.col("warning").struct.field("code"),
                    pl.col("warning").struct.field("message"),
                    pl.lit(index, dtype=pl.Int64).alias("seq"),
                )
            )
        return warned

    def _unusable_wanted(self, values: pl.DataFrame, rows: pl.Series, lines: list[pl.DataFrame]) -> pl.Series:
        """Rows kept without a required field that only warns when blank (its lines added to `lines`)."""
        warned = _every_row(False, values.height, "warned")
        for seq, (wanted, name) in enumerate(self.wanted, start=len(self.plan)):
            blank = self._blank(values, wanted)
            if not blank.any():
                continue
            warned = warned | blank
            lines.append(
                self._row_lines(
                    rows.filter(blank),
                    header="" if wanted is None else self.plan[wanted].header,
                    name=name,
                    severity="warning",
                    code="required_missing",
                    message=f"{name} has no usable value: the row is kept without it",
                    seq=seq,
                )
            )
        return warned

    def _rejected(
        self, values: pl.DataFrame, rows: pl.Series, lines: list[pl.DataFrame], counts: FrameCounts
    ) -> pl.Series:
        """Rows missing a required field or every field of a "one of" group (their lines added to `lines`,
        the counts by field to `counts`)."""
        rejected = _every_row(False, values.height, "rejected")
        first_problem = len(self.plan) + len(self.wanted)
        for seq, (header, name, code, message, missing) in enumerate(
            self._problems(values), start=first_problem
        ):
            if not missing.any():
                continue
            rejected = rejected | missing
            counts.first_missing.setdefault(name, (int(rows.filter(missing)[0]), seq))
            lines.append(
                self._row_lines(
                    rows.filter(missing),
                    header=header,
                    name=name,
                    severity="error",
                    code=code,
                    message=f"row rejected: {message}",
                    seq=seq,
                )
            )
            counts.rejected_by_field[name] = counts.rejected_by_field.get(name, 0) + int(missing.sum())
        return rejected

    @staticmethod
    def _blank(values: pl.DataFrame, index: int | None) -> pl.Series:
        # An unmapped field is blank on every row.
        return _every_row(True, values.height) if index is None else values.get_column(f"v{index}") == ""

    @staticmethod
    def _row_lines(
        rows: pl.Series, *, header: str, name: str, severity: str, code: str, message: str, seq: int
    ) -> pl.DataFrame:
        # One report line per row, about a field as a whole (no raw value).
        return pl.DataFrame({"row": rows}).select(
            "row",
            pl.lit(header).alias("column"),
            pl.lit(name).alias("field"),
            pl.lit("").alias("value"),
            pl.lit(severity).alias("severity"),
            pl.lit(code).alias("code"),
            pl.lit(message).alias("message"),
            pl.lit(seq, dtype=pl.Int64).alias("seq"),
        )

    def _problems(self, values: pl.DataFrame) -> list[tuple[str, str, str, str, pl.Series]]:
        everything = _every_row(True, values.height)
        problems = []
        for index, name in self.required:
            missing = self._blank(values, index)
            header = "" if index is None else self.plan[index].header
            problems.append((header, name, "required_missing", f"{name} is required", missing))
        for indexes, names in self.groups:
            missing = everything
            for index in indexes:
                missing = missing & (values.get_column(f"v{index}") == "")
            problems.append(("", names, "required_one_of_missing", f"one of {names} is required", missing))
        return problems

    def _staged(self, accepted: pl.DataFrame, escaped: set[str]) -> pl.DataFrame:
        return accepted.select(
            pl.col("row").alias("row_number"),
            *(
                (pl.col(column) if column is not None else pl.lit("")).alias(name)
                for column, name in zip(self.key_columns, _KEY_COLUMNS, strict=True)
            ),
        ).with_columns(json_records(accepted, self.record_columns, escaped=escaped))


def csv_bytes(frame: pl.DataFrame) -> bytes:
    """The frame's rows as CSV lines the way Python's csv module writes them (blank fields unquoted)."""
    if frame.is_empty():
        return b""
    blanked = frame.with_columns(
        pl.when(pl.col(name) != "").then(pl.col(name)).alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )
    buffer = io.BytesIO()
    blanked.write_csv(buffer, include_header=False, line_terminator="\r\n")
    return buffer.getvalue()


def cleansed_frames(
    cleanser: Cleanser, frames: Iterator[pl.DataFrame]
) -> Generator[CleansedFrame, None, None]:
    """The frames cleansed, in order, their counts added to `cleanser.counts` as they come out.

    Reading a frame and cleaning frames run in threads of their own (polars, Arrow and file reads release
    the GIL), CLEANING_THREADS frames at a time, so that the work spreads over the cores; no more frames
    than that wait, so memory stays bounded.
    """
    # closed on the way out (an error included) before the reader's files are: no read is left running
    with (
        ThreadPoolExecutor(max_workers=CLEANING_THREADS, thread_name_prefix="cleanse") as cleaners,
        closing(read_ahead(frames)) as ahead,
    ):
        pending: deque[Future[CleansedFrame]] = deque()
        first_row = 2  # the header is row 1
        for frame in ahead:
            pending.append(cleaners.submit(cleanser.clean, frame, first_row))
            first_row += frame.height
            if len(pending) >= CLEANING_THREADS:
                yield _counted(cleanser, pending.popleft())
        while pending:
            yield _counted(cleanser, pending.popleft())


def _counted(cleanser: Cleanser, cleaning: Future[CleansedFrame]) -> CleansedFrame:
    cleansed = cleaning.result()
    cleanser.counts.add(cleansed.counts)
    return cleansed


def _cleanse_frames(
    cleanser: Cleanser, frames: Iterator[pl.DataFrame], out: StagedRowsObject, report: CsvObject
) -> None:
    """Cleanse the frames into the cleansed rows and the row report; each frame is written (compressed and
    hashed) by a thread of its own while the next ones are cleaned."""

    def write(cleansed: CleansedFrame) -> None:
        out.write_frame(cleansed.staged)
        report.write_bytes(cleansed.report)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cleanse-write") as writer:
        written: Future[None] | None = None
        for cleansed in cleansed_frames(cleanser, frames):
            if written is not None:
                written.result()
            written = writer.submit(write, cleansed)
        if written is not None:
            written.result()


def _outcome(counts: CleanseCounts, max_rejected_percent: float, uid: str) -> str | None:
    """The failure reason, or None when the file may go on to `ingesting`."""
    report = f"The row report (GET /v1/files/{uid}/errors) lists each rejected row and why."
    if counts.accepted == 0:
        return f"None of the file's {counts.total} rows could be accepted. {report}"
    share = 100.0 * counts.rejected / counts.total
    if share > max_rejected_percent:
        return (
            f"{counts.rejected} of {counts.total} rows ({share:.1f}%) were rejected, more than the "
            f"{max_rejected_percent:g}% allowed. {report}"
        )
    return None


def _cleanse_file(ctx: StageContext, upload: Upload) -> CleanseCounts:
    """Cleanse the upload's file frame by frame into its cleansed rows and its row report; the counts."""
    layout = load_layout(upload.product_type)
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=upload.object_key, temp_dir=ctx.temp_dir
        ) as path,
        open_table(path, file_name=upload.file_name) as (info, rows),
    ):
        cleanser = Cleanser(layout=layout, plan=_plan(layout, info.headers, upload), today=utcnow().date())
        with (
            StagedRowsObject(store=ctx.store, bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid)) as out,
            CsvObject(
                store=ctx.store, bucket=ctx.uploads_bucket, key=report_key(upload.uid), header=REPORT_COLUMNS
            ) as report,
        ):
            _cleanse_frames(cleanser, rows.frames(temp_dir=ctx.temp_dir), out, report)
            out.commit()
            report.commit()
    return cleanser.counts


def cleanse(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `cleansing` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        # A retried stage finds its upload in `cleansing` already.
        move_upload(
            db=db,
            upload_id=job.upload_id,
            from_status=UploadStatus.ENQUEUED,
            status=UploadStatus.CLEANSING,
            now=utcnow(),
        )
        upload = upload_waiting(db=db, job=job, status=UploadStatus.CLEANSING)
        if upload is None:
            return
        db.expunge(upload)
    try:
        counts = _cleanse_file(ctx, upload)
    except ReadError as exc:
        fail_unreadable(context=ctx, job=job, upload=upload, error=exc)
        return
    meta = {
        **upload.meta,
        "acceptedRows": counts.accepted,
        "warnedRows": counts.warned,
        "rejectedRows": counts.rejected,
        "warnings": counts.warnings,
        "rejectedByField": counts.rejected_by_field,
        "errorReport": f"/v1/files/{upload.uid}/errors",
    }
    failure = _outcome(counts, ctx.max_rejected_percent, upload.uid)
    with transaction(ctx.session_factory) as db:
        now = utcnow()
        moved = move_upload(
            db=db,
            upload_id=upload.id,
            from_status=UploadStatus.CLEANSING,
            status=UploadStatus.INGESTING if failure is None else UploadStatus.FAILURE,
            now=now,
            error=failure,
            meta=meta,
            record_volume=counts.total,
        )
        if moved and failure is None:
            enqueue_stage(db=db, upload_id=upload.id, stage="ingest", now=now)
        finish_job(db=db, job=job, now=now)
