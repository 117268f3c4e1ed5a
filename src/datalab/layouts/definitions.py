"""Loading and validating the per-product layout definitions, and matching file headers against them."""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from datalab.layouts.cleansing import RULES
from datalab.layouts.model import Layout, LayoutError, LayoutField

__all__ = [
    "PRODUCTS",
    "load_layout",
    "load_layout_file",
    "match_headers",
    "missing_required",
    "normalize_header",
]

PRODUCTS = ("enrollment", "affinity", "ematch")
"""Products with a layout definition (``legacy`` is an alias of ``affinity``, resolved by callers)."""

_TOP_KEYS = {"product", "notes", "fields", "requireOneOf"}
_FIELD_KEYS = {"name", "width", "required", "rule"}
# "rowRequired": false keeps a row whose value of a required field is blank or unusable, with a warning.
_OPTIONAL_FIELD_KEYS = {"rowRequired"}


def normalize_header(text: str) -> str:
    """A case- and punctuation-insensitive key: ``"Unique ID"``, ``"unique_id"`` -> ``"uniqueid"``.

    Unicode is NFKC-normalised and case-folded, then everything but letters and digits (spaces,
    underscores, hyphens, dots, a byte-order mark...) is dropped.
    """
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def _parse_layout(data: object, source: str) -> Layout:
    def fail(message: str) -> LayoutError:
        return LayoutError(f"{source}: {message}")

    if not isinstance(data, dict):
        raise fail("a layout definition must be a JSON object")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown member(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    product = data.get("product")
    if not isinstance(product, str) or not product:
        raise fail("'product' must be a non-empty string")
    notes = data.get("notes", "")
    if not isinstance(notes, str):
        raise fail("'notes' must be a string")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise fail("'fields' must be a non-empty list")

    fields: list[LayoutField] = []
    keys: dict[str, str] = {}
    for index, raw in enumerate(raw_fields):
        where = f"fields[{index}]"
        if not isinstance(raw, dict):
            raise fail(f"{where} must be an object with {', '.join(sorted(_FIELD_KEYS))}")
        if not _FIELD_KEYS <= set(raw) <= _FIELD_KEYS | _OPTIONAL_FIELD_KEYS:
            missing = sorted(_FIELD_KEYS - set(raw))
            extra = sorted(set(raw) - _FIELD_KEYS - _OPTIONAL_FIELD_KEYS)
            detail = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(extra)}" if extra else "",
                )
                if part
            )
            raise fail(f"{where}: {detail}")
        name, width, required, rule = raw["name"], raw["width"], raw["required"], raw["rule"]
        if not isinstance(name, str) or not normalize_header(name) or name != name.strip():
            raise fail(f"{where}: 'name' must be a non-empty string without surrounding spaces")
        where = f"{where} ({name})"
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise fail(f"{where}: 'width' must be a positive integer, got {width!r}")
        if not isinstance(required, bool):
            raise fail(f"{where}: 'required' must be true or false, got {required!r}")
        if not isinstance(rule, str) or rule not in RULES:
            raise fail(f"{where}: unknown rule {rule!r} (known: {', '.join(sorted(RULES))})")
        if width < RULES[rule].min_width:
            raise fail(
                f"{where}: width {width} cannot hold the output of rule {rule!r} "
                f"(needs at least {RULES[rule].min_width})"
            )
        row_required = raw.get("rowRequired", True)
        if not isinstance(row_required, bool) or not (row_required or required):
            raise fail(
                f"{where}: 'rowRequired' must be true or false, and only a required field can be false"
            )
        key = normalize_header(name)
        if key in keys:
            raise fail(f"{where}: duplicate field (same header key as {keys[key]!r})")
        keys[key] = name
        fields.append(
            LayoutField(name=name, width=width, required=required, rule=rule, row_required=row_required)
        )

    raw_groups = data.get("requireOneOf", [])
    if not isinstance(raw_groups, list):
        raise fail("'requireOneOf' must be a list of lists of field names")
    names = {field.name for field in fields}
    groups: list[tuple[str, ...]] = []
    for index, group in enumerate(raw_groups):
        where = f"requireOneOf[{index}]"
        if not isinstance(group, list) or not group or not all(isinstance(item, str) for item in group):
            raise fail(f"{where} must be a non-empty list of field names")
        unknown_fields = [item for item in group if item not in names]
        if unknown_fields:
            raise fail(f"{where}: unknown field(s) {', '.join(unknown_fields)}")
        if len(set(group)) != len(group):
            raise fail(f"{where}: a field is listed twice")
        groups.append(tuple(group))
    return Layout(product=product, fields=tuple(fields), require_one_of=tuple(groups), notes=notes)


def load_layout_file(path: Path | Traversable) -> Layout:
    """Read and validate one layout definition (JSON); LayoutError (a ValueError) says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LayoutError(f"{path.name}: not valid JSON ({exc})") from exc
    return _parse_layout(data, path.name)


@functools.cache
def _builtin_layout(product: str) -> Layout:
    layout = load_layout_file(resources.files("datalab.layouts").joinpath(f"{product}.json"))
    if layout.product != product:
        raise LayoutError(f"{product}.json: 'product' is {layout.product!r}, expected {product!r}")
    return layout


def load_layout(product: str) -> Layout:
    """The shipped layout of a product (cached); ValueError naming the valid products for any other name."""
    if product not in PRODUCTS:
        raise ValueError(
            f"no layout for product {product!r}; valid products: {', '.join(PRODUCTS)} "
            "('legacy' is an alias of 'affinity', resolved by the caller)"
        )
    return _builtin_layout(product)


def match_headers(layout: Layout, headers: Sequence[str]) -> list[dict[str, object]]:
    """The ``meta.headersMap`` list: ``{"field", "fileHeader", "isRequired"}`` per layout field, in order.

    A field matches the first file header with the same normalize_header key; ``fileHeader`` is that
    header as written in the file, or None. A file header matches at most one field: a repeated header
    (``Email`` and ``EMAIL``) maps only its first occurrence.
    """
    positions: dict[str, int] = {}
    for index, header in enumerate(headers):
        positions.setdefault(normalize_header(header), index)
    used: set[int] = set()
    result: list[dict[str, object]] = []
    for field in layout.fields:
        position = positions.get(normalize_header(field.name))
        file_header: str | None = None
        if position is not None and position not in used:
            used.add(position)
            file_header = headers[position]
        result.append({"field": field.name, "fileHeader": file_header, "isRequired": field.required})
    return result


def missing_required(layout: Layout, mapping: Mapping[str, str | None]) -> list[str]:
    """What the mapping leaves unsatisfied: required field names, then ``"one of A, B, ..."`` per group.

    ``mapping`` is field -> file header (a saved headers map); keys match field names by normalize_header
    and a None or blank value is unmapped. The same check works on a cleaned row (field -> value).
    """
    present = {normalize_header(key) for key, value in mapping.items() if value is not None and value.strip()}

    def mapped(name: str) -> bool:
        return normalize_header(name) in present

    missing = [field.name for field in layout.fields if field.required and not mapped(field.name)]
    missing.extend(
        f"one of {', '.join(group)}"
        for group in layout.require_one_of
        if not any(mapped(name) for name in group)
    )
    return missing
