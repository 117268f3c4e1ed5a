"""The one pagination helper used by every list endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from datalab.errors import bad_request

T = TypeVar("T")
MAX_LIMIT = 1000
# Largest offset a list takes (databases refuse offsets past 2**63 - 1; no list is anywhere near this).
MAX_OFFSET = 1_000_000_000
# Largest value of any integer query parameter.
MAX_QUERY_INTEGER = 2**62


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the total number of matching rows (the total-count header)."""

    items: list[T]
    total: int


def non_negative(name: str, raw: str | None) -> int | None:
    """An optional non-negative integer query value; anything else gets a 400 naming the parameter."""
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > 32:
            raise ValueError(raw)
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, not {raw[:32]!r}", code=f"invalid_{name}") from None
    if value < 0:
        raise bad_request(f"{name} must not be negative", code=f"invalid_{name}")
    if value > MAX_QUERY_INTEGER:
        raise bad_request(f"{name} must be at most {MAX_QUERY_INTEGER}", code=f"invalid_{name}")
    return value


def parse_paging(*, limit: str | None, offset: str | None) -> tuple[int | None, int]:
    """Validate limit/offset query values (both optional); bad ones get a 400."""
    parsed_limit = non_negative("limit", limit)
    if parsed_limit is not None and parsed_limit > MAX_LIMIT:
        raise bad_request(f"limit must be at most {MAX_LIMIT}", code="invalid_limit")
    parsed_offset = non_negative("offset", offset) or 0
    if parsed_offset > MAX_OFFSET:
        raise bad_request(f"offset must be at most {MAX_OFFSET}", code="invalid_offset")
    return parsed_limit, parsed_offset


def paginate(*, db: Session, query: Select[T], limit: int | None, offset: int) -> Page[T]:
    """Run an ordered query for one page and count every match."""
    total_query: Select[Any] = select(func.count()).select_from(query.order_by(None).subquery())
    total = int(db.scalar(total_query) or 0)
    page_query = query.offset(offset)
    if limit is not None:
        page_query = page_query.limit(limit)
    return Page(items=list(db.scalars(page_query).unique()), total=total)
