"""Where the pipeline keeps its files beside an upload in the uploads bucket, and the row report's type.

Apart from `datalab.pipeline.artifacts`, which writes and reads the files (with polars and pyarrow), so
that the modules only naming them (the upload routes, service and sweeper) load neither.
"""

from __future__ import annotations

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


def cleansed_key(upload_uid: str) -> str:
    """Where the accepted rows of an upload, as staging rows, are kept between `cleansing` and `ingesting`."""
    return f"pipeline/{upload_uid}/cleansed.arrows"


def report_key(upload_uid: str) -> str:
    """Where an upload's row report (warnings and rejections) is kept."""
    return f"pipeline/{upload_uid}/errors.csv"
