"""The layout data types: a product's ordered fields and its "at least one of" groups."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Layout", "LayoutError", "LayoutField"]


class LayoutError(ValueError):
    """A layout definition is not valid (bad JSON, unknown rule, duplicate field, bad width, ...)."""


@dataclass(frozen=True)
class LayoutField:
    """One Standard Import Layout field: upstream spelling, max width, required flag, cleansing rule.

    ``required``: the field must be mapped to a file header, and a row without a usable value is rejected,
    unless ``row_required`` is false: then such a row is kept with a warning (eMatch's BirthDate, so that a
    person with a missing birth date is still matched on the rest).
    """

    name: str
    width: int
    required: bool
    rule: str
    row_required: bool = True


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
