"""Cleansing rules applied to whole columns: polars expressions, or each distinct value cleaned once.

``layouts.cleansing.RULES`` stays the definition of what a rule does. A few rules that see mostly distinct
values (free text, e-mail addresses, phone numbers, high-school codes) also have a polars expression here
that gives the same value and warning; it is used only while ``RULES`` still holds the function it mirrors,
so a rule changed in ``layouts.cleansing`` is applied through its function. Every other rule — and every
field with a value mapping — is applied to each distinct raw value of the column once, with
``clean_value``, and the results are joined back to the rows.

A column's warnings (``layouts.cleansing.FieldWarning``) are ``ColumnWarnings``: the column's few
distinct lists of warnings, and per row the position of its list (null for a value without warnings), so
that only the rows with warnings ever hold a list.
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
    FieldWarning,
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
_EDGE_SPACE = f"^{_SPACE}|{_SPACE}$"

WARNINGS = pl.List(pl.Struct({"code": pl.String, "message": pl.String}))
"""The type of a list of warnings: (code, message) of each, in order (the field is the column's)."""


@dataclass(frozen=True)
class ColumnWarnings:
    """A column's warnings: per row the position of its list of warnings in ``lists``, null for none."""

    position: pl.Series
    lists: pl.Series

    def of(self, mask: pl.Series) -> pl.Series:
        """The lists of warnings (WARNINGS) of the rows the mask selects."""
        return self.lists.gather(self.position.filter(mask))


@dataclass(frozen=True)
class _Warned:
    """A rule's warnings on a column: per row the position of its warning in `warnings`, null for none."""

    index: pl.Series
    warnings: list[FieldWarning]


# A rule's body on trimmed, non-blank text: the cleaned values and their warnings (None: no warning at all).
_Core = Callable[[pl.Series, LayoutField], tuple[pl.Series, _Warned | None]]


def _entry(warnings: tuple[FieldWarning, ...]) -> list[dict[str, str]]:
    """One list of warnings, as a value of a WARNINGS series."""
    return [{"code": warning.code, "message": warning.message} for warning in warnings]


def _where(mask: pl.Series, warning: FieldWarning) -> _Warned:
    """The warning where the mask is true, none elsewhere."""
    index = pl.DataFrame({"mask": mask}).select(pl.when(pl.col("mask")).then(pl.lit(0, dtype=pl.UInt32)))
    return _Warned(index.to_series(), [warning])


def _warning(code: str, field: LayoutField, message: str) -> FieldWarning:
    return FieldWarning(code, field.name, message)


def _patched(series: pl.Series, mask: pl.Series, change: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """The series with `change` applied to the values the mask selects (usually few)."""
    if not mask.any():
        return series
    # scatter changes a series in place: the caller's series (the raw column) stays as it was
    return series.clone().scatter(mask.arg_true(), change(series.filter(mask)))


def _text(text: pl.Series, field: LayoutField) -> tuple[pl.Series, _Warned | None]:
    return text, None


def _email(text: pl.Series, field: LayoutField) -> tuple[pl.Series, _Warned | None]:
    # an "@" with text before the last one and text after it, and no whitespace anywhere
    last_at_first = text.str.starts_with("@") & (text.str.count_matches("@", literal=True) == 1)
    valid = (
        text.str.contains("@", literal=True)
        & text.str.ends_with("@").not_()
        & last_at_first.not_()
        & text.str.contains(_SPACE).not_()
    )
    value = pl.DataFrame({"text": text, "valid": valid}).select(
        pl.when(pl.col("valid")).then(pl.col("text").str.to_lowercase()).otherwise(pl.lit(""))
    )
    return value.to_series(), _where(valid.not_(), _warning("email_invalid", field, "not an email address"))


def _phone(text: pl.Series, field: LayoutField) -> tuple[pl.Series, _Warned | None]:
    # an extension can only start at an x, X or #
    cut = _patched(
        text,
        text.str.contains("[xX#]"),
        lambda some: some.str.replace_all(r"(?i)\s*(?:ext\.?|extension|x|#).*$", ""),
    )
    digits = cut.str.replace_all(r"\D+", "")
    valid = digits.str.len_chars() >= 10
    value = pl.DataFrame({"digits": digits, "valid": valid}).select(
        pl.when(pl.col("valid")).then(pl.col("digits").str.slice(-10)).otherwise(pl.lit(""))
    )
    return value.to_series(), _where(valid.not_(), _warning("phone_invalid", field, "fewer than 10 digits"))


def _hs_code(text: pl.Series, field: LayoutField) -> tuple[pl.Series, _Warned | None]:
    valid = text.str.contains(r"^\d{6}$")
    if valid.all():
        return text, None
    hint = text.str.contains(r"^\d{5}$")
    frame = pl.DataFrame({"text": text, "valid": valid, "hint": hint})
    value, index = frame.select(
        value=pl.when(pl.col("valid")).then(pl.col("text")).otherwise(pl.lit("")),
        index=pl.when(pl.col("valid"))
        .then(pl.lit(None, dtype=pl.UInt32))
        .when(pl.col("hint"))
        .then(pl.lit(0, dtype=pl.UInt32))
        .otherwise(pl.lit(1, dtype=pl.UInt32)),
    ).get_columns()
    warnings = [
        _warning("hs_code_invalid", field, "must be exactly 6 digits (leading zero lost in a spreadsheet?)"),
        _warning("hs_code_invalid", field, "must be exactly 6 digits"),
    ]
    return value, _Warned(index, warnings)


# rule name -> (the rule function the column version mirrors, the column version)
EXPRESSIONS: Mapping[str, tuple[RuleFunction, _Core]] = {
    "text": (clean_text, _text),
    "email": (clean_email, _email),
    "phone": (clean_phone, _phone),
    "hs_code": (clean_hs_code, _hs_code),
}


def expression_for(layout_field: LayoutField) -> _Core | None:
    """The column version of a field's rule, while RULES still holds the function it mirrors."""
    entry = EXPRESSIONS.get(layout_field.rule)
    if entry is None or RULES[layout_field.rule].function is not entry[0]:
        return None
    return entry[1]


def _fitted(raw: pl.Series, layout_field: LayoutField, core: _Core) -> tuple[pl.Series, ColumnWarnings]:
    # layouts.cleansing._rule: trimmed, blank stays blank without a warning, the result fitted to the width
    text = _patched(raw, raw.str.contains(_EDGE_SPACE), lambda some: some.str.strip_chars(WHITESPACE))
    value, warning = core(text, layout_field)
    width = layout_field.width
    cut = _warning("truncated", layout_field, f"value longer than {width} characters was truncated")
    # bytes are never fewer than characters: most values are decided without counting characters
    too_long = value.str.len_bytes() > width
    if too_long.any():
        too_long = value.str.len_chars() > width
    if too_long.any():
        value = _patched(
            value, too_long, lambda some: some.str.slice(0, width).str.strip_chars_end(WHITESPACE)
        )
    blank = text == ""
    if blank.any():
        value = _patched(value, blank, lambda some: pl.Series([""] * len(some), dtype=pl.String))
    # Each row's warnings are one of a few lists, picked by position: a rule warning alone (0..k-1), a
    # rule warning then truncated (k..2k-1), truncated alone (2k), or none (null).
    warned = (
        warning
        if warning is not None
        else _Warned(pl.repeat(None, len(value), dtype=pl.UInt32, eager=True), [])
    )
    count = len(warned.warnings)
    index = warned.index
    if blank.any() or too_long.any():
        index = (
            pl.DataFrame({"index": index, "blank": blank, "too_long": too_long})
            .select(
                pl.when(pl.col("blank"))
                .then(pl.lit(None, dtype=pl.UInt32))
                .when(pl.col("too_long"))
                .then(pl.col("index").fill_null(count) + count)
                .otherwise(pl.col("index"))
            )
            .to_series()
        )
    lists = pl.Series(
        [
            *(_entry((rule_warning,)) for rule_warning in warned.warnings),
            *(_entry((rule_warning, cut)) for rule_warning in warned.warnings),
            _entry((cut,)),
        ],
        dtype=WARNINGS,
    )
    return value.alias("value"), ColumnWarnings(index, lists)


@dataclass
class ColumnCleaner:
    """Cleans one mapped column of a file, batch after batch."""

    layout_field: LayoutField
    value_map: Mapping[str, str] | None
    today: date
    cache: dict[str, Cleaned] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._expression = None if self.value_map else expression_for(self.layout_field)

    def clean(self, raw: pl.Series) -> tuple[pl.Series, ColumnWarnings]:
        """The cleaned values ("" when blank or dropped) and the warnings of a column."""
        if self._expression is not None:
            return _fitted(raw, self.layout_field, self._expression)
        keys: list[str] = []
        values: list[str] = []
        # the distinct values' warnings, as positions in the column's few distinct lists of warnings
        positions: list[int | None] = []
        lists: dict[tuple[FieldWarning, ...], int] = {}
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
            positions.append(lists.setdefault(cleaned.warnings, len(lists)) if cleaned.warnings else None)
        mapping = pl.DataFrame(
            {"raw": keys, "value": values, "position": positions},
            schema={"raw": pl.String, "value": pl.String, "position": pl.UInt32},
        )
        joined = raw.rename("raw").to_frame().join(mapping, on="raw", how="left", maintain_order="left")
        warnings = ColumnWarnings(
            joined.get_column("position"), pl.Series([_entry(each) for each in lists], dtype=WARNINGS)
        )
        return joined.get_column("value").fill_null(""), warnings


def json_records(frame: pl.DataFrame, columns: Mapping[str, str]) -> pl.Series:
    """A JSON object per row of the non-blank columns, named as given (name -> column), in order, compact,
    as json.dumps(record, ensure_ascii=False, separators=(",", ":")) writes it."""
    if not columns:
        return pl.Series("record", ["{}"] * frame.height, dtype=pl.String)
    blanks = frame.select((pl.col(column) == "").any() for column in columns.values()).row(0)
    # polars escapes text as json.dumps does; a blank value is written as null, and a column without blanks
    # in these rows needs no test per row
    encoded = frame.select(
        pl.struct(
            (pl.when(pl.col(column) != "").then(pl.col(column)) if has_blanks else pl.col(column)).alias(name)
            for (name, column), has_blanks in zip(columns.items(), blanks, strict=True)
        )
        .struct.json_encode()
        .alias("record")
    ).to_series()
    # The null members are cut out as text: a quote mark inside a value is always escaped, so `,"Name":null`
    # is a member; the first member has no comma before it.
    keys = [json.dumps(name) for name in columns]
    nulls = [f",{key}:null" for key, has_blanks in zip(keys[1:], blanks[1:], strict=True) if has_blanks]
    if nulls:
        encoded = encoded.str.replace_many(nulls, [""] * len(nulls))
    if blanks[0]:
        encoded = encoded.str.replace_many([f"{{{keys[0]}:null,", f"{{{keys[0]}:null}}"], ["{", "{}"])
    return encoded
