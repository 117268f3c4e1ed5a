"""Cleansing rules applied to whole columns: polars expressions, or each distinct value cleaned once.

``layouts.cleansing.RULES`` stays the definition of what a rule does. A few rules that see mostly distinct
values (free text, e-mail addresses, phone numbers, high-school codes) also have a polars expression here
that gives the same value and warning; it is used only while ``RULES`` still holds the function it mirrors,
so a rule changed in ``layouts.cleansing`` is applied through its function. Every other rule — and every
field with a value mapping — is applied to each distinct raw value of the column once, with
``clean_value``, and the results are replaced into the rows.

A frame's columns are cleaned together (``clean_columns``): one pass over the frame finds what each column
needs (whether a value has whitespace to trim, the distinct values to clean), one lazy query computes every
cleaned column and warning, and the rare values too long for their field are cut afterwards.

A column's warnings (``layouts.cleansing.FieldWarning``) are ``ColumnWarnings``: the column's few
distinct lists of warnings, and per row the position of its list (null for a value without warnings), so
that only the rows with warnings ever hold a list.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from datalab.layouts.cleansing import (
    RULES,
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
# The characters json.dumps escapes (ensure_ascii=False), and how.
_JSON_SPECIAL = r'[\x00-\x1f"\\]'
_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
} | {chr(code): f"\\u{code:04x}" for code in range(0x20) if chr(code) not in "\b\f\n\r\t"}

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

    index: pl.Expr
    warnings: list[FieldWarning]


# Computes an expression once, in a step before the ones that read it, and gives the column to read it from:
# polars' common subexpression elimination does not always see that a value is used twice.
_Once = Callable[[pl.Expr], pl.Expr]
# A rule's body on trimmed text: the cleaned values and their warnings (None: no warning at all).
_Core = Callable[[pl.Expr, LayoutField, _Once], tuple[pl.Expr, _Warned | None]]


def _entry(warnings: tuple[FieldWarning, ...]) -> list[dict[str, str]]:
    """One list of warnings, as a value of a WARNINGS series."""
    return [{"code": warning.code, "message": warning.message} for warning in warnings]


def _where(mask: pl.Expr, warning: FieldWarning) -> _Warned:
    """The warning where the mask is true, none elsewhere."""
    return _Warned(pl.when(mask).then(pl.lit(0, dtype=pl.UInt32)), [warning])


def _warning(code: str, field: LayoutField, message: str) -> FieldWarning:
    return FieldWarning(code, field.name, message)


def _text(text: pl.Expr, field: LayoutField, once: _Once) -> tuple[pl.Expr, _Warned | None]:
    return text, None


def _email(text: pl.Expr, field: LayoutField, once: _Once) -> tuple[pl.Expr, _Warned | None]:
    # an "@" with text before the last one and text after it, and no whitespace anywhere
    last_at_first = text.str.starts_with("@") & (text.str.count_matches("@", literal=True) == 1)
    valid = once(
        text.str.contains("@", literal=True)
        & text.str.ends_with("@").not_()
        & last_at_first.not_()
        & text.str.contains(_SPACE).not_()
    )
    value = pl.when(valid).then(text.str.to_lowercase()).otherwise(pl.lit(""))
    return value, _where(valid.not_(), _warning("email_invalid", field, "not an email address"))


def _phone(text: pl.Expr, field: LayoutField, once: _Once) -> tuple[pl.Expr, _Warned | None]:
    # an extension starts at an x, X or #: cut first, then the digits kept
    cut = text.str.replace_all(r"(?i)\s*(?:ext\.?|extension|x|#).*$", "")
    digits = once(cut.str.replace_all(r"\D+", ""))
    valid = digits.str.len_chars() >= 10
    value = pl.when(valid).then(digits.str.slice(-10)).otherwise(pl.lit(""))
    return value, _where(valid.not_(), _warning("phone_invalid", field, "fewer than 10 digits"))


def _hs_code(text: pl.Expr, field: LayoutField, once: _Once) -> tuple[pl.Expr, _Warned | None]:
    valid = once(text.str.contains(r"^\d{6}$"))
    value = pl.when(valid).then(text).otherwise(pl.lit(""))
    index = (
        pl.when(valid)
        .then(pl.lit(None, dtype=pl.UInt32))
        .when(text.str.contains(r"^\d{5}$"))
        .then(pl.lit(0, dtype=pl.UInt32))
        .otherwise(pl.lit(1, dtype=pl.UInt32))
    )
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


@dataclass
class _Planned:
    """How one column of a frame is cleaned: its expressions, and what is left for after the query."""

    value: pl.Expr
    position: pl.Expr | None
    lists: pl.Series
    # whether a value may hold a character JSON escapes
    escaped: bool
    # expressions computed before value and position, each in a step of its own (see _Once)
    steps: list[pl.Expr] = field(default_factory=list)
    # the field's width when values may still be too long (the rule's expression does not cut them)
    width: int | None = None
    # how many warnings the rule itself has (lists: each alone, each then truncated, truncated alone)
    count: int = 0


class _Steps:
    """A column's expressions computed once each, in order, under names of their own (a _Once)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.exprs: list[pl.Expr] = []

    def __call__(self, expr: pl.Expr) -> pl.Expr:
        name = f"{self.prefix}s{len(self.exprs)}"
        self.exprs.append(expr.alias(name))
        return pl.col(name)


