"""Loading and validating the per-product layout definitions, and matching file headers against them.

A definition file is validated by pydantic models (``LayoutDefinition``, ``FieldDefinition``): they are
the one statement of what a valid definition is — its members, their types, the JSON spellings
``requireOneOf`` and ``rowRequired``, and the rules across fields. A valid definition becomes the runtime
``model.Layout`` / ``model.LayoutField`` (plain frozen dataclasses). Those stay separate from the
definition models because code builds layout fields directly (the student loader's fields, a field with an
unregistered rule in a test of ``clean_value``): a field that validated itself on construction would need
``RULES``, which ``cleansing`` builds on ``LayoutField``, and would refuse the positional construction its
users write. ``LayoutError`` messages keep their own wording: pydantic's errors are translated, by
location, to ``<file>: fields[1] (EntryYear): ...``.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from datalab.layouts.cleansing import RULES
from datalab.layouts.model import Layout, LayoutError, LayoutField

__all__ = [
    "PRODUCTS",
    "FieldDefinition",
    "LayoutDefinition",
    "load_layout",
    "load_layout_file",
    "match_headers",
    "missing_required",
    "normalize_header",
]

PRODUCTS = ("enrollment", "affinity", "ematch")
"""Products with a layout definition (``legacy`` is an alias of ``affinity``, resolved by callers)."""

# The error type of the rules across members; its message is the LayoutError's text after the location.
_RULE_ERROR = "layout_definition"


def normalize_header(text: str) -> str:
    """A case- and punctuation-insensitive key: ``"Unique ID"``, ``"unique_id"`` -> ``"uniqueid"``.

    Unicode is NFKC-normalised and case-folded, then everything but letters and digits (spaces,
    underscores, hyphens, dots, a byte-order mark...) is dropped.
    """
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def _rule_error(message: str) -> PydanticCustomError:
    # the message goes in the context: a field name with braces is not a format placeholder
    return PydanticCustomError(_RULE_ERROR, "{message}", {"message": message})


_DEFINITION_CONFIG = ConfigDict(strict=True, extra="forbid", frozen=True, validate_by_name=True)


class FieldDefinition(BaseModel):
    """One member of ``fields``: ``name``, ``width``, ``required``, ``rule`` and optional ``rowRequired``.

    ``rowRequired``: false keeps a row whose value of a required field is blank or unusable, with a warning.
    """

    model_config = _DEFINITION_CONFIG

    name: str
    width: int = Field(gt=0)
    required: bool
    rule: str
    row_required: bool = Field(default=True, alias="rowRequired")

    @field_validator("name")
    @classmethod
    def _name_has_a_header_key(cls, name: str) -> str:
        if not normalize_header(name) or name != name.strip():
            raise ValueError("a non-empty name without surrounding spaces")
        return name

    @field_validator("rule")
    @classmethod
    def _rule_is_registered(cls, rule: str) -> str:
        if rule not in RULES:
            raise ValueError("a registered rule")
        return rule

    @model_validator(mode="after")
    def _width_and_row_required_agree(self) -> Self:
        needed = RULES[self.rule].min_width
        if self.width < needed:
            raise _rule_error(
                f"width {self.width} cannot hold the output of rule {self.rule!r} (needs at least {needed})"
            )
        if not (self.row_required or self.required):
            raise _rule_error(_FIELD_MESSAGES["rowRequired"])
        return self

    def to_field(self) -> LayoutField:
        """The runtime layout field."""
        return LayoutField(
            name=self.name,
            width=self.width,
            required=self.required,
            rule=self.rule,
            row_required=self.row_required,
        )


class LayoutDefinition(BaseModel):
    """A layout definition file: ``product``, ``notes``, ``fields`` and ``requireOneOf``."""

    model_config = _DEFINITION_CONFIG

    product: str = Field(min_length=1)
    notes: str = ""
    fields: list[FieldDefinition] = Field(min_length=1)
    require_one_of: list[Annotated[list[str], Field(min_length=1)]] = Field(
        default_factory=list, alias="requireOneOf"
    )

    @model_validator(mode="after")
    def _fields_and_groups_agree(self) -> Self:
        keys: dict[str, str] = {}
        for index, field in enumerate(self.fields):
            key = normalize_header(field.name)
            if key in keys:
                raise _rule_error(
                    f"fields[{index}] ({field.name}): duplicate field (same header key as {keys[key]!r})"
                )
            keys[key] = field.name
        names = set(keys.values())
        for index, group in enumerate(self.require_one_of):
            unknown = [name for name in group if name not in names]
            if unknown:
                raise _rule_error(f"requireOneOf[{index}]: unknown field(s) {', '.join(unknown)}")
            if len(set(group)) != len(group):
                raise _rule_error(f"requireOneOf[{index}]: a field is listed twice")
        return self

    def to_layout(self) -> Layout:
        """The runtime layout."""
        return Layout(
            product=self.product,
            fields=tuple(field.to_field() for field in self.fields),
            require_one_of=tuple(tuple(group) for group in self.require_one_of),
            notes=self.notes,
        )


_TOP_KEYS = sorted(field.alias or name for name, field in LayoutDefinition.model_fields.items())
_FIELD_KEYS = sorted(name for name, field in FieldDefinition.model_fields.items() if field.is_required())

# What a member of a field definition must be, by its key; "{input!r}" is the value found.
_FIELD_MESSAGES = {
    "name": "'name' must be a non-empty string without surrounding spaces",
    "width": "'width' must be a positive integer, got {input!r}",
    "required": "'required' must be true or false, got {input!r}",
    "rule": "unknown rule {input!r} (known: " + ", ".join(sorted(RULES)) + ")",
    "rowRequired": "'rowRequired' must be true or false, and only a required field can be false",
}

_TOP_MESSAGES = {
    "product": "'product' must be a non-empty string",
    "notes": "'notes' must be a string",
    "fields": "'fields' must be a non-empty list",
    "requireOneOf": "'requireOneOf' must be a list of lists of field names",
}


def _field_location(index: int, data: object) -> str:
    """``fields[1] (EntryYear)``: the index, and the field's name when it has one."""
    where = f"fields[{index}]"
    if isinstance(data, dict) and isinstance(data.get("fields"), list):
        raw = data["fields"][index]
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            where = f"{where} ({raw['name']})"
    return where


