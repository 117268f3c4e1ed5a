"""Files the pipeline keeps beside an upload in the uploads bucket (at `datalab.pipeline.keys`): the
cleansed rows and the row report.

The cleansed rows are an Arrow IPC stream (LZ4-compressed buffers): written and read back column by column
without a text format in between (no quoting of the records' JSON, no parsing), one record batch per
cleansed frame.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import polars as pl
import pyarrow as pa

from datalab.pipeline.keys import CSV_CONTENT_TYPE
from datalab.storage.base import ObjectInfo, ObjectStore, ObjectWriter

ARROW_STREAM_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
# What the cleansed rows file holds for each accepted row: its staging row, without the upload's id. Its
# strings are string views, polars' own layout: a frame goes out and comes back without a copy of them.
STAGED_SCHEMA = pa.schema(
    [
        ("row_number", pa.int64()),
        ("unique_id", pa.string_view()),
        ("entry_year", pa.string_view()),
        ("entry_term", pa.string_view()),
        ("record", pa.string_view()),
    ]
)
# The same rows as files written before string views hold them (still read).
_LARGE_STRING_STAGED_SCHEMA = pa.schema(
    [
        (name, pa.large_string() if type_ == pa.string_view() else type_)
        for name, type_ in zip(STAGED_SCHEMA.names, STAGED_SCHEMA.types, strict=True)
    ]
)
REPORT_COLUMNS = ("row", "column", "field", "value", "severity", "code", "message")
_FLUSH_CHARS = 1024 * 1024


class _PendingObject:
    """An object being written into the store: visible once committed, dropped if its block fails."""

    def __init__(self, *, store: ObjectStore, bucket: str, key: str, content_type: str) -> None:
        self._writer: ObjectWriter = store.begin_write(bucket=bucket, key=key, content_type=content_type)

    def _finish(self) -> None:
        """Write what is still held back (called once, before the commit)."""

    def commit(self) -> ObjectInfo:
        """Finish writing and make the object visible."""
        self._finish()
        return self._writer.commit()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self._writer.abort()


class CsvObject(_PendingObject):
    """A CSV file written row by row into the object store, visible only once committed."""

    def __init__(self, *, store: ObjectStore, bucket: str, key: str, header: Sequence[str]) -> None:
        super().__init__(store=store, bucket=bucket, key=key, content_type=CSV_CONTENT_TYPE)
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\r\n")
        self._csv.writerow(header)
        self.rows = 0

    def writerow(self, row: Sequence[str | int]) -> None:
        """Append one row."""
        self._csv.writerow(row)
        self.rows += 1
        if self._buffer.tell() >= _FLUSH_CHARS:
            self._flush()

    def write_bytes(self, data: bytes) -> None:
        """Append rows already written as UTF-8 CSV (lines ending in CRLF)."""
        self._flush()
        if data:
            self._writer.write(data)

    def _flush(self) -> None:
        text = self._buffer.getvalue()
        if text:
            self._writer.write(text.encode("utf-8"))
            self._buffer.seek(0)
            self._buffer.truncate()

    def _finish(self) -> None:
        self._flush()


class _WriterFile:
    """The object writer as the binary file Arrow's stream writer expects."""

    closed = False

    def __init__(self, writer: ObjectWriter) -> None:
        self._writer = writer

    def write(self, data: bytes | memoryview) -> int:
        self._writer.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None


class StagedRowsObject(_PendingObject):
    """Staging rows written frame by frame to the object store as an Arrow stream, visible once committed."""

    def __init__(self, *, store: ObjectStore, bucket: str, key: str) -> None:
        super().__init__(store=store, bucket=bucket, key=key, content_type=ARROW_STREAM_CONTENT_TYPE)
        # LZ4 costs less than hashing and writing the bytes it saves (the records' JSON shrinks about 4 times)
        self._stream = pa.ipc.new_stream(
            pa.PythonFile(_WriterFile(self._writer), mode="w"),
            STAGED_SCHEMA,
            options=pa.ipc.IpcWriteOptions(compression="lz4"),
        )
        self.rows = 0

    def write_frame(self, frame: pl.DataFrame) -> None:
        """Append the frame's rows (the columns of STAGED_SCHEMA)."""
        if frame.is_empty():
            return
        table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
        # polars gives these types already: a cast would only copy the columns
        self._stream.write_table(table if table.schema == STAGED_SCHEMA else table.cast(STAGED_SCHEMA))
        self.rows += frame.height

    def _finish(self) -> None:
        self._stream.close()


@contextmanager
def staged_batches(path: Path) -> Iterator[Iterator[pa.RecordBatch]]:
    """The record batches of a cleansed rows file (one per frame, STAGED_SCHEMA), read one at a time.

    Read, not memory-mapped: the pages of a mapped file count towards the process's resident memory,
    which would then grow with the file.
    """
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_stream(source)
        if reader.schema not in (STAGED_SCHEMA, _LARGE_STRING_STAGED_SCHEMA):
            raise ValueError(f"{path.name} is not a file of staging rows")
        yield iter(reader)
