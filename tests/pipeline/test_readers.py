"""The upload readers: formats, encodings and delimiters read as text, and hostile files refused by code."""

from __future__ import annotations

import codecs
import gc
import random
import tracemalloc
import zipfile
from datetime import date, datetime
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from datalab.pipeline.readers import ReaderLimits, ReadError, TableInfo, blank_count, open_table

HEADER = "UniqueID,ZipCode,EntryTerm,LastName\n"
ROWS = "02134,001024,032024,Muñoz\n00077,02134,FA24,café\n"
EXPECTED = [["02134", "001024", "032024", "Muñoz"], ["00077", "02134", "FA24", "café"]]


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", newline="")
    else:
        path.write_bytes(data)
    return path


def read(
    path: Path, name: str | None = None, limits: ReaderLimits | None = None
) -> tuple[TableInfo, list[list[str]]]:
    with open_table(path, file_name=name or path.name, limits=limits or ReaderLimits()) as (info, rows):
        return info, list(rows)


def read_error(path: Path, name: str | None = None, limits: ReaderLimits | None = None) -> ReadError:
    with pytest.raises(ReadError) as caught:
        read(path, name, limits)
    return caught.value


def open_error(path: Path, name: str | None = None) -> ReadError:
    """The error raised by open_table itself, before any row is asked for."""
    with pytest.raises(ReadError) as caught, open_table(path, file_name=name or path.name):
        pass
    return caught.value


