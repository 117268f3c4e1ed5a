"""A client for the Data Lab file-exchange API (this server or the hosted service), base install only.

from datalab.client import Client
with Client("http://127.0.0.1:8080") as client:   # credentials from ENCOURA_* variables
    for export in client.exports(status="NotDelivered"):
        client.download(export, "downloads")
"""

from datalab.client.core import Client
from datalab.client.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    ConnectionFailed,
    DataLabError,
    DownloadError,
    NotFound,
    ProcessingFailed,
    UploadError,
)
from datalab.client.models import Export, FileRecord

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "ConnectionFailed",
    "DataLabError",
    "DownloadError",
    "Export",
    "FileRecord",
    "NotFound",
    "ProcessingFailed",
    "UploadError",
]
