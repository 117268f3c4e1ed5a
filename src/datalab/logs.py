"""Log lines: one JSON object per line (python-json-logger), each with the id of its request; no secrets.

The request id lives in a context variable set for each request by `datalab.operations.requests`; a
handler filter copies it into every record, so every line a request causes (the access line, an
error's traceback, a route's own message) carries it. Records from outside a request (start-up, the
pipeline threads) have `request_id` null.
"""

from __future__ import annotations

import logging
import logging.config
import re
from contextvars import ContextVar
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

LogFormat = Literal["json", "text"]

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# Query parameters of signed URLs whose values grant access: a logged URL must not be replayable.
_SECRET_QUERY = re.compile(
    r"(?i)((?:^|[?&])(?:x-amz-signature|x-amz-security-token|x-amz-credential|signature|awsaccesskeyid)=)[^&\s]*"
)
# uvicorn's access records carry (client address, method, path with query, HTTP version, status).
_ACCESS_ARGS = 5


def redact_url(text: str) -> str:
    """The text with the values of signature-bearing query parameters replaced by '***'."""
    return _SECRET_QUERY.sub(r"\1***", text)


class RequestIdFilter(logging.Filter):
    """Adds `request_id`, the id of the request being served (None outside one), to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class AccessLogFilter(logging.Filter):
    """Redacts signed URLs in access records and adds their parts as fields (client, method, path, status).

    Signatures and one-time tokens of download URLs must never reach a log line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(arg) if isinstance(arg, str) else arg for arg in record.args)
            if len(record.args) == _ACCESS_ARGS:
                record.client, record.method, record.path, _version, record.status = record.args
        return True


def log_config(log_format: LogFormat) -> dict[str, Any]:
    """A logging.config.dictConfig configuration for the server's and uvicorn's loggers, to stderr."""
    formatters: dict[str, dict[str, Any]] = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
            # uvicorn adds a colored copy of some messages.
            "reserved_attrs": [*RESERVED_ATTRS, "taskName", "color_message"],
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "datalab.logs.RequestIdFilter"},
            "access": {"()": "datalab.logs.AccessLogFilter"},
        },
        "formatters": {log_format: formatters[log_format]},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            # Its request lines hold a webhook's whole URL, whose query may carry the receiver's own
            # credential; the webhook sender logs each attempt without it.
            "httpx2": {"level": "WARNING"},
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {
                "handlers": ["stderr"],
                "level": "INFO",
                "propagate": False,
                "filters": ["access"],
            },
        },
    }


def configure_logging(log_format: LogFormat) -> None:
    """Send this process's log records to stderr in the given format."""
    logging.config.dictConfig(log_config(log_format))
