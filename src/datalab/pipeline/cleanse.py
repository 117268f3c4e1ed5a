"""The `cleansing` stage: map each row to the layout, clean every value, accept or reject the row.

Accepted rows go to a cleansed CSV beside the upload (the input of `ingesting`); every warning and
rejection goes to the upload's row report (`GET /v1/files/{id}/errors`). Nothing is dropped silently: the
counts are written to `meta`, and a file whose rejected share is over the configured limit fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from datalab.db import transaction, utcnow
from datalab.layouts import Layout, LayoutField, load_layout, normalize_header
from datalab.layouts.cleansing import Cleaned, clean_value
from datalab.pipeline.artifacts import REPORT_COLUMNS, CsvObject, cleansed_key, report_key
from datalab.pipeline.readers import ReadError, open_table
from datalab.pipeline.runner import ClaimedJob, StageContext, fail_unreadable, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.uploads.models import Upload

ROW_COLUMN = "_row"
CLEANED_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class _MappedField:
    position: int
    layout_field: LayoutField
    column: int
    header: str
    value_map: Mapping[str, str] | None
    # Columns repeat values (terms, years, states, dates): each distinct raw value is cleaned once.
    cleaned: dict[str, Cleaned] = field(default_factory=dict)


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


def _warnings(text: str) -> Iterator[tuple[str, str]]:
    for part in text.split("; "):
        code, _field, message = part.split(": ", 2)
        yield code, message


class Cleanser:
    """Cleans rows of one file against one layout and mapping, writing the cleansed rows and the report."""

    def __init__(self, *, layout: Layout, plan: list[_MappedField], today: date) -> None:
        self.layout = layout
        self.plan = plan
        self.today = today
        self.counts = CleanseCounts()
        positions = {f.name: index for index, f in enumerate(layout.fields)}
        self.required = [(positions[f.name], f.name) for f in layout.fields if f.required and f.row_required]
        # Required fields whose blank or unusable value only warns (the row is kept).
        self.wanted = [
            (positions[f.name], f.name) for f in layout.fields if f.required and not f.row_required
        ]
        self.groups = [[positions[name] for name in group] for group in layout.require_one_of]
        self.group_names = [", ".join(group) for group in layout.require_one_of]
        self.headers_by_position = {mapped.position: mapped.header for mapped in plan}
        # Only mapped fields can hold a value: the cleansed file leaves the others out.
        self.output_positions = sorted(self.headers_by_position)
        self.output_fields = [layout.fields[position].name for position in self.output_positions]

    def clean(self, row_number: int, row: list[str], out: CsvObject, report: CsvObject) -> None:
        """Clean one row: write it to `out` when accepted, and its problems to `report`."""
        values = [""] * len(self.layout.fields)
        warned = False
        for mapped in self.plan:
            raw = row[mapped.column]
            if not raw:
                continue
            cleaned = mapped.cleaned.get(raw)
            if cleaned is None:
                cleaned = clean_value(raw, mapped.layout_field, value_map=mapped.value_map, today=self.today)
                if len(mapped.cleaned) < CLEANED_CACHE_SIZE:
                    mapped.cleaned[raw] = cleaned
            values[mapped.position] = cleaned.value
            if cleaned.warning is not None:
                warned = True
                for code, message in _warnings(cleaned.warning):
                    self.counts.warnings += 1
                    report.writerow(
                        [row_number, mapped.header, mapped.layout_field.name, raw, "warning", code, message]
                    )
        for position, name in self.wanted:
            if not values[position]:
                warned = True
                self.counts.warnings += 1
                report.writerow(
                    [
                        row_number,
                        self.headers_by_position.get(position, ""),
                        name,
                        "",
                        "warning",
                        "required_missing",
                        f"{name} has no usable value: the row is kept without it",
                    ]
                )
        problems = [
            (self.headers_by_position.get(position, ""), name, "required_missing", f"{name} is required")
            for position, name in self.required
            if not values[position]
        ] + [
            ("", names, "required_one_of_missing", f"one of {names} is required")
            for positions, names in zip(self.groups, self.group_names, strict=True)
            if not any(values[position] for position in positions)
        ]
        if problems:
            self.counts.rejected += 1
            for header, name, code, message in problems:
                self.counts.rejected_by_field[name] = self.counts.rejected_by_field.get(name, 0) + 1
                report.writerow([row_number, header, name, "", "error", code, f"row rejected: {message}"])
            return
        self.counts.accepted += 1
        if warned:
            self.counts.warned += 1
        out.writerow([row_number, *(values[position] for position in self.output_positions)])


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


def cleanse(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `cleansing` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        # A retried stage finds its upload in `cleansing` already.
        move_upload(db=db, upload_id=job.upload_id, from_status="enqueued", status="cleansing", now=utcnow())
        upload = upload_waiting(db=db, job=job, status="cleansing")
        if upload is None:
            return
        db.expunge(upload)
    layout = load_layout(upload.product_type)
    try:
        with (
            ctx.store.readable_path(
                bucket=ctx.uploads_bucket, key=upload.object_key, temp_dir=ctx.temp_dir
            ) as path,
            open_table(path, file_name=upload.file_name) as (info, rows),
        ):
            cleanser = Cleanser(
                layout=layout, plan=_plan(layout, info.headers, upload), today=utcnow().date()
            )
            with (
                CsvObject(
                    store=ctx.store,
                    bucket=ctx.uploads_bucket,
                    key=cleansed_key(upload.uid),
                    header=[ROW_COLUMN, *cleanser.output_fields],
                ) as out,
                CsvObject(
                    store=ctx.store,
                    bucket=ctx.uploads_bucket,
                    key=report_key(upload.uid),
                    header=REPORT_COLUMNS,
                ) as report,
            ):
                for row_number, row in enumerate(rows, start=2):
                    cleanser.clean(row_number, row, out, report)
                out.commit()
                report.commit()
    except ReadError as exc:
        fail_unreadable(context=ctx, job=job, upload=upload, error=exc)
        return
    counts = cleanser.counts
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
            from_status="cleansing",
            status="ingesting" if failure is None else "failure",
            now=now,
            error=failure,
            meta=meta,
            record_volume=counts.total,
        )
        if moved and failure is None:
            enqueue_stage(db=db, upload_id=upload.id, stage="ingest", now=now)
        finish_job(db=db, job=job, now=now)
