"""The columnar reading, analysis and cleansing give what a plain row-by-row pass gives, line for line."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import date
from pathlib import Path

import polars as pl
import pytest

import datalab.pipeline.columnar
import datalab.pipeline.readers
from datalab.layouts import LayoutField, load_layout
from datalab.layouts.cleansing import FieldWarning, clean_value
from datalab.pipeline.analyze import summarize, summarize_frames
from datalab.pipeline.artifacts import STAGED_SCHEMA
from datalab.pipeline.cleanse import Cleanser, _plan, cleansed_frames
from datalab.pipeline.columnar import ColumnCleaner, json_records
from datalab.pipeline.readers import ReadError, open_table
from datalab.uploads.models import Upload
from tests.support.oracle import OracleResult, cleanse_rows

TODAY = date(2026, 6, 1)
HEADERS = [
    "UniqueID",
    "First Name",
    "LastName",
    "Email",
    "CellPhoneNumber",
    "Address1",
    "StateCode",
    "ZipCode",
    "Gender",
    "BirthDate",
    "EntryTerm",
    "EntryYear",
    "HSGradYear",
    "Inquired",
    "Applied",
    "Admitted",
    "GPA",
    "HSCode",
    "ACTScore",
    "SATScore",
    "StudentAthlete",
    "HISPANIC",
    "Notes",
]
BLANKS = ["", " ", "  \t", "\u00a0", "\u3000"]
DATES = [
    "2025/11/02",
    "11/2/2025",
    "11/02/25",
    "2025-11-02",
    "20251102",
    "02-Nov-2025",
    "2-november-25",
    "11-02-2025",
    "11-02-25",
    "2025-11-02T10:30:00Z",
    "2025-11-02T10:30+02:00",
    "2025/1/2",
    "11/2/2025 10:30 AM",
    "13/45/2025",
    "02-Foo-2025",
    "1890-01-01",
    "2031-01-01",
    "29/02/2025",
    "soon",
]
BIRTH_DATES = [
    "6/15/2008",
    "2008-06-15",
    "15-Jun-08",
    "1/1/1930",
    "1/1/2020",
    "2/29/2008",
    "2/30/2008",
    "n/a",
]
VALUES: dict[str, list[str]] = {
    "UniqueID": ["00123", "000001", "A-17", "x" * 60, " 0042 "],
    "First Name": ["Ann", "José", "  Bo  ", "Zoë", "N" * 70, 'Quote "Q" Marks', "Comma, Inc", "two\nlines"],
    "LastName": ["Lee", "O'Brien", "Müller", "Ñandú", "L" * 64 + "   x"],
    "Email": [
        "ann@example.edu",
        "Ann.Lee@Example.EDU",
        "no-at-sign",
        "a@b@c.org",
        "@example.edu",
        "ann@",
        "ann lee@example.edu",
        "x" * 70 + "@example.edu",
        "İSTANBUL@EXAMPLE.COM",
    ],
    "CellPhoneNumber": [
        "(617) 555-0142",
        "+1 617 555 0142",
        "617.555.0142 x12",
        "617-555-0142 ext. 9",
        "617-555-0142 #4",
        "555-0142",
        "1-800-FLOWERS",
        "６１７５５５０１４２",
    ],
    "Address1": ["1 Main St", "A" * 160, "Apt 4, Building 2", "tab\there", 'back\\slash "q"', "bell\x07"],
    "StateCode": ["MA", "ma", "Massachusetts", "N.Y.", "new york", "Washington, D.C.", "Ontario", "PR", "zz"],
    "ZipCode": ["02134", "2134", "134", "02134-1234", "2134-1234", "K1A 0B1", "SW1A  1AA", "12"],
    "Gender": ["M", "F", "male", "Woman", "Man", "X", "nonbinary"],
    "BirthDate": BIRTH_DATES,
    "EntryTerm": [
        "Fall",
        "FA24",
        "24FA",
        "Spring 2026",
        "Summer II",
        "AUTUMN",
        "Fall/Spring",
        "202408",
        "Semester",
    ],
    "EntryYear": ["2026", "26", "2026.0", "1970", "2099", "twenty", "50"],
    "HSGradYear": ["2026", "2025", "25", "3000"],
    "Inquired": DATES,
    "Applied": DATES,
    "Admitted": DATES,
    "GPA": ["3.50", "03.50", ".5", "4.", "A-", "b +", "F", "4,0", "-1", "1e3", "95"],
    "HSCode": ["012345", "12345", "1234567", "ABCDEF", "０１２３４５"],
    "ACTScore": ["32", "07", "32.0", "37", "0", "thirty"],
    "SATScore": ["1400", "1600", "399", "1601", "1400.00", "x"],
    "StudentAthlete": ["Y", "no", "Men's Soccer", "Track & Field", "None", "Not an athlete", "chess"],
    "HISPANIC": ["Y", "N", "yes", "0", "1", "maybe"],
    "Notes": ["anything", "α,β", '"quoted"', "tab\there"],
}


def dirty_rows(count: int, seed: int) -> list[list[str]]:
    """Rows drawn from every kind of value the rules see: valid, odd, invalid, blank, padded, too wide."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        row = []
        for header in HEADERS:
            if rng.random() < 0.15:
                value = rng.choice(BLANKS)
            else:
                value = rng.choice(VALUES[header])
                if rng.random() < 0.05:
                    value = f" {value} "
            row.append(value)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADERS)
        writer.writerows(rows)
    return path


