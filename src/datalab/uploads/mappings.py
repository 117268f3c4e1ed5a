"""Saved field mappings: an organization maps a header set once, and later uploads reuse it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.layouts import normalize_header
from datalab.scoping import OrgContext, scoped
from datalab.uploads.models import FieldMapping


def header_key(headers: list[str]) -> str:
    """A file's header set, independent of order, case and punctuation: how saved mappings are found."""
    names = sorted({normalize_header(name) for name in headers})
    return hashlib.sha256(json.dumps(names).encode()).hexdigest()


def find_mapping(
    *, db: Session, organization_id: int, product_type: str, headers: list[str]
) -> FieldMapping | None:
    """The mapping the organization saved for this product and header set, if any."""
    return db.scalar(
        select(FieldMapping).where(
            FieldMapping.organization_id == organization_id,
            FieldMapping.product_type == product_type,
            FieldMapping.header_key == header_key(headers),
        )
    )


def save_mapping(
    *,
    db: Session,
    org: OrgContext,
    product_type: str,
    headers: list[str],
    fields_map: Mapping[str, str],
    values_map: Mapping[str, Mapping[str, str]],
    now: datetime,
) -> FieldMapping:
    """Save (or replace) the organization's mapping for this product and header set."""
    key = header_key(headers)
    mapping = db.scalar(
        scoped(FieldMapping, org).where(
            FieldMapping.product_type == product_type, FieldMapping.header_key == key
        )
    )
    if mapping is None:
        mapping = FieldMapping(
            organization_id=org.organization.id, product_type=product_type, header_key=key, created_at=now
        )
        db.add(mapping)
    mapping.headers = list(headers)
    mapping.fields_map = dict(fields_map)
    mapping.values_map = {field: dict(values) for field, values in values_map.items()}
    mapping.updated_at = now
    db.flush()
    return mapping
