"""The `analyzing` stage: read the file, describe it in `meta`, and decide how its columns are mapped.

A complete mapping comes from a mapping the organization saved for the same header set, else from
matching headers to the layout's field names. With one, the file is `enqueued`; without one, an API
upload fails with the unmapped required fields named, and a person's upload waits in
`fields_mapping_required`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from sqlalchemy.orm import Session

from datalab.db import transaction, utcnow
from datalab.layouts import Layout, load_layout, match_headers, missing_required
from datalab.lifecycle import UploadStatus
from datalab.pipeline.readers import (
    WHITESPACE,
    ReadError,
    TableInfo,
    blank_count,
    column_names,
    open_table,
)
from datalab.pipeline.runner import ClaimedJob, StageContext, fail_unreadable, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.scoping import OrgContext
from datalab.uploads.mappings import find_mapping
from datalab.uploads.models import Upload

SAMPLE_ROWS = 50
# A column with at most this many distinct values is a coded one (gender, term, state...): its values are
# listed in meta so that a person can map them; beyond that the column stops being tracked.
CODED_VALUES = 25


@dataclass
class FileSummary:
    """What one pass over the rows learns: counts, empty cells per column and the first records."""

    info: TableInfo
    total_rows: int = 0
    empty: list[int] = field(default_factory=list)
    sample: list[dict[str, str]] = field(default_factory=list)
    # Distinct trimmed values per column while there are few of them; None once a column has too many.
    distinct: list[set[str] | None] = field(default_factory=list)

    def coded_values(self) -> dict[str, list[str]]:
        """The distinct values of each column that has few of them, sorted."""
        return {
            header: sorted(values)
            for header, values in zip(self.info.headers, self.distinct, strict=True)
            if values
        }


def summarize(info: TableInfo, rows: Iterable[list[str]]) -> FileSummary:
    """Count the records and the empty cells of each column, keeping the first 50 records (row by row)."""
    summary = FileSummary(info=info, empty=[0] * len(info.headers))
    summary.distinct = [set() for _ in info.headers]
    distinct = summary.distinct
    for row in rows:
        summary.total_rows += 1
        for index, value in enumerate(row):
            text = value.strip()
            if not text:
                summary.empty[index] += 1
                continue
            seen = distinct[index]
            if seen is not None and text not in seen:
                if len(seen) >= CODED_VALUES:
                    distinct[index] = None
                else:
                    seen.add(text)
        if len(summary.sample) < SAMPLE_ROWS:
            summary.sample.append(dict(zip(info.headers, row, strict=True)))
    return summary


def summarize_frames(info: TableInfo, frames: Iterable[pl.DataFrame]) -> FileSummary:
    """What summarize finds, computed with polars expressions over the file's frames (one query each)."""
    names = column_names(len(info.headers))
    summary = FileSummary(info=info, empty=[0] * len(names))
    distinct: list[set[str] | None] = [set() for _ in names]
    summary.distinct = distinct
    for frame in frames:
        summary.total_rows += frame.height
        if len(summary.sample) < SAMPLE_ROWS:
            for row in frame.head(SAMPLE_ROWS - len(summary.sample)).rows():
                summary.sample.append(dict(zip(info.headers, row, strict=True)))
        tracked = [index for index, seen in enumerate(distinct) if seen is not None]
        found = frame.select(
            *(blank_count(name) for name in names),
            *(_trimmed_values(names[index]).alias(str(index)) for index in tracked),
        ).row(0)
        for index, count in enumerate(found[: len(names)]):
            summary.empty[index] += count
        for index, values in zip(tracked, found[len(names) :], strict=True):
            seen = distinct[index]
            assert seen is not None
            seen.update(value for value in values if value)
            if len(seen) > CODED_VALUES:
                distinct[index] = None
    return summary


def _trimmed_values(name: str) -> pl.Expr:
    # The column's distinct raw values, then those trimmed (few, unless the column is not coded): with ""
    # among them, CODED_VALUES + 2 are enough to know that it is not.
    return pl.col(name).unique().str.strip_chars(WHITESPACE).unique().head(CODED_VALUES + 2).implode()


def _mapping_for(
    db: Session, upload: Upload, layout: Layout, headers: list[str]
) -> tuple[dict[str, str], dict[str, dict[str, str]], list[dict[str, object]]]:
    headers_map = match_headers(layout, headers)
    saved = find_mapping(
        db=db,
        org=OrgContext(user=None, organization=upload.organization),
        product_type=upload.product_type,
        headers=headers,
    )
    if saved is not None:
        for entry in headers_map:
            entry["fileHeader"] = saved.fields_map.get(str(entry["field"]))
        return dict(saved.fields_map), dict(saved.values_map), headers_map
    automatic = {
        str(entry["field"]): str(entry["fileHeader"]) for entry in headers_map if entry["fileHeader"]
    }
    return automatic, {}, headers_map


def _unmapped_error(missing: list[str]) -> str:
    return (
        f"Required fields are not mapped to any column of the file: {', '.join(missing)}. "
        "Name the file's columns after these fields, or map them once (upload a file with the same "
        'headers in Data Center, or POST /v1/files/{id}/process with {"Field": "Column"}); '
        "later uploads with the same headers reuse the saved mapping."
    )


def _read(ctx: StageContext, upload: Upload) -> FileSummary:
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=upload.object_key, temp_dir=ctx.temp_dir
        ) as path,
        open_table(path, file_name=upload.file_name) as (info, rows),
    ):
        return summarize_frames(info, rows.frames(temp_dir=ctx.temp_dir))


def analyze(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `analyzing` stage of one upload (a no-op when the upload has moved on already)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status=UploadStatus.ANALYZING)
        if upload is None:
            return
        db.expunge(upload)
    try:
        summary = _read(ctx, upload)
    except ReadError as exc:
        fail_unreadable(context=ctx, job=job, upload=upload, error=exc)
        return
    layout = load_layout(upload.product_type)
    headers = summary.info.headers
    with transaction(ctx.session_factory) as db:
        fields_map, values_map, headers_map = _mapping_for(db, upload, layout, headers)
        missing = missing_required(layout, fields_map)
        meta: dict[str, Any] = {
            "totalRows": summary.total_rows,
            "headers": [
                {"name": name, "emptyRows": count} for name, count in zip(headers, summary.empty, strict=True)
            ],
            "data": summary.sample,
            "headersMap": headers_map,
            "sourceFormat": summary.info.source_format,
            "codedValues": summary.coded_values(),
        }
        values: dict[str, Any] = {"record_volume": summary.total_rows, "encoding": summary.info.encoding}
        if not missing:
            values.update(fields_map=fields_map, values_map=values_map)
            if _move(db, upload.id, status=UploadStatus.ENQUEUED, meta=meta, **values):
                enqueue_stage(db=db, upload_id=upload.id, stage="cleanse", now=utcnow())
        elif upload.data_source.strip().lower() == "api":
            _move(
                db,
                upload.id,
                status=UploadStatus.FAILURE,
                error=_unmapped_error(missing),
                meta=meta,
                **values,
            )
        else:
            _move(db, upload.id, status=UploadStatus.FIELDS_MAPPING_REQUIRED, meta=meta, **values)
        finish_job(db=db, job=job, now=utcnow())


def _move(db: Session, upload_id: int, *, status: str, **values: Any) -> bool:
    return move_upload(
        db=db, upload_id=upload_id, from_status=UploadStatus.ANALYZING, status=status, now=utcnow(), **values
    )