def make_zip(tmp_path: Path, members: dict[str, bytes | str], name: str = "upload.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def make_xlsx(tmp_path: Path, name: str = "upload.xlsx") -> Path:
    workbook = openpyxl.Workbook()
    hidden = workbook.active
    assert hidden is not None
    hidden.title = "Notes"
    hidden.append(["not", "the", "data"])
    hidden.sheet_state = "hidden"
    sheet = workbook.create_sheet("Data")
    sheet.append(["UniqueID", "ZipCode", "HSCode", "GPA", "Applied", "Stamp", "Flag"])
    sheet.append(["02134", 2134, "001024", 3.5, date(2024, 3, 1), datetime(2024, 3, 1, 13, 5), True])
    sheet.append(["032024", 2134.0, "000777", 4, datetime(2023, 12, 31), None, False])
    workbook.save(path := tmp_path / name)
    return path


SHEET_ROWS = [
    ["02134", "2134", "001024", "3.5", "2024-03-01", "2024-03-01 13:05:00", "TRUE"],
    ["032024", "2134", "000777", "4", "2023-12-31", "", "FALSE"],
]


# --- delimiters, line endings, NULs


@pytest.mark.parametrize("delimiter", [",", "\t", "|"])
@pytest.mark.parametrize("extension", ["csv", "tsv", "txt"])
def test_each_delimiter_is_sniffed_from_the_header(tmp_path: Path, delimiter: str, extension: str) -> None:
    text = (HEADER + ROWS).replace(",", delimiter)
    info, rows = read(write(tmp_path, f"upload.{extension}", text))
    assert info.delimiter == delimiter
    assert info.headers == ["UniqueID", "ZipCode", "EntryTerm", "LastName"]
    assert info.source_format == extension
    assert info.members == []
    assert rows == EXPECTED


def test_delimiters_inside_quoted_header_names_do_not_count(tmp_path: Path) -> None:
    info, rows = read(write(tmp_path, "a.csv", '"Name, Last"|"Name, First"|Zip\nMuñoz|Ana|02134\n'))
    assert info.delimiter == "|"
    assert info.headers == ["Name, Last", "Name, First", "Zip"]
    assert rows == [["Muñoz", "Ana", "02134"]]


def test_a_single_column_tsv_defaults_to_tab(tmp_path: Path) -> None:
    info, rows = read(write(tmp_path, "ids.tsv", "UniqueID\n00042\n"))
    assert info.delimiter == "\t"
    assert rows == [["00042"]]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_quoted_fields_keep_embedded_newlines_with_any_line_ending(tmp_path: Path, newline: str) -> None:
    text = f'ID,Note{newline}1,"first{newline}second"{newline}2,plain{newline}'
    _, rows = read(write(tmp_path, "a.csv", text))
    assert rows == [["1", f"first{newline}second"], ["2", "plain"]]


def test_crlf_split_across_read_chunks(tmp_path: Path) -> None:
    # the "\r" of the first row's ending is the last byte of the first 64 KiB read
    head = b"ID,Note\r\n"
    row = b"1," + b"x" * (64 * 1024 - len(head) - 3) + b"\r\n"
    assert len(head + row) == 64 * 1024 + 1
    _, rows = read(write(tmp_path, "a.csv", head + row + b"2,y\r\n"))
    assert [r[0] for r in rows] == ["1", "2"]
    assert rows[0][1] == "x" * (64 * 1024 - len(head) - 3)


def test_nul_bytes_are_stripped(tmp_path: Path) -> None:
    _, rows = read(write(tmp_path, "a.csv", b"ID,Name\x00\n0001\x00,Ann\x00\x00\n"))
    assert rows == [["0001", "Ann"]]


def test_blank_lines_and_blank_rows_are_skipped(tmp_path: Path) -> None:
    text = "\n\nID,Name\n\n0001,Ann\n,\n   \n0002,Bo\n\n"
    info, rows = read(write(tmp_path, "a.csv", text))
    assert info.headers == ["ID", "Name"]
    assert rows == [["0001", "Ann"], ["0002", "Bo"]]


def test_short_rows_are_padded_and_trailing_delimiters_ignored(tmp_path: Path) -> None:
    text = "ID,Name,City,\n0001,Ann\n0002,Bo,Lima,,\n"
    info, rows = read(write(tmp_path, "a.csv", text))
    assert info.headers == ["ID", "Name", "City"]
    assert rows == [["0001", "Ann", ""], ["0002", "Bo", "Lima"]]


def test_header_names_are_trimmed(tmp_path: Path) -> None:
    info, _ = read(write(tmp_path, "a.csv", " ID , Name\n1,2\n"))
    assert info.headers == ["ID", "Name"]


# --- encodings


TEXT = "UniqueID,LastName,City,Note\n0012,Muñoz,São Paulo,café €5\n"


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (TEXT.encode("cp1252"), "cp1252"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le", "utf-16-be", "cp1252"],
)
def test_encodings_are_detected_and_recorded(tmp_path: Path, raw: bytes, encoding: str) -> None:
    info, rows = read(write(tmp_path, "a.csv", raw))
    assert info.encoding == encoding
    assert info.headers == ["UniqueID", "LastName", "City", "Note"]
    assert rows == [["0012", "Muñoz", "São Paulo", "café €5"]]


def test_a_windows_byte_after_the_first_megabyte_still_selects_cp1252(tmp_path: Path) -> None:
    filler = b"".join(b"%06d,Smith\n" % n for n in range(200_000))
    info, rows = read(write(tmp_path, "a.csv", b"ID,Name\n" + filler + b"999999,Mu\xf1oz\n"))
    assert info.encoding == "cp1252"
    assert len(rows) == 200_001
    assert rows[-1] == ["999999", "Muñoz"]


def test_bytes_cp1252_leaves_undefined_decode_as_latin_1(tmp_path: Path) -> None:
    info, rows = read(write(tmp_path, "a.csv", b"ID,Name\n1,A\x81B\xe9\n"))
    assert info.encoding == "cp1252"
    assert rows == [["1", "A\x81Bé"]]


def test_a_utf8_bom_file_with_invalid_bytes_fails_cleanly(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "a.csv", codecs.BOM_UTF8 + b"ID,Name\n1,Mu\xf1oz\n"))
    assert error.code == "bad_encoding"
    assert "byte-order mark" in error.message


# --- spreadsheets


def test_xlsx_reads_the_first_visible_sheet_as_text(tmp_path: Path) -> None:
    info, rows = read(make_xlsx(tmp_path))
    assert info == TableInfo(
        headers=["UniqueID", "ZipCode", "HSCode", "GPA", "Applied", "Stamp", "Flag"],
        encoding=None,
        delimiter=None,
        source_format="xlsx",
        members=[],
    )
    assert rows == SHEET_ROWS


def test_xls_reads_the_first_visible_sheet_as_text(tmp_path: Path) -> None:
    xlwt = pytest.importorskip("xlwt")
    workbook = xlwt.Workbook()
    hidden = workbook.add_sheet("Notes")
    hidden.write(0, 0, "not the data")
    hidden.visibility = 1
    sheet = workbook.add_sheet("Data")
    for column, name in enumerate(["UniqueID", "ZipCode", "GPA", "Applied", "Stamp"]):
        sheet.write(0, column, name)
    values = ["02134", 2134, 3.25, date(2024, 3, 1), datetime(2024, 3, 1, 10, 30)]
    formats = {3: "YYYY-MM-DD", 4: "YYYY-MM-DD HH:MM"}
    for column, value in enumerate(values):
        style = xlwt.easyxf(num_format_str=formats.get(column, "General"))
        sheet.write(1, column, value, style)
    workbook.set_active_sheet(1)
    workbook.save(str(path := tmp_path / "upload.xls"))
    info, rows = read(path)
    assert info.headers == ["UniqueID", "ZipCode", "GPA", "Applied", "Stamp"]
    assert info.source_format == "xls"
    assert rows == [["02134", "2134", "3.25", "2024-03-01", "2024-03-01 10:30:00"]]


