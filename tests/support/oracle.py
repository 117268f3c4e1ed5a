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


def cleanse_rows(
    *, layout: Layout, plan: list[_MappedField], rows: Iterable[list[str]], today: date, upload_id: int
) -> OracleResult:
    """Cleanse the rows one by one, as the pipeline did before it worked on columns."""
    result = OracleResult()
    positions = {f.name: index for index, f in enumerate(layout.fields)}
    required = [(positions[f.name], f.name) for f in layout.fields if f.required and f.row_required]
    wanted = [(positions[f.name], f.name) for f in layout.fields if f.required and not f.row_required]
    groups = [[positions[name] for name in group] for group in layout.require_one_of]
    group_names = [", ".join(group) for group in layout.require_one_of]
    headers_by_position = {mapped.position: mapped.header for mapped in plan}
    output = sorted(headers_by_position)
    names = [layout.fields[position].name for position in output]
    for row_number, row in enumerate(rows, start=2):
        values = [""] * len(layout.fields)
        warned = False
        for mapped in plan:
            raw = row[mapped.column]
            if not raw:
                continue
            cleaned = clean_value(raw, mapped.layout_field, value_map=mapped.value_map, today=today)
            values[mapped.position] = cleaned.value
            if not cleaned.warnings:
                continue
            warned = True
            for warning in cleaned.warnings:
                result.warnings += 1
                result.report.append(
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
        for position, name in wanted:
            if values[position]:
                continue
            warned = True
            result.warnings += 1
            result.report.append(
                [
                    row_number,
                    headers_by_position.get(position, ""),
                    name,
                    "",
                    "warning",
                    "required_missing",
                    f"{name} has no usable value: the row is kept without it",
                ]
            )
        problems = [
            (headers_by_position.get(position, ""), name, "required_missing", f"{name} is required")
            for position, name in required
            if not values[position]
        ] + [
            ("", joined, "required_one_of_missing", f"one of {joined} is required")
            for members, joined in zip(groups, group_names, strict=True)
            if not any(values[position] for position in members)
        ]
        if problems:
            result.rejected += 1
            for header, name, code, message in problems:
                result.rejected_by_field[name] = result.rejected_by_field.get(name, 0) + 1
                result.report.append(
                    [row_number, header, name, "", "error", code, f"row rejected: {message}"]
                )
            continue
        result.accepted += 1
        result.warned += warned
        record = {name: values[position] for name, position in zip(names, output, strict=True)}
        result.staged.append(
            (
                upload_id,
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
    return result
