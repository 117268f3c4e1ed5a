"""Saved field mappings: an organization maps a header set once, and later uploads reuse it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from datalab.audit.service import record_for
from datalab.layouts import normalize_header
from datalab.scoping import OrgContext, scoped
from datalab.uploads.errors import InvalidMappingName, MappingNotFound
from datalab.uploads.models import FieldMapping


def header_key(headers: list[str]) -> str:
    """A file's header set, independent of order, case and punctuation: how saved mappings are found."""
    names = sorted({normalize_header(name) for name in headers})
    return hashlib.sha256(json.dumps(names).encode()).hexdigest()


def find_mapping(
    *, db: Session, org: OrgContext, product_type: str, headers: list[str]
) -> FieldMapping | None:
    """The mapping the organization saved for this product and header set, if any."""
    return db.scalar(
        scoped(FieldMapping, org).where(
            FieldMapping.product_type == product_type, FieldMapping.header_key == header_key(headers)
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
    created = mapping is None
    if mapping is None:
        mapping = FieldMapping(
            organization_id=org.organization.id, product_type=product_type, header_key=key, created_at=now
        )
        db.add(mapping)
    changed = (
        created
        or mapping.fields_map != dict(fields_map)
        or mapping.values_map != {field: dict(values) for field, values in values_map.items()}
    )
    mapping.headers = list(headers)
    mapping.fields_map = dict(fields_map)
    mapping.values_map = {field: dict(values) for field, values in values_map.items()}
    mapping.updated_at = now
    db.flush()
    record_for(
        db,
        org,
        action="mapping.saved",
        now=now,
        target=("mapping", mapping.uid),
        detail={
            "productType": product_type,
            "fields": sorted(fields_map),
            "created": created,
            "changed": changed,
        },
    )
    return mapping


def list_mappings(*, db: Session, org: OrgContext) -> list[FieldMapping]:
    """The organization's saved mappings, by product and most recently changed first."""
    return list(
        db.scalars(
            scoped(FieldMapping, org).order_by(FieldMapping.product_type, FieldMapping.updated_at.desc())
        )
    )


def get_mapping(*, db: Session, org: OrgContext, uid: str) -> FieldMapping:
    """One of the organization's saved mappings, else 404."""
    mapping = db.scalar(scoped(FieldMapping, org).where(FieldMapping.uid == uid))
    if mapping is None:
        raise MappingNotFound(uid)
    return mapping


def rename_mapping(*, db: Session, org: OrgContext, uid: str, name: str, now: datetime) -> FieldMapping:
    """Give a saved mapping a name people recognize."""
    mapping = get_mapping(db=db, org=org, uid=uid)
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > 200:
        raise InvalidMappingName()
    mapping.name = cleaned
    mapping.updated_at = now
    db.flush()
    record_for(db, org, action="mapping.renamed", now=now, target=("mapping", uid), detail={"name": cleaned})
    return mapping


def delete_mapping(*, db: Session, org: OrgContext, uid: str, now: datetime) -> None:
    """Forget a saved mapping: the next file with those headers is mapped again."""
    mapping = get_mapping(db=db, org=org, uid=uid)
    db.delete(mapping)
    db.flush()
    record_for(
        db,
        org,
        action="mapping.deleted",
        now=now,
        target=("mapping", uid),
        detail={"productType": mapping.product_type, "name": mapping.name},
    )
