"""Typed views of what the API returns; `raw` keeps the whole answer for fields not modelled here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from datalab.lifecycle import SETTLED

# A file in one of these statuses changes no more by itself: `upload --wait` stops there.
TERMINAL_STATUSES = SETTLED


def _millis(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    return None


@dataclass(frozen=True)
class Export:
    """An export file of the organization (GET /v1/datacenter/exports)."""

    uid: str
    product_key: str
    status: str
    quantity: int
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def delivered(self) -> bool:
        """Whether the service counts the file as delivered."""
        return self.status == "Delivered"

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Export:
        """Build from one element of the exports list."""
        created: dict[str, Any] = data["created"] if isinstance(data.get("created"), dict) else {}
        return cls(
            uid=str(data["uid"]),
            product_key=str(data.get("productKey", "")),
            status=str(data.get("status", "")),
            quantity=int(data.get("quantity") or 0),
            created_at=_millis(created.get("createdAt")) or _millis(data.get("date")),
            raw=data,
        )


@dataclass(frozen=True)
class FileRecord:
    """An uploaded file's record (GET /v1/files/{id})."""

    id: str
    file_name: str
    product_type: str
    status: str
    record_volume: int
    error: str | None
    meta: dict[str, Any] = field(repr=False, compare=False)
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """Whether the pipeline is done with the file (or waits for a person)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> FileRecord:
        """Build from the API's file record."""
        return cls(
            id=str(data["id"]),
            file_name=str(data.get("fileName") or data.get("filePath") or ""),
            product_type=str(data.get("productType", "")),
            status=str(data.get("status", "")),
            record_volume=int(data.get("recordVolume") or 0),
            error=data.get("error"),
            meta=dict(data.get("meta") or {}),
            raw=data,
        )