def columnar(path: Path, upload: Upload, upload_id: int) -> tuple[Cleanser, bytes, list[tuple[object, ...]]]:
    layout = load_layout(upload.product_type)
    with open_table(path, file_name=path.name) as (info, rows):
        cleanser = Cleanser(layout=layout, plan=_plan(layout, info.headers, upload), today=TODAY)
        report = b""
        staged: list[tuple[object, ...]] = []
        for cleansed in cleansed_frames(cleanser, rows.frames()):
            report += cleansed.report
            staged.extend((upload_id, *row) for row in cleansed.staged.rows())
            # the staging rows go to ingesting as an Arrow stream: they read back the same
            read_back = pl.from_arrow(cleansed.staged.to_arrow().cast(STAGED_SCHEMA))
            assert isinstance(read_back, pl.DataFrame) and read_back.equals(cleansed.staged)
    return cleanser, report, staged


MAPPINGS = {
    "enrollment": (
        {header: header for header in HEADERS if header not in ("First Name", "Notes")}
        | {"FirstName": "First Name"},
        {"Gender": {"Man": "M", "woman": "F", "nonbinary": ""}, "EntryTerm": {"202408": "Fall"}},
    ),
    # LastName is left unmapped: every row misses a required field
    "ematch": (
        {"UniqueID": "UniqueID", "FirstName": "First Name", "Email": "Email", "BirthDate": "BirthDate"},
        {},
    ),
    "affinity": (
        {header: header for header in HEADERS if header != "First Name"} | {"FirstName": "first_name"},
        {},
    ),
}


@pytest.mark.parametrize("block_bytes", [8 * 1024 * 1024, 16 * 1024], ids=["one-frame", "many-frames"])
@pytest.mark.parametrize("product", sorted(MAPPINGS))
def test_columnar_cleansing_matches_the_row_by_row_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, product: str, block_bytes: int
) -> None:
    monkeypatch.setattr(datalab.pipeline.readers, "_BLOCK_BYTES", block_bytes)
    oracle = assert_columnar_matches_oracle(tmp_path, product)
    # the file has every kind of outcome
    if product == "enrollment":
        assert oracle.accepted and oracle.rejected and oracle.warned
        codes = {line[5] for line in oracle.report}
        assert {"truncated", "date_invalid", "date_out_of_range", "email_invalid", "phone_invalid"} <= codes
        assert {"hs_code_invalid", "zip_padded", "state_unknown", "required_missing"} <= codes
        assert {"required_one_of_missing", "year_invalid", "term_invalid", "gpa_invalid"} <= codes


def test_columnar_cleansing_past_the_distinct_values_it_keeps_matches_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a column's distinct values are forgotten and cleaned again when there are more than it keeps
    monkeypatch.setattr(datalab.pipeline.readers, "_BLOCK_BYTES", 16 * 1024)
    monkeypatch.setattr(datalab.pipeline.columnar, "CLEANED_CACHE_SIZE", 8)
    assert_columnar_matches_oracle(tmp_path, "enrollment")


def assert_columnar_matches_oracle(tmp_path: Path, product: str) -> OracleResult:
    """Cleanse a dirty file both ways: the same report, staging rows and counts; the oracle's result."""
    path = write_csv(tmp_path / "dirty.csv", dirty_rows(3000, seed=12))
    fields_map, values_map = MAPPINGS[product]
    upload = Upload(product_type=product, fields_map=fields_map, values_map=values_map)
    layout = load_layout(product)

    cleanser, report, staged = columnar(path, upload, upload_id=7)
    with open_table(path, file_name=path.name) as (info, rows):
        oracle = cleanse_rows(
            layout=layout, plan=_plan(layout, info.headers, upload), rows=rows, today=TODAY, upload_id=7
        )

    assert report.decode("utf-8") == oracle.report_text()
    assert staged == oracle.staged
    counts = cleanser.counts
    assert (counts.accepted, counts.warned, counts.rejected, counts.warnings) == (
        oracle.accepted,
        oracle.warned,
        oracle.rejected,
        oracle.warnings,
    )
    assert list(counts.rejected_by_field.items()) == list(oracle.rejected_by_field.items())
    return oracle