def _patched(series: pl.Series, mask: pl.Series, change: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """The series with `change` applied to the values the mask selects (usually few)."""
    # scatter changes a series in place: the caller's series stays as it was
    return series.clone().scatter(mask.arg_true(), change(series.filter(mask)))


def _cut(value: pl.Series, position: pl.Series, planned: _Planned) -> tuple[pl.Series, pl.Series]:
    """Values longer than the field cut to its width, their position moved to the list that adds
    `truncated` (a rule warning then truncated: k..2k-1, truncated alone: 2k)."""
    width, count = planned.width, planned.count
    assert width is not None
    too_long = value.str.len_chars() > width
    if not too_long.any():
        return value, position
    value = _patched(value, too_long, lambda some: some.str.slice(0, width).str.strip_chars_end(WHITESPACE))
    position = _patched(position, too_long, lambda some: some.fill_null(count) + count)
    return value, position


class _DistinctValues:
    """A column's distinct raw values cleaned so far, kept from one frame to the next (a bounded number).

    The values the rule changes or warns about are looked up in each frame through a polars Enum of them:
    polars keeps the lookup of an Enum it has seen, and the Enum changes only when a new such value appears.
    """

    def __init__(self, layout_field: LayoutField, value_map: Mapping[str, str] | None, today: date) -> None:
        self.layout_field = layout_field
        self.value_map = value_map
        self.today = today
        # whether a raw or cleaned value had a character JSON escapes (kept once seen)
        self.escaped = False
        # counts the changes of what plan() gives
        self.version = 0
        self._forget()

    def _forget(self) -> None:
        # each value seen: its position in the looked-up values, or None when the rule keeps it as it is
        self.seen: dict[str, int | None] = {}
        self.values: list[str] = []
        # per looked-up value, the position of its warnings in `lists`
        self.positions: list[int | None] = []
        self.lists: dict[tuple[FieldWarning, ...], int] = {}
        self._lookup: tuple[pl.Enum, pl.Series, pl.Series, pl.Series] | None = None
        self.version += 1

    def add(self, distinct: list[str]) -> None:
        """Clean the values not seen yet (all of them again when there would be too many to keep)."""
        new = [text for text in distinct if text and text not in self.seen]
        if new and len(self.seen) + len(new) > CLEANED_CACHE_SIZE:
            self._forget()
            new = [text for text in distinct if text]
        looked_up = len(self.values)
        for text in new:
            cleaned = clean_value(text, self.layout_field, value_map=self.value_map, today=self.today)
            if cleaned.value == text and not cleaned.warnings:
                self.seen[text] = None
                continue
            self.seen[text] = len(self.values)
            self.values.append(cleaned.value)
            self.positions.append(
                self.lists.setdefault(cleaned.warnings, len(self.lists)) if cleaned.warnings else None
            )
        escaped = new and not self.escaped and re.search(_JSON_SPECIAL, "".join(new) + "".join(self.values))
        if len(self.values) > looked_up or escaped:
            self.escaped = self.escaped or bool(escaped)
            self._lookup = None
            self.version += 1

    def plan(self, raw: pl.Expr, once: _Once) -> _Planned:
        """The column's cleaning: each looked-up value replaced by its cleaned value, with its warnings."""
        if not self.values:
            return _Planned(raw, None, pl.Series([], dtype=WARNINGS), self.escaped)
        if self._lookup is None:
            # in the order of `values`: a value's position in the Enum is its position there
            self._lookup = (
                pl.Enum([text for text, index in self.seen.items() if index is not None]),
                pl.Series(self.values, dtype=pl.String),
                pl.Series(self.positions, dtype=pl.UInt32),
                pl.Series([_entry(each) for each in self.lists], dtype=WARNINGS),
            )
        enum, values, positions, lists = self._lookup
        index = once(raw.cast(enum, strict=False).to_physical())
        value = pl.coalesce(pl.lit(values).gather(index), raw)
        position = pl.lit(positions).gather(index) if self.lists else None
        return _Planned(value, position, lists, self.escaped)


@dataclass
class ColumnCleaner:
    """Cleans one mapped column of a file, frame after frame."""

    layout_field: LayoutField
    value_map: Mapping[str, str] | None
    today: date

    def __post_init__(self) -> None:
        # what plan() learns from each frame, kept for the next ones, is changed by one thread at a time
        self._lock = threading.Lock()
        self._expression = None if self.value_map else expression_for(self.layout_field)
        self._distinct = _DistinctValues(self.layout_field, self.value_map, self.today)
        self._planned: tuple[tuple[object, ...], _Planned] | None = None
        if self._expression is not None:
            rule_warnings = self._expression(pl.lit(""), self.layout_field, _Steps(""))[1]
            warnings = rule_warnings.warnings if rule_warnings is not None else []
            cut = _warning(
                "truncated",
                self.layout_field,
                f"value longer than {self.layout_field.width} characters was truncated",
            )
            # a rule warning alone (0..k-1), a rule warning then truncated (k..2k-1), truncated alone (2k)
            self._lists = pl.Series(
                [
                    *(_entry((warning,)) for warning in warnings),
                    *(_entry((warning, cut)) for warning in warnings),
                    _entry((cut,)),
                ],
                dtype=WARNINGS,
            )

    def probe(self, raw: pl.Expr) -> pl.Expr:
        """What the column needs to know of a frame before it is cleaned (one value)."""
        if self._expression is not None:
            # rare: looked at again by plan()
            return raw.str.contains(f"{_EDGE_SPACE}|{_JSON_SPECIAL}").any()
        return raw.unique().implode()

    def plan(self, frame: pl.DataFrame, name: str, probed: object, prefix: str) -> _Planned:
        """The cleaning of the frame's column `name`, given what `probe` found; its steps are named from
        `prefix`."""
        with self._lock:
            return self._plan(frame, name, probed, prefix)

    def _plan(self, frame: pl.DataFrame, name: str, probed: object, prefix: str) -> _Planned:
        raw = pl.col(name)
        if self._expression is None:
            assert isinstance(probed, list)
            self._distinct.add(probed)
            key: tuple[object, ...] = (name, prefix, self._distinct.version)
        else:
            trim, escaped = (
                frame.select(
                    trim=raw.str.contains(_EDGE_SPACE).any(), escaped=raw.str.contains(_JSON_SPECIAL).any()
                ).row(0)
                if probed
                else (False, False)
            )
            key = (name, prefix, trim, escaped)
        # a frame is usually planned as the one before it: the expressions are built again only on a change
        if self._planned is None or self._planned[0] != key:
            once = _Steps(prefix)
            if self._expression is None:
                planned = self._distinct.plan(raw, once)
            else:
                planned = self._expressed(raw, once, trim=trim, escaped=escaped)
            planned.steps = once.exprs
            self._planned = (key, planned)
        return self._planned[1]

    def _expressed(self, raw: pl.Expr, once: _Once, *, trim: bool, escaped: bool) -> _Planned:
        # layouts.cleansing._rule: trimmed, blank stays blank without a warning, then fitted to the width
        assert self._expression is not None
        text = once(raw.str.strip_chars(WHITESPACE)) if trim else raw
        value, warned = self._expression(text, self.layout_field, once)
        if warned is None:
            return _Planned(value, None, self._lists, escaped, width=self.layout_field.width)
        blank = text == ""
        position = pl.when(blank).then(pl.lit(None, dtype=pl.UInt32)).otherwise(warned.index)
        value = pl.when(blank).then(pl.lit("")).otherwise(value)
        return _Planned(
            value, position, self._lists, escaped, width=self.layout_field.width, count=len(warned.warnings)
        )

    def clean(self, raw: pl.Series) -> tuple[pl.Series, ColumnWarnings]:
        """The cleaned values ("" when blank or dropped) and the warnings of a column."""
        cleaned = clean_columns(raw.rename("raw").to_frame(), [(self, "raw")])
        return cleaned.values.to_series(), cleaned.warnings[0]


@dataclass(frozen=True)
class CleanedColumns:
    """A frame's cleaned columns: the values (v0, v1...), each one's warnings, and the value columns that may
    hold a character JSON escapes."""

    values: pl.DataFrame
    warnings: list[ColumnWarnings]
    escaped: set[str]


def clean_columns(frame: pl.DataFrame, cleaners: Sequence[tuple[ColumnCleaner, str]]) -> CleanedColumns:
    """The frame's columns cleaned, each by its cleaner (cleaner, column name)."""
    if not cleaners:
        return CleanedColumns(pl.DataFrame(), [], set())
    probed = frame.select(
        cleaner.probe(pl.col(name)).alias(f"p{index}") for index, (cleaner, name) in enumerate(cleaners)
    ).row(0)
    plans = [
        cleaner.plan(frame, name, found, f"p{index}")
        for index, ((cleaner, name), found) in enumerate(zip(cleaners, probed, strict=True))
    ]
    result = _query(frame, plans)
    values: dict[str, pl.Series] = {}
    warnings = []
    none = pl.repeat(None, frame.height, dtype=pl.UInt32, eager=True)
    for index, planned in enumerate(plans):
        value = result.get_column(f"v{index}")
        position = result.get_column(f"w{index}") if planned.position is not None else None
        if planned.width is not None and result.get_column(f"l{index}").any():
            value, position = _cut(value, position if position is not None else none, planned)
        values[f"v{index}"] = value
        warnings.append(ColumnWarnings(none if position is None else position, planned.lists))
    escaped = {f"v{index}" for index, planned in enumerate(plans) if planned.escaped}
    return CleanedColumns(pl.DataFrame(values), warnings, escaped)


def _query(frame: pl.DataFrame, plans: list[_Planned]) -> pl.DataFrame:
    """The planned values (v0, v1...) and positions of warnings (w0, w1...) of a frame, in one query, with
    whether a column that may still be too long for its field has a value longer in bytes (l0, l1...)."""
    query = frame.lazy()
    for step in range(max(len(planned.steps) for planned in plans)):
        query = query.with_columns(planned.steps[step] for planned in plans if step < len(planned.steps))
    columns = {f"v{index}": planned.value for index, planned in enumerate(plans)}
    columns |= {
        f"w{index}": planned.position for index, planned in enumerate(plans) if planned.position is not None
    }
    # bytes are never fewer than characters: most columns are decided without counting characters
    longer = [
        (pl.col(f"v{index}").str.len_bytes() > planned.width).any().alias(f"l{index}")
        for index, planned in enumerate(plans)
        if planned.width is not None
    ]
    return query.with_columns(**columns).select(*columns, *longer).collect()


def json_records(
    frame: pl.DataFrame, columns: Mapping[str, str], *, escaped: Collection[str] | None = None
) -> pl.Series:
    """A JSON object per row of the non-blank columns, named as given (name -> column), in order, compact,
    as json.dumps(record, ensure_ascii=False, separators=(",", ":")) writes it.

    `escaped` names the columns that may hold a character JSON escapes (None: any column may); the others
    are written as they are.
    """
    if not columns:
        return pl.Series("record", ["{}"] * frame.height, dtype=pl.String)
    blanks = frame.select((pl.col(column) == "").sum() for column in columns.values()).row(0)
    record = _record(
        tuple(columns.items()),
        tuple(_NO_BLANKS if count == 0 else _ALL_BLANK if count == frame.height else 0 for count in blanks),
        tuple(escaped is None or column in escaped for column in columns.values()),
    )
    return frame.select(record).to_series()


# Whether a column of a frame is blank on no row or on every row (else on some rows).
_NO_BLANKS = 1
_ALL_BLANK = 2


@functools.lru_cache(maxsize=64)
def _record(
    columns: tuple[tuple[str, str], ...], blanks: tuple[int, ...], escaped: tuple[bool, ...]
) -> pl.Expr:
    """The expression of json_records for columns (name, column) with blanks and escapes as given.

    polars' concat_str costs about the same for each piece on each row, however short the piece: a member is
    two pieces, its key (null on a blank row, which then adds nothing) and its value, with the closing quote
    of the value before it and the comma in front of its key. A column blank on every row adds no piece.
    """
    present = [index for index, blank in enumerate(blanks) if blank != _ALL_BLANK]
    if not present:
        return pl.repeat(pl.lit("{}"), pl.len()).alias("record")
    # When the first member may be missing, every key starts with the comma, taken off the record's start.
    first_always = blanks[present[0]] == _NO_BLANKS
    parts: list[pl.Expr] = [] if first_always else [pl.lit("{")]
    for index in present:
        (name, column), has_escapes = columns[index], escaped[index]
        before = "{" if index == present[0] and first_always else '",'
        key = pl.lit(before + json.dumps(name, ensure_ascii=False) + ':"')
        text = pl.col(column)
        if has_escapes:
            text = text.str.replace_many(list(_JSON_ESCAPES), list(_JSON_ESCAPES.values()))
        parts += [key if blanks[index] == _NO_BLANKS else pl.when(pl.col(column) != "").then(key), text]
    record = pl.concat_str([*parts, pl.lit('"}')], ignore_nulls=True)
    if not first_always:
        # '{",' starts a record with a member, '{"}' is one without any
        record = record.str.replace(r'^\{"(?:,|(\}))', "{$1")
    return record.alias("record")
