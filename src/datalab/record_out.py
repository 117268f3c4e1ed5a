"""Response shapes filled from database records by the wire's naming convention."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel
from pydantic.alias_generators import to_snake

Shape = TypeVar("Shape", bound=BaseModel)


def record_out(shape: type[Shape], record: object, **values: object) -> Shape:
    """`shape` with the `values` given, every other field read from the record's attribute of the same
    name in snake_case (`createdAt` from `created_at`)."""
    read = {name: getattr(record, to_snake(name)) for name in shape.model_fields if name not in values}
    return shape.model_validate({**read, **values})