@pytest.mark.parametrize(
    "text",
    [
        "a,b\r\n1,2\r\n3,4\r\n",
        "\n\na,b\n1,2\n\n3,4\n   \n,\n5,6",
        "a,b,c\n1\n1,2\n",
        "a,b,\n1,2,\n3,4,  \n",
        'a,"b\nc"\n1,"x\ny"\n2,"he said ""hi"""\n',
        'a,b\n"ab"c,2\n',
        "a|b\n1|2\n",
        "a,b\r1,2\r3,4\r",
        "a,b\r\n1,2\r\r\n3,4\r\n",
        'a,b\r\n"1\r\n2",3\r\n4,5\r\n',
        "a,b\n1,2\x00\n",
        'a,b\nab"c,d\ne"f,g\n',
        "a,b\n\u00a0,\u3000\n1,2\n",
        "a,b\n1,2\n" * 30_000 + 'x,"y\n',
    ],
)
def test_frames_hold_the_rows_the_row_reader_reads(tmp_path: Path, text: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text, encoding="utf-8", newline="")
    with open_table(path, file_name="a.csv") as (_, rows):
        expected = [tuple(row) for row in rows]
    with open_table(path, file_name="a.csv") as (_, rows):
        found = [row for frame in rows.frames() for row in frame.rows()]
    assert found == expected


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_the_analysis_of_frames_matches_the_row_by_row_one(tmp_path: Path, encoding: str) -> None:
    rows = [[value.replace("\u3000", " ") for value in row] for row in dirty_rows(500, seed=3)]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([HEADERS, *rows])
    text = buffer.getvalue()
    if encoding == "cp1252":
        text = text.encode("cp1252", errors="replace").decode("cp1252")
    path = tmp_path / "a.csv"
    path.write_bytes(text.encode(encoding))
    with open_table(path, file_name="a.csv") as (info, table):
        expected = summarize(info, table)
    with open_table(path, file_name="a.csv") as (info, table):
        found = summarize_frames(info, table.frames(temp_dir=tmp_path))
    assert found.total_rows == expected.total_rows == 500
    assert found.empty == expected.empty
    assert found.sample == expected.sample
    assert found.coded_values() == expected.coded_values()


@pytest.mark.parametrize(
    "text",
    [
        'a,b\n1,"' + "y" * 200_000 + '"\n2,3\n',
        "a,b\n1," + "z" * 140_000 + "\n",
        "a,b\n1,2\n" * 30_000 + "x,y,z\n",
    ],
    ids=["long-quoted-field", "long-field", "ragged-late"],
)
def test_frames_raise_what_the_row_reader_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(ReadError) as expected, open_table(path, file_name="a.csv") as (_, rows):
        list(rows)
    with pytest.raises(ReadError) as found, open_table(path, file_name="a.csv") as (_, rows):
        list(rows.frames())
    assert (found.value.code, found.value.row, found.value.message) == (
        expected.value.code,
        expected.value.row,
        expected.value.message,
    )


@pytest.mark.parametrize(
    ("field", "raw", "codes"),
    [
        # a polars expression: a rule warning, truncated, none, blank
        (
            LayoutField("Email", 12, required=False, rule="email"),
            ["bad", "ann@example.edu", "a@b.org", " ", ""],
            [("email_invalid",), ("truncated",), (), (), ()],
        ),
        (
            LayoutField("HSCode", 6, required=False, rule="hs_code"),
            ["12345", "1234", "012345", "", "12345"],
            [("hs_code_invalid",), ("hs_code_invalid",), (), (), ("hs_code_invalid",)],
        ),
        # each distinct value cleaned once: a kept value with two warnings, one, none, blank
        (
            LayoutField("StateCode", 8, required=False, rule="state"),
            ["Province X", "Ontario", "MA", "", "Ontario"],
            [("state_unknown", "truncated"), ("state_unknown",), (), (), ("state_unknown",)],
        ),
    ],
    ids=["expression", "expression-choice", "distinct"],
)
def test_column_warnings_are_the_typed_warnings_of_each_value(
    field: LayoutField, raw: list[str], codes: list[tuple[str, ...]]
) -> None:
    values, warnings = ColumnCleaner(field, None, TODAY).clean(pl.Series(raw, dtype=pl.String))
    expected = [clean_value(text, field, today=TODAY) for text in raw]
    assert [cleaned.codes for cleaned in expected] == codes
    assert values.to_list() == [cleaned.value for cleaned in expected]
    has_warning = warnings.position.is_not_null()
    assert has_warning.to_list() == [bool(cleaned.warnings) for cleaned in expected]
    found = [
        tuple(FieldWarning(item["code"], field.name, item["message"]) for item in entry)
        for entry in warnings.of(has_warning).to_list()
    ]
    assert found == [cleaned.warnings for cleaned in expected if cleaned.warnings]


def test_json_records_are_what_json_dumps_writes_of_the_non_blank_values() -> None:
    special = [
        'a"b',
        "back\\slash",
        "line\nbreak\r\t",
        "\x00\x01\x1f\x7f",
        "\u2028é\ufeff",
        '","B":null',
        "{,",
    ]
    rng = random.Random(5)
    columns = {"A": "v0", "B": "v1", "Last": "v2"}
    frame = pl.DataFrame(
        {column: [rng.choice(["", "", *special]) for _ in range(300)] for column in columns.values()}
    )
    expected = [
        json.dumps(
            {name: row[column] for name, column in columns.items() if row[column]},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for row in frame.iter_rows(named=True)
    ]
    assert json_records(frame, columns).to_list() == expected
    assert json_records(frame.filter(pl.col("v0") != ""), columns).to_list() == [
        record for record, first in zip(expected, frame.get_column("v0"), strict=True) if first
    ]
