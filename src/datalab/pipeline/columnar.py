"""Cleansing rules applied to whole columns: polars expressions, or each distinct value cleaned once.

``layouts.cleansing.RULES`` stays the definition of what a rule does. A few rules that see mostly distinct
values (free text, e-mail addresses, phone numbers, high-school codes) also have a polars expression here
that gives the same value and warning; it is used only while ``RULES`` still holds the function it mirrors,
so a rule changed in ``layouts.cleansing`` is applied through its function. Every other rule — and every
field with a value mapping — is applied to each distinct raw value of the column once, with
``clean_value``, and the results are joined back to the rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from datalab.layouts.cleansing import (
    RULES,
    Cleaned,
    RuleFunction,
    clean_email,
    clean_hs_code,
    clean_phone,
    clean_text,
    clean_value,
)
from datalab.layouts.model import LayoutField
from datalab.pipeline.readers import WHITESPACE

# Distinct values whose cleaning is remembered from one batch of rows to the next, per column.
CLEANED_CACHE_SIZE = 50_000

_SPACE = "[" + "".join(f"\\x{{{ord(char):x}}}" for char in WHITESPACE) + "]"
_NULL = pl.lit(None, dtype=pl.String)

_Expression = Callable[[pl.Expr, LayoutField], tuple[pl.Expr, pl.Expr]]


def _warning(code: str, field: LayoutField, message: str) -> pl.Expr:
    # the same text as layouts.cleansing._warning
    return pl.lit(f"{code}: {field.name}: {message}")


def _text(text: pl.Expr, field: LayoutField) -> tuple[pl.Expr, pl.Expr]:
    return text, _NULL


def _email(text: pl.Expr, field: LayoutField) -> tuple[pl.Expr, pl.Expr]:
    # an "@" with text before it and text without "@" after the last one, and no whitespace anywhere
    valid = text.str.contains(r"(?s)^.+@[^@]+$") & text.str.contains(_SPACE).not_()
    return (
        pl.when(valid).then(text.str.to_lowercase()).otherwise(pl.lit("")),
        pl.when(valid).then(_NULL).otherwise(_warning("email_invalid", field, "not an email address")),
    )


def _phone(text: pl.Expr, field: LayoutField) -> tuple[pl.Expr, pl.Expr]:
    digits = text.str.replace_all(r"(?i)\s*(?:ext\.?|extension|x|#).*$", "").str.replace_all(r"\D", "")
    valid = digits.str.len_chars() >= 10
    return (
        pl.when(valid).then(digits.str.slice(-10)).otherwise(pl.lit("")),
        pl.when(valid).then(_NULL).otherwise(_warning("phone_invalid", field, "fewer than 10 digits")),
    )


def _hs_code(text: pl.Expr, field: LayoutField) -> tuple[pl.Expr, pl.Expr]:
    valid = text.str.contains(r"^\d{6}$")
    return (
        pl.when(valid).then(text).otherwise(pl.lit("")),
        pl.when(valid)
        .then(_NULL)
        .when(text.str.contains(r"^\d{5}$"))
        .then(
            _warning(
                "hs_code_invalid", field, "must be exactly 6 digits (leading zero lost in a spreadsheet?)"
            )
        )
        .otherwise(_warning("hs_code_invalid", field, "must be exactly 6 digits")),
    )


# rule name -> (the rule function the expression mirrors, the expression)
EXPRESSIONS: Mapping[str, tuple[RuleFunction, _Expression]] = {
    "text": (clean_text, _text),
    "email": (clean_email, _email),
    "phone": (clean_phone, _phone),
    "hs_code": (clean_hs_code, _hs_code),
}


def expression_for(layout_field: LayoutField) -> _Expression | None:
    """The column expression of a field's rule, while RULES still holds the function it mirrors."""
    entry = EXPRESSIONS.get(layout_field.rule)
    if entry is None or RULES[layout_field.rule].function is not entry[0]:
        return None
    return entry[1]


def _fitted(raw: pl.Expr, layout_field: LayoutField, expression: _Expression) -> tuple[pl.Expr, pl.Expr]:
    # layouts.cleansing._rule: trimmed, blank stays blank without a warning, the result fitted to the width
    text = raw.str.strip_chars(WHITESPACE)
    value, warning = expression(text, layout_field)
    width = layout_field.width
    too_long = value.str.len_chars() > width
    cut = pl.lit(f"truncated: {layout_field.name}: value longer than {width} characters was truncated")
    fitted_value = pl.when(too_long).then(value.str.slice(0, width).str.strip_chars_end(WHITESPACE))
    fitted_warning = pl.when(too_long).then(
        pl.when(warning.is_null()).then(cut).otherwise(pl.concat_str([warning, pl.lit("; "), cut]))
    )
    blank = text == ""
    return (
        pl.when(blank).then(pl.lit("")).otherwise(fitted_value.otherwise(value)),
        pl.when(blank).then(_NULL).otherwise(fitted_warning.otherwise(warning)),
    )


@dataclass
class ColumnCleaner:
    """Cleans one mapped column of a file, batch after batch."""

    layout_field: LayoutField
    value_map: Mapping[str, str] | None
    today: date
    cache: dict[str, Cleaned] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._expression = None if self.value_map else expression_for(self.layout_field)

    def clean(self, raw: pl.Series) -> tuple[pl.Series, pl.Series]:
        """The cleaned values ("" when blank or dropped) and the warnings (null when none) of a column."""
        if self._expression is not None:
            value, warning = _fitted(pl.col("raw"), self.layout_field, self._expression)
            frame = raw.rename("raw").to_frame().select(value.alias("value"), warning.alias("warning"))
            return frame.get_column("value"), frame.get_column("warning")
        keys: list[str] = []
        values: list[str] = []
        warnings: list[str | None] = []
        for text in raw.unique().to_list():
            if not text:
                continue
            cleaned = self.cache.get(text)
            if cleaned is None:
                cleaned = clean_value(text, self.layout_field, value_map=self.value_map, today=self.today)
                if len(self.cache) < CLEANED_CACHE_SIZE:
                    self.cache[text] = cleaned
            keys.append(text)
            values.append(cleaned.value)
            warnings.append(cleaned.warning)
        mapping = pl.DataFrame(
            {"raw": keys, "value": values, "warning": warnings},
            schema={"raw": pl.String, "value": pl.String, "warning": pl.String},
        )
        joined = raw.rename("raw").to_frame().join(mapping, on="raw", how="left", maintain_order="left")
        return joined.get_column("value").fill_null(""), joined.get_column("warning")


# json.dumps(..., ensure_ascii=False) escapes these and nothing else
_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    **{chr(code): json.dumps(chr(code)).strip('"') for code in range(0x20)},
}


def json_string(value: pl.Expr) -> pl.Expr:
    """A JSON string literal of each value, as json.dumps(value, ensure_ascii=False) writes it."""
    escaped = value.str.replace_many(list(_JSON_ESCAPES), list(_JSON_ESCAPES.values()))
    return pl.concat_str([pl.lit('"'), escaped, pl.lit('"')])


def json_record(columns: Mapping[str, str]) -> pl.Expr:
    """A JSON object of the non-blank columns, named as given (name -> column), in order, compact."""
    members = [
        pl.when(pl.col(column) != "").then(
            pl.concat_str([pl.lit(json.dumps(name) + ":"), json_string(pl.col(column))])
        )
        for name, column in columns.items()
    ]
    if not members:
        return pl.lit("{}")
    return pl.concat_str([pl.lit("{"), pl.concat_str(members, separator=",", ignore_nulls=True), pl.lit("}")])