def test_a_workbook_whose_sheets_are_all_hidden(tmp_path: Path) -> None:
    xlwt = pytest.importorskip("xlwt")
    workbook = xlwt.Workbook()
    sheet = workbook.add_sheet("Data")
    sheet.write(0, 0, "UniqueID")
    sheet.write(1, 0, "0001")
    sheet.visibility = 1
    workbook.save(str(path := tmp_path / "a.xls"))
    assert open_error(path).code == "no_visible_sheet"


def test_an_xls_with_a_damaged_body(tmp_path: Path) -> None:
    path = write(tmp_path, "a.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2000))
    assert open_error(path).code == "not_a_spreadsheet"


def test_a_value_right_of_the_sheet_header_is_a_ragged_row(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["ID", "Name"])
    sheet.append(["0001", "Ann"])
    sheet.append(["0002", "Bo", "stray"])
    workbook.save(path := tmp_path / "a.xlsx")
    error = read_error(path)
    assert (error.code, error.row) == ("ragged_row", 3)
    assert error.message.startswith("Row 3 has 3 fields but the header has 2 columns")


def test_sheet_row_numbers_are_excel_row_numbers(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet["B3"], sheet["C3"] = "ID", "Name"
    sheet["B4"], sheet["C4"] = "0001", "Ann"
    sheet["B6"], sheet["D6"] = "0002", "stray"
    workbook.save(path := tmp_path / "a.xlsx")
    with open_table(path, file_name="a.xlsx") as (info, rows):
        assert info.headers == ["ID", "Name"]
        assert next(rows) == ["0001", "Ann"]
        with pytest.raises(ReadError) as caught:
            next(rows)
    assert (caught.value.code, caught.value.row) == ("ragged_row", 6)


def test_an_xlsx_that_is_a_zip_but_not_a_workbook(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": HEADER + ROWS}, name="a.xlsx")
    assert open_error(path).code == "not_a_spreadsheet"


def test_an_xlsx_hiding_a_zip_bomb_is_refused(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/padding.bin", bytes(8 * 1024 * 1024))
    error = open_error(path)
    assert error.code == "zip_bomb"
    assert "xl/media/padding.bin" in error.message


# --- ZIP archives


def test_zip_members_with_the_same_header_are_concatenated(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path,
        {
            "fall/a.csv": "UniqueID,ZipCode\n00001,02134\n",
            "__MACOSX/fall/._a.csv": b"\x00\x05\x16\x07 junk",
            "b.txt": "uniqueid|ZIPCODE\n00002|001024\n",
        },
    )
    info, rows = read(path)
    assert info.headers == ["UniqueID", "ZipCode"]
    assert info.members == ["fall/a.csv", "b.txt"]
    assert info.source_format == "zip:csv+txt"
    assert (info.encoding, info.delimiter) == ("utf-8", ",")
    assert rows == [["00001", "02134"], ["00002", "001024"]]


def test_zip_of_csv_and_xlsx_members(tmp_path: Path) -> None:
    sheet_path = make_xlsx(tmp_path)
    csv_text = "UniqueID,ZipCode,HSCode,GPA,Applied,Stamp,Flag\n00099,02134,001024,3.9,2024-01-01,,TRUE\n"
    path = make_zip(tmp_path, {"a.xlsx": sheet_path.read_bytes(), "b.csv": csv_text})
    info, rows = read(path)
    assert info.source_format == "zip:csv+xlsx"
    assert rows == [*SHEET_ROWS, ["00099", "02134", "001024", "3.9", "2024-01-01", "", "TRUE"]]


def test_zip_members_with_different_headers_fail_before_any_row(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": "UniqueID,ZipCode\n1,2\n", "b.csv": "UniqueID,Email\n3,x@y\n"})
    error = open_error(path)
    assert error.code == "mixed_headers_in_zip"
    assert '"b.csv" has "Email" in column 2 where "a.csv" has "ZipCode"' in error.message


def test_leaving_early_closes_every_member(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": HEADER + ROWS, "b.csv": HEADER + ROWS})
    with open_table(path, file_name="upload.zip") as (_, rows):
        assert [next(rows) for _ in range(3)] == [*EXPECTED, EXPECTED[0]]
    # the iterator is finished with the context; an unclosed member would warn (an error under -W error)
    assert list(rows) == []
    gc.collect()


def test_ragged_row_in_a_zip_member_names_the_member(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": "ID,Zip\n1,2\n", "b.csv": "ID,Zip\n3,4\n5,6,7\n"})
    error = read_error(path)
    assert (error.code, error.row) == ("ragged_row", 3)
    assert 'Line 3 of "b.csv"' in error.message


def test_a_highly_compressed_member_is_a_zip_bomb(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": bytes(8 * 1024 * 1024)})
    error = open_error(path)
    assert error.code == "zip_bomb"
    assert '"a.csv"' in error.message


def test_members_expanding_past_the_total_cap_are_a_zip_bomb(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": HEADER + ROWS, "b.csv": HEADER + ROWS})
    error = read_error(path, limits=ReaderLimits(max_uncompressed_bytes=150))
    assert error.code == "zip_bomb"


def test_too_many_members(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {f"{n}.csv": HEADER + ROWS for n in range(4)})
    assert read_error(path, limits=ReaderLimits(max_zip_members=3)).code == "too_many_members"


@pytest.mark.parametrize("member", ["inner.zip", "inner.csv"])
def test_nested_archives_are_refused(tmp_path: Path, member: str) -> None:
    inner = make_zip(tmp_path, {"a.csv": HEADER + ROWS}, name="inner.zip").read_bytes()
    path = make_zip(tmp_path, {"a.csv": HEADER + ROWS, member: inner})
    error = open_error(path)
    assert error.code == "nested_archive"
    assert member in error.message


def test_encrypted_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", HEADER + ROWS)
        archive.infolist()[0].flag_bits |= 0x1  # written into the central directory on close
    error = open_error(path)
    assert error.code == "encrypted_archive"
    assert '"a.csv"' in error.message


def test_a_member_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": HEADER + ROWS, "readme.docx": "hello"})
    assert open_error(path).code == "unsupported_extension"


def test_a_damaged_member_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("a.csv", HEADER + ROWS)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"02134")] = ord("9")  # the stored CRC no longer matches
    path.write_bytes(bytes(raw))
    assert open_error(path).code == "corrupt_archive"


def test_an_archive_without_files(tmp_path: Path) -> None:
    assert open_error(make_zip(tmp_path, {})).code == "empty_file"


# --- files whose bytes are not what their names say


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("photo.csv", PNG),
        ("report.txt", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
        ("garbage.csv", random.Random(7).randbytes(4096)),
        ("text.xlsx", (HEADER + ROWS).encode()),
        ("text.xls", (HEADER + ROWS).encode()),
        ("photo.xlsx", PNG),
        ("text.zip", (HEADER + ROWS).encode()),
    ],
)
def test_bytes_that_disagree_with_the_extension(tmp_path: Path, name: str, data: bytes) -> None:
    error = open_error(write(tmp_path, name, data))
    assert error.code == "wrong_file_type"
    assert f"named .{name.rsplit('.', 1)[1]}" in error.message


def test_an_xlsx_named_csv(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path)
    error = open_error(path, name="upload.csv")
    assert error.code == "wrong_file_type"
    assert "ZIP archive or an .xlsx workbook" in error.message


def test_an_xlsx_named_xls(tmp_path: Path) -> None:
    assert open_error(make_xlsx(tmp_path), name="upload.xls").code == "wrong_file_type"


def test_an_unsupported_extension(tmp_path: Path) -> None:
    error = open_error(write(tmp_path, "data.json", "{}"))
    assert error.code == "unsupported_extension"
    assert '"data.json"' in error.message


# --- empty, header-only and malformed tables


@pytest.mark.parametrize(
    ("name", "data"), [("a.csv", b""), ("a.csv", b"\n\r\n  \n"), ("a.csv", codecs.BOM_UTF8), ("a.xlsx", b"")]
)
def test_empty_files(tmp_path: Path, name: str, data: bytes) -> None:
    assert open_error(write(tmp_path, name, data)).code == "empty_file"


def test_a_workbook_with_an_empty_sheet(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.save(path := tmp_path / "a.xlsx")
    assert open_error(path).code == "empty_file"


def test_headers_only(tmp_path: Path) -> None:
    assert open_error(write(tmp_path, "a.csv", HEADER + "\n,,,\n")).code == "headers_only"


def test_headers_only_in_every_zip_member(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"a.csv": HEADER, "b.csv": HEADER})
    assert open_error(path).code == "headers_only"


def test_a_zip_whose_first_member_has_no_rows_reads_the_others(tmp_path: Path) -> None:
    _, rows = read(make_zip(tmp_path, {"a.csv": HEADER, "b.csv": HEADER + ROWS}))
    assert rows == EXPECTED


def test_duplicate_headers_ignore_case_and_spaces(tmp_path: Path) -> None:
    error = open_error(write(tmp_path, "a.csv", "UniqueID,Email, EMAIL ,ZipCode\n1,a,b,c\n"))
    assert (error.code, error.row) == ("duplicate_headers", 1)
    assert '"EMAIL" (columns 2 and 3)' in error.message


@pytest.mark.parametrize(
    ("header", "column"), [("UniqueID,,ZipCode", "Column 2 "), (",ZipCode", "Column 1 ")]
)
def test_blank_header_names(tmp_path: Path, header: str, column: str) -> None:
    error = open_error(write(tmp_path, "a.csv", f"{header}\n1,2,3\n"))
    assert error.code == "blank_header"
    assert error.message.startswith(column)


def test_a_header_of_only_delimiters(tmp_path: Path) -> None:
    assert open_error(write(tmp_path, "a.csv", ",,,\n1,2,3\n")).code == "blank_header"


def test_a_header_over_the_size_cap(tmp_path: Path) -> None:
    header = ",".join(f"Column{n}" for n in range(100))
    path = write(tmp_path, "a.csv", header + "\n" + ",".join("1" * 100) + "\n")
    assert read_error(path, limits=ReaderLimits(max_header_bytes=256)).code == "header_too_large"


def test_a_file_without_line_breaks_stops_at_the_header_cap(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "ID," * 1_000_000)
    assert open_error(path).code == "header_too_large"


def test_too_many_columns(tmp_path: Path) -> None:
    header = ",".join(f"C{n}" for n in range(11))
    path = write(tmp_path, "a.csv", header + "\n" + "1\n")
    assert read_error(path, limits=ReaderLimits(max_columns=10)).code == "too_many_columns"


def test_a_long_row_names_its_line(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "a.csv", "ID,Name\n1,2,3\n"))
    assert (error.code, error.row) == ("ragged_row", 2)
    assert error.message == (
        "Line 2 has 3 fields but the header has 2 columns; a value probably contains an unquoted comma."
    )


def test_row_numbers_count_physical_lines(tmp_path: Path) -> None:
    text = '\nID,Note\n1,"two\nlines"\n\n2,ok\n3,bad,extra\n'
    with open_table(write(tmp_path, "a.csv", text), file_name="a.csv") as (_, rows):
        assert next(rows) == ["1", "two\nlines"]
        assert next(rows) == ["2", "ok"]
        with pytest.raises(ReadError) as caught:
            next(rows)
    assert (caught.value.code, caught.value.row) == ("ragged_row", 7)


def test_an_unclosed_quote_fails_at_its_line(tmp_path: Path) -> None:
    text = 'ID,Note\n1,ok\n2,"never closed\n' + "3,more\n" * 40_000
    error = read_error(write(tmp_path, "a.csv", text))
    assert (error.code, error.row) == ("malformed_row", 3)


def test_a_data_line_over_the_line_cap(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "ID,Note\n1," + "x" * 5000 + "\n")
    error = read_error(path, limits=ReaderLimits(max_line_chars=1000))
    assert (error.code, error.row) == ("line_too_long", 2)


# --- bounded memory


def test_a_large_csv_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("UniqueID,ZipCode,EntryTerm,LastName,Email\n")
        for start in range(0, 200_000, 10_000):
            out.writelines(
                f"{n:08d},{n % 100_000:05d},FA24,Muñoz-{n},student{n}@example.edu\n"
                for n in range(start, start + 10_000)
            )
    size = path.stat().st_size
    assert size > 10 * 1024 * 1024
    count = 0
    tracemalloc.start()
    try:
        with open_table(path, file_name="big.csv") as (_, rows):
            for row in rows:
                count += 1
                last = row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert last == ["00199999", "99999", "FA24", "Muñoz-199999", "student199999@example.edu"]
    assert peak < 10 * 1024 * 1024


def test_blank_count_counts_the_values_str_strip_leaves_empty() -> None:
    values = ["", " ", "\t\x1c", "\x85", "\u00a0\u3000", "!", " a", "\x84", "\u00e9", "\u3000b", "a "]
    frame = pl.DataFrame({"c0": values})
    assert frame.select(blank_count("c0")).item() == sum(1 for value in values if not value.strip())
