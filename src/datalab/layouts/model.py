"""The layout data types: a product's ordered fields and its "at least one of" groups."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Layout", "LayoutError", "LayoutField"]


class LayoutError(ValueError):
    """A layout definition is not valid (bad JSON, unknown rule, duplicate field, bad width, ...)."""


@dataclass(frozen=True)
class LayoutField:
    """One Standard Import Layout field: upstream spelling, max width, required flag, cleansing rule."""

    name: str
    width: int
    required: bool
    rule: str


@dataclass(frozen=True)
class Layout:
    """A product's layout: fields in layout order, plus groups of which at least one field must be mapped.

    Several groups are all required (a conjunction of disjunctions), so "Email or (Address1 and ZipCode)"
    is written ``(("Email", "Address1"), ("Email", "ZipCode"))``.
    """

    product: str
    fields: tuple[LayoutField, ...]
    require_one_of: tuple[tuple[str, ...], ...]
    notes: str = ""

    def field(self, name: str) -> LayoutField:
        """The field with exactly this name; KeyError when the layout has none."""
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"layout {self.product!r} has no field {name!r}")
