"""A straightforward row-by-row cleansing of a file: the oracle the columnar cleansing is checked against.

It walks the rows one at a time, cleans every mapped value with ``clean_value`` and decides on each row the
way the layout says, writing report lines and staging rows with the csv and json modules.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from datalab.layouts import Layout
from datalab.layouts.cleansing import clean_value
from datalab.pipeline.cleanse import _MappedField


@dataclass
class OracleResult:
    """What the oracle made of a file: report lines, staging rows and counts, as plain Python values."""

    report: list[list[str | int]] = field(default_factory=list)
    staged: list[tuple[int, int, str, str, str, str]] = field(default_factory=list)
    accepted: int = 0
    warned: int = 0
    rejected: int = 0
    warnings: int = 0
    rejected_by_field: dict[str, int] = field(default_factory=dict)

    def report_text(self) -> str:
        """The report lines as the csv module writes them."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(self.report)
        return buffer.getvalue()


class _Oracle:
    """The layout's rules by field position, and the result the rows are cleansed into one by one."""

    def __init__(self, *, layout: Layout, plan: list[_MappedField], today: date, upload_id: int) -> None:
        self.plan = plan
        self.today = today
        self.upload_id = upload_id
        self.result = OracleResult()
        self.field_count = len(layout.fields)
        positions = {f.name: index for index, f in enumerate(layout.fields)}
        self.required = [(positions[f.name], f.name) for f in layout.fields if f.required and f.row_required]
        self.wanted = [
            (positions[f.name], f.name) for f in layout.fields if f.required and not f.row_required
        ]
        self.groups = [[positions[name] for name in group] for group in layout.require_one_of]
        self.group_names = [", ".join(group) for group in layout.require_one_of]
        self.headers_by_position = {mapped.position: mapped.header for mapped in plan}
        self.output = sorted(self.headers_by_position)
        self.names = [layout.fields[position].name for position in self.output]

    def row(self, row_number: int, row: list[str]) -> None:
        """Cleanse one row: its warnings, then either its rejection or its staging row."""
        values, warned = self._clean(row_number, row)
        warned = self._warn_wanted(row_number, values) or warned
        problems = self._problems(values)
        if problems:
            self._reject(row_number, problems)
            return
        self.result.accepted += 1
        self.result.warned += warned
        self._stage(row_number, values)

    def _clean(self, row_number: int, row: list[str]) -> tuple[list[str], bool]:
        """The row's cleaned values by field position, and whether any of them warned."""
        values = [""] * self.field_count
        warned = False
        for mapped in self.plan:
            raw = row[mapped.column]
            if not raw:
                continue
            cleaned = clean_value(raw, mapped.layout_field, value_map=mapped.value_map, today=self.today)
            values[mapped.position] = cleaned.value
            if not cleaned.warnings:
                continue
            warned = True
            for warning in cleaned.warnings:
                self.result.warnings += 1
                self.result.report.append(
                    [
                        row_number,
                        mapped.header,
                        mapped.layout_field.name,
                        raw,
                        "warning",
                        warning.code,
                        warning.message,
                    ]
                )
        return values, warned

    def _warn_wanted(self, row_number: int, values: list[str]) -> bool:
        """Report the wanted fields without a value (the row is kept): whether there was any."""
        warned = False
        for position, name in self.wanted:
            if values[position]:
                continue
            warned = True
            self.result.warnings += 1
            self.result.report.append(
                [
                    row_number,
                    self.headers_by_position.get(position, ""),
                    name,
                    "",
                    "warning",
                    "required_missing",
                    f"{name} has no usable value: the row is kept without it",
                ]
            )
        return warned

    def _problems(self, values: list[str]) -> list[tuple[str, str, str, str]]:
        """Why the row is rejected (header, field, code, message): empty when it is not."""
        return [
            (self.headers_by_position.get(position, ""), name, "required_missing", f"{name} is required")
            for position, name in self.required
            if not values[position]
        ] + [
            ("", joined, "required_one_of_missing", f"one of {joined} is required")
            for members, joined in zip(self.groups, self.group_names, strict=True)
            if not any(values[position] for position in members)
        ]

    def _reject(self, row_number: int, problems: list[tuple[str, str, str, str]]) -> None:
        self.result.rejected += 1
        for header, name, code, message in problems:
            self.result.rejected_by_field[name] = self.result.rejected_by_field.get(name, 0) + 1
            self.result.report.append(
                [row_number, header, name, "", "error", code, f"row rejected: {message}"]
            )

    def _stage(self, row_number: int, values: list[str]) -> None:
        record = {name: values[position] for name, position in zip(self.names, self.output, strict=True)}
        self.result.staged.append(
            (
                self.upload_id,
                row_number,
                record.get("UniqueID", ""),
                record.get("EntryYear", ""),
                record.get("EntryTerm", ""),
                json.dumps(
                    {name: value for name, value in record.items() if value},
                    separators=(",", ":"),
                    ensure_ascii=False,
                ),
            )
        )


def cleanse_rows(
    *, layout: Layout, plan: list[_MappedField], rows: Iterable[list[str]], today: date, upload_id: int
) -> OracleResult:
    """Cleanse the rows one by one, as the pipeline did before it worked on columns."""
    oracle = _Oracle(layout=layout, plan=plan, today=today, upload_id=upload_id)
    for row_number, row in enumerate(rows, start=2):
        oracle.row(row_number, row)
    return oracle.result
