"""Files the pipeline keeps beside an upload in the uploads bucket: the cleansed rows and the row report."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from types import TracebackType

from datalab.storage.base import ObjectInfo, ObjectStore, ObjectWriter

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
REPORT_COLUMNS = ("row", "column", "field", "value", "severity", "code", "message")
_FLUSH_CHARS = 1024 * 1024


def cleansed_key(upload_uid: str) -> str:
    """Where the accepted rows of an upload, as staging rows, are kept between `cleansing` and `ingesting`."""
    return f"pipeline/{upload_uid}/cleansed.csv"


def report_key(upload_uid: str) -> str:
    """Where an upload's row report (warnings and rejections) is kept."""
    return f"pipeline/{upload_uid}/errors.csv"


class CsvObject:
    """A CSV file written row by row into the object store, visible only once committed."""

    def __init__(self, *, store: ObjectStore, bucket: str, key: str, header: Sequence[str]) -> None:
        self._writer: ObjectWriter = store.begin_write(bucket=bucket, key=key, content_type=CSV_CONTENT_TYPE)
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

    def commit(self) -> ObjectInfo:
        """Write what is buffered and make the object visible."""
        self._flush()
        return self._writer.commit()

    def __enter__(self) -> CsvObject:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self._writer.abort()