def _describe(errors: list[ErrorDetails], data: object) -> str:
    """The LayoutError text (after the file name) for the first of pydantic's errors: location, then rule."""
    unknown = sorted(
        str(error["loc"][0])
        for error in errors
        if error["type"] == "extra_forbidden" and len(error["loc"]) == 1
    )
    if unknown:
        return f"unknown member(s) {', '.join(unknown)} (allowed: {', '.join(_TOP_KEYS)})"
    first = errors[0]
    loc = first["loc"]
    if first["type"] == _RULE_ERROR:
        return first["msg"] if not loc else f"{_field_location(int(loc[1]), data)}: {first['msg']}"
    if not loc:
        return "a layout definition must be a JSON object"
    top = str(loc[0])
    if top == "requireOneOf" and len(loc) > 1:
        return f"requireOneOf[{loc[1]}] must be a non-empty list of field names"
    if top != "fields" or len(loc) == 1:
        return _TOP_MESSAGES[top]
    index = int(loc[1])
    if len(loc) == 2:
        return f"fields[{index}] must be an object with {', '.join(_FIELD_KEYS)}"
    own = [error for error in errors if error["loc"][:2] == loc[:2]]
    missing = sorted(str(error["loc"][2]) for error in own if error["type"] == "missing")
    extra = sorted(str(error["loc"][2]) for error in own if error["type"] == "extra_forbidden")
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "",
            )
            if part
        )
        return f"fields[{index}]: {detail}"
    key = str(loc[2])
    message = _FIELD_MESSAGES[key].format(input=first["input"])
    return f"fields[{index}]: {message}" if key == "name" else f"{_field_location(index, data)}: {message}"


def load_layout_file(path: Path | Traversable) -> Layout:
    """Read and validate one layout definition (JSON); LayoutError (a ValueError) says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LayoutError(f"{path.name}: not valid JSON ({exc})") from exc
    try:
        definition = LayoutDefinition.model_validate(data)
    except ValidationError as exc:
        raise LayoutError(f"{path.name}: {_describe(exc.errors(), data)}") from exc
    return definition.to_layout()


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
