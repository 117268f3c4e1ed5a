"""Uploaded CSV, TXT, TSV, XLSX, XLS and ZIP files read as a header and rows of text, in bounded memory.

The rows come one list at a time (``for row in rows``) or as polars frames of text columns
(``rows.frames()``). Frames of a well-formed text file are parsed by polars straight from disk, in blocks
cut at record boundaries, a few blocks ahead on worker threads (text in another encoding is first
transcoded to UTF-8 in one streaming pass);
anything unusual (a ragged row, a stray quote, a lone carriage return, an overlong line) is read by the
row reader instead, so both ways give the same rows and raise the same errors.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import python_calamine

if TYPE_CHECKING:
    from _csv import Reader


@dataclass(frozen=True)
class ReaderLimits:
    """Caps that keep a hostile or broken upload from exhausting memory, disk or time."""

    max_header_bytes: int = 64 * 1024
    # one physical line of text is held in memory at a time, so this bounds memory on files without newlines
    max_line_chars: int = 1024 * 1024
    max_columns: int = 1000
    max_zip_members: int = 50
    max_uncompressed_bytes: int = 10 * 1024**3
    max_compression_ratio: int = 200


class ReadError(Exception):
    """A file that cannot be read as a table: a stable snake_case code, an actionable message, the row."""

    def __init__(self, code: str, message: str, *, row: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.row = row


@dataclass(frozen=True)
class TableInfo:
    """What was found while opening a file; for a ZIP, encoding and delimiter are its first member's."""

    headers: list[str]
    encoding: str | None
    delimiter: str | None
    source_format: str
    members: list[str]


class _Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class _Part:
    """One file to read: the upload itself, or one member of an uploaded ZIP (named)."""

    kind: str
    member: str | None
    # workbooks need random access, so they are always files on disk; text may stream from the archive
    source: Path | Callable[[], _Stream]
    # detecting costs a full read, and a ZIP member is opened twice (header check, then its rows)
    encoding: str | None = None
    # what the detecting read learnt about the raw bytes (only when they are UTF-8 without a BOM)
    facts: _ByteFacts | None = None

    @property
    def label(self) -> str:
        return f'The ZIP member "{self.member}"' if self.member else "The file"

    @property
    def where(self) -> str:
        return f' of "{self.member}"' if self.member else ""

    def open_bytes(self) -> _Stream:
        return self.source.open("rb") if isinstance(self.source, Path) else self.source()


@dataclass
class _Table:
    headers: list[str]
    encoding: str | None
    delimiter: str | None
    row_label: str
    records: Iterator[tuple[int, list[str]]]
    # text only: physical lines before the first data line, and fields in the header row as written
    data_line: int = 0
    raw_width: int = 0


class _ByteFacts:
    """What decides whether polars may parse UTF-8 bytes exactly as the row reader would."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.quotes = 0
        self.nul = False
        self.lone_cr = False
        self.long_line = False
        self._since_newline = 0
        self._pending_cr = False

    def feed(self, chunk: bytes) -> None:
        """Account for the next chunk of the file."""
        if not chunk:
            return
        # `in` finds a byte far faster than count() or a regular expression scans for it
        if b'"' in chunk:
            self.quotes += chunk.count(b'"')
        self.nul = self.nul or b"\x00" in chunk
        if self._pending_cr and not chunk.startswith(b"\n"):
            self.lone_cr = True
        # a carriage return at the end of the chunk is decided by the next one (see _pending_cr)
        if b"\r" in chunk and _has_lone_cr(chunk):
            self.lone_cr = True
        self._pending_cr = chunk.endswith(b"\r")
        # Chunks are at most max_line_bytes long, so a line within one chunk is within the cap; only the
        # line running across chunks is counted (bytes with its ending: never fewer than its characters).
        first = chunk.find(b"\n")
        if first < 0:
            self._since_newline += len(chunk)
        else:
            if self._since_newline + first + 1 > self.max_line_bytes:
                self.long_line = True
            self._since_newline = len(chunk) - chunk.rfind(b"\n") - 1
        if self._since_newline > self.max_line_bytes:
            self.long_line = True

    @property
    def columnar(self) -> bool:
        """Whether the whole file can go through polars."""
        return not (self.nul or self.lone_cr or self.long_line or self._pending_cr or self.quotes % 2)


def _has_lone_cr(data: bytes) -> bool:
    """Whether a carriage return in the bytes is followed by something other than a line feed."""
    # RE2 (Arrow's, reading bytes as Latin-1) runs over a Windows file's CRLFs in a third of the time
    # Python's re takes, which stops at each one; the bytes are handed over without a copy.
    offsets = pa.py_buffer(struct.pack("<qq", 0, len(data)))
    values = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    return bool(pc.match_substring_regex(values, "\r[^\n]")[0].as_py())


class _LineTooLongError(Exception):
    pass


_DEFAULT_LIMITS = ReaderLimits()
_CHUNK = 64 * 1024
# the byte checks cost a call into Arrow each, so they look at this much of a file at a time
_SCAN_BYTES = 1024 * 1024
_TEXT_KINDS = frozenset({"csv", "tsv", "txt"})
_SHEET_KINDS = frozenset({"xlsx", "xls"})
_ARCHIVE_KINDS = frozenset({"zip", "gz", "tgz", "tar", "7z", "rar", "bz2", "xz"})
_DELIMITERS = (",", "\t", "|")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", "|": "pipe"}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# (leading bytes, what they are, whether it is an archive)
_SIGNATURES: tuple[tuple[bytes, str, bool], ...] = (
    (b"PK\x03\x04", "a ZIP archive or an .xlsx workbook", True),
    (b"PK\x05\x06", "an empty ZIP archive", True),
    (_OLE_MAGIC, "an old-style Office file (.xls, .doc or a password-protected workbook)", False),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", False),
    (b"\xff\xd8\xff", "a JPEG image", False),
    (b"GIF87a", "a GIF image", False),
    (b"GIF89a", "a GIF image", False),
    (b"%PDF-", "a PDF document", False),
    (b"\x1f\x8b", "a gzip archive", True),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", True),
    (b"Rar!\x1a\x07", "a RAR archive", True),
    (b"\x7fELF", "a program", False),
)
_ENCRYPTED_FLAG = 0x1
# small entries cannot exhaust anything whatever their ratio, and tiny repetitive XML parts compress very well
_RATIO_FLOOR = 1024 * 1024
# WHATWG's windows-1252: the five bytes cp1252 leaves undefined decode to their Latin-1 code points,
# so the fallback never fails part-way through a file
_CP1252 = "".join(bytes([byte]).decode("cp1252", errors="ignore") or chr(byte) for byte in range(256))
_CONTROL_CHARS = dict.fromkeys([*(c for c in range(0x20) if chr(c) not in "\t\n\r"), 0x7F])


@contextmanager
def open_table(
    path: Path, *, file_name: str, limits: ReaderLimits = _DEFAULT_LIMITS
) -> Iterator[tuple[TableInfo, TableRows]]:
    """Open an uploaded file (format from file_name's extension) as its headers and an iterator of rows."""
    kind = _extension(file_name)
    with ExitStack() as stack:
        if kind == "zip":
            parts = _zip_parts(path, limits, stack)
            source_format = "zip:" + "+".join(sorted({part.kind for part in parts}))
        elif kind in _TEXT_KINDS or kind in _SHEET_KINDS:
            parts = [_Part(kind, None, path)]
            source_format = kind
        else:
            raise ReadError(
                "unsupported_extension",
                f'"{file_name}" is not a .csv, .txt, .tsv, .xlsx, .xls or .zip file; '
                "upload the data in one of those formats.",
            )
        first = _open_part(parts[0], limits, stack)
        peeked = next(first.records, None)
        has_data = peeked is not None
        for part in parts[1:]:
            # every member's header is checked before the first row is handed out
            with ExitStack() as scratch:
                table = _open_part(part, limits, scratch)
                _check_same_headers(first.headers, table.headers, parts[0], part)
                has_data = has_data or next(table.records, None) is not None
        if not has_data:
            raise ReadError("headers_only", "The upload has a header row but no data rows.")
        first.records = itertools.chain([peeked] if peeked is not None else [], first.records)
        rows = TableRows(first, parts, limits)
        stack.callback(rows.close)
        members = [part.member for part in parts if part.member is not None]
        yield TableInfo(first.headers, first.encoding, first.delimiter, source_format, members), rows


FRAME_ROWS = 50_000
_Item = TypeVar("_Item")
_BLOCK_BYTES = 4 * 1024 * 1024
_PARSERS = 2
# What Python's str.strip() removes: the same characters decide what is blank in a frame.
WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())
NOT_BLANK = "[^" + "".join(f"\\x{{{ord(char):x}}}" for char in WHITESPACE) + "]"


def blank_count(name: str) -> pl.Expr:
    """How many values of the column are empty or whitespace only (str.strip's sense)."""
    column = pl.col(name)
    # Whitespace sorts below "!" or from U+0085 on: a value starting in between has text, and only the
    # few others need the regular expression, which costs far more than comparing.
    others = column.filter((column < "!") | (column >= "\x85"))
    return others.str.contains(NOT_BLANK).not_().sum().alias(name)


def column_names(width: int) -> list[str]:
    """The names of a frame's columns: the file's columns by position."""
    return [f"c{index}" for index in range(width)]


class _Fallback(Exception):
    """polars cannot read this part exactly as the row reader does."""


class TableRows:
    """The data rows of an opened table, as lists of text (iterate) or as polars frames (`frames()`)."""

    def __init__(self, first: _Table, parts: list[_Part], limits: ReaderLimits) -> None:
        self._first = first
        self._parts = parts
        self._limits = limits
        self._width = len(first.headers)
        self._rows = self._all_rows()

    def __iter__(self) -> TableRows:
        return self

    def __next__(self) -> list[str]:
        return next(self._rows)

    def close(self) -> None:
        """Release the file handles of the part being read."""
        self._rows.close()

    def _all_rows(self) -> Generator[list[str], None, None]:
        yield from _fitted(self._first, self._width, self._parts[0])
        for part in self._parts[1:]:
            with ExitStack() as stack:
                yield from _fitted(_open_part(part, self._limits, stack), self._width, part)

    def frames(self, *, temp_dir: Path | None = None) -> Iterator[pl.DataFrame]:
        """The rows as frames of text columns named by column_names, each at most a few MiB of the file."""
        for index, part in enumerate(self._parts):
            with ExitStack() as stack:
                table = self._first if index == 0 else _open_part(part, self._limits, stack)
                yield from self._part_frames(part, table, temp_dir, stack)

    def _part_frames(
        self, part: _Part, table: _Table, temp_dir: Path | None, stack: ExitStack
    ) -> Iterator[pl.DataFrame]:
        source = None
        if table.row_label == "Line":
            source = _columnar_source(part, table, self._limits, temp_dir, stack)
        if source is None:
            yield from _batched_frames(_fitted(table, self._width, part), self._width)
            return
        done = 0
        try:
            for frame in _block_frames(*source, table, self._width):
                done += frame.height
                yield frame
        except _Fallback:
            # the row reader reads the part again and goes on from where polars stopped, raising what it finds
            with ExitStack() as again:
                rows = _fitted(_open_part(part, self._limits, again), self._width, part)
                yield from _batched_frames(itertools.islice(rows, done, None), self._width)


def _batched_frames(rows: Iterator[list[str]], width: int) -> Iterator[pl.DataFrame]:
    names = column_names(width)
    while batch := list(itertools.islice(rows, FRAME_ROWS)):
        yield pl.DataFrame(batch, schema=dict.fromkeys(names, pl.String), orient="row")


def _columnar_source(
    part: _Part, table: _Table, limits: ReaderLimits, temp_dir: Path | None, stack: ExitStack
) -> tuple[Path, int] | None:
    """A UTF-8 file of the part that polars reads exactly as the row reader would, and its data offset."""
    facts = part.facts
    if isinstance(part.source, Path) and part.encoding == "utf-8" and facts is not None:
        if facts.columnar:
            return part.source, _offset_of_line(part.source, table.data_line)
        if not facts.nul:
            return None
    return _transcoded(part, table, limits, temp_dir, stack)


def _transcoded(
    part: _Part, table: _Table, limits: ReaderLimits, temp_dir: Path | None, stack: ExitStack
) -> tuple[Path, int] | None:
    # One streaming pass: decoded (byte-order mark and NULs dropped, as the row reader does), as UTF-8.
    assert part.encoding is not None
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="datalab-utf8-", dir=temp_dir)))
    target = scratch / "part.csv"
    facts = _ByteFacts(limits.max_line_chars)
    with closing(part.open_bytes()) as stream, target.open("wb") as sink:
        for data in _utf8_runs(_decoded(stream, part.encoding, part)):
            # pieces of at most the line cap keep the check exact (see _ByteFacts.feed)
            for start in range(0, len(data), limits.max_line_chars):
                facts.feed(data[start : start + limits.max_line_chars])
            sink.write(data)
    if not facts.columnar:
        return None
    return target, _offset_of_line(target, table.data_line)


def _utf8_runs(texts: Iterator[str]) -> Iterator[bytes]:
    # about _SCAN_BYTES at a time, for the byte checks
    while batch := list(itertools.islice(texts, _SCAN_BYTES // _CHUNK)):
        yield b"".join(text.encode("utf-8", errors="surrogatepass") for text in batch)


def _offset_of_line(path: Path, lines: int) -> int:
    offset = 0
    with path.open("rb") as stream:
        while lines:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            start = 0
            while lines and (found := chunk.find(b"\n", start)) >= 0:
                lines -= 1
                start = found + 1
            offset += start if not lines else len(chunk)
    return offset


def _record_end(data: bytes | bytearray) -> int:
    # a line break ends a record when an even number of quote marks comes before it
    position = data.rfind(b"\n")
    if data.find(b'"', 0, position) < 0:
        # no quote mark before it (the usual case), found without counting
        return position + 1 if position >= 0 else -1
    for _ in range(64):
        if position < 0:
            return -1
        if data.count(b'"', 0, position) % 2 == 0:
            return position + 1
        position = data.rfind(b"\n", 0, position)
    return -1


def record_blocks(path: Path, start: int, *, max_record: int | None = None) -> Iterator[bytes]:
    """A CSV file's bytes from `start`, in blocks of a few MiB that end where a record ends.

    With `max_record`, a record longer than that (a quoted field running on) raises _Fallback.
    """
    # The blocks are read into one buffer, again from where the last one ended: allocating a fresh
    # few MiB for each read (and for joining what was left over) costs more than the copy handed out.
    buffer = bytearray(_BLOCK_BYTES)
    position = start
    with path.open("rb") as stream:
        while True:
            stream.seek(position)
            size = stream.readinto(buffer)
            cut = size if size < len(buffer) else _record_end(buffer)
            if cut < 0:
                if max_record is not None and len(buffer) > max_record + _BLOCK_BYTES:
                    raise _Fallback
                buffer = bytearray(len(buffer) + _BLOCK_BYTES)
                continue
            if cut:
                with memoryview(buffer) as view:
                    block = bytes(view[:cut])
                yield block
            if size < len(buffer):
                return
            position += cut


def _block_frames(path: Path, start: int, table: _Table, width: int) -> Iterator[pl.DataFrame]:
    assert table.delimiter is not None
    parse = partial(
        _block_frame, delimiter=table.delimiter, raw_width=max(table.raw_width, width), width=width
    )
    # polars parses without holding the GIL, so the next blocks are parsed while the caller works on a
    # frame; a few blocks in flight keep memory bounded, and the frames come out in the file's order.
    with ThreadPoolExecutor(max_workers=_PARSERS, thread_name_prefix="read-block") as pool:
        parsed: deque[Future[pl.DataFrame | None]] = deque()
        for block in _blocks_until_fallback(path, start):
            parsed.append(pool.submit(parse, block))
            if len(parsed) > _PARSERS:
                yield from _frame_of(parsed.popleft())
        while parsed:
            yield from _frame_of(parsed.popleft())


def _blocks_until_fallback(path: Path, start: int) -> Iterator[bytes | None]:
    """record_blocks, with None for a record too long to read as a block (and nothing after it)."""
    try:
        yield from record_blocks(path, start, max_record=4 * _BLOCK_BYTES)
    except _Fallback:
        yield None


def read_ahead(items: Iterator[_Item]) -> Generator[_Item, None, None]:
    """The items, each next one produced by a thread of its own while the caller works on the one before
    (reading and decompressing release the GIL); close the generator before what `items` reads from."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as reader:
        pending = reader.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = reader.submit(next, items, None)
            yield item


def _frame_of(parsed: Future[pl.DataFrame | None]) -> Iterator[pl.DataFrame]:
    # A block of blank lines only gives no frame: the stages never see an empty one.
    frame = parsed.result()
    if frame is not None:
        yield frame


def parse_block(block: bytes, names: list[str], delimiter: str) -> pl.DataFrame:
    """A block of whole CSV records (UTF-8, no header) as a frame of text columns with these names: a
    record with fewer fields gets nulls, one with more is refused (polars' error)."""
    return pl.read_csv(
        block,
        has_header=False,
        separator=delimiter,
        quote_char='"',
        schema=dict.fromkeys(names, pl.String),
        empty_string_is_null=False,
        missing_columns="insert",
        truncate_ragged_lines=False,
        raise_if_empty=False,
        encoding="utf8",
    )


def _block_frame(block: bytes | None, *, delimiter: str, raw_width: int, width: int) -> pl.DataFrame | None:
    if block is None:
        raise _Fallback
    names = column_names(raw_width)
    try:
        frame = parse_block(block, names, delimiter)
    except pl.exceptions.PolarsError as exc:
        raise _Fallback from exc
    frame = frame.with_columns(pl.col(names).fill_null(""))
    # the row reader's csv module refuses longer fields; bytes are never fewer than characters
    if frame.select(pl.max_horizontal(pl.col(names).str.len_bytes().max())).item() > csv.field_size_limit():
        raise _Fallback
    frame = frame.filter(has_text(frame, names))
    if raw_width > width and not has_text(frame, names[width:]).not_().all():
        raise _Fallback
    return None if frame.is_empty() else frame.select(names[:width])


def has_text(frame: pl.DataFrame, names: list[str]) -> pl.Series:
    """Whether each row has a character that is not whitespace in one of the columns (str.strip's sense)."""
    # the first column decides for almost every row: the others are looked at only for the rest
    mask = frame.get_column(names[0]).str.contains(NOT_BLANK)
    if len(names) > 1 and not mask.all():
        undecided = mask.not_().arg_true()
        rest = frame[undecided].select(
            pl.any_horizontal(pl.col(name).str.contains(NOT_BLANK) for name in names[1:])
        )
        mask = mask.scatter(undecided, rest.to_series())
    return mask


def _fitted(table: _Table, width: int, part: _Part) -> Iterator[list[str]]:
    # Short rows are padded (upstream tolerates them; exporters drop trailing empty fields), and empty
    # fields past the header are trailing delimiters; any value past the header is a ragged-row error.
    for number, record in table.records:
        missing = width - len(record)
        if missing > 0:
            record.extend([""] * missing)
        elif missing < 0:
            if "".join(record[width:]).strip():
                hint = (
                    f"a value probably contains an unquoted {_DELIMITER_NAMES[table.delimiter]}"
                    if table.delimiter
                    else "delete the values to the right of the last named column"
                )
                raise ReadError(
                    "ragged_row",
                    f"{table.row_label} {number}{part.where} has {len(record)} fields but the header has "
                    f"{width} columns; {hint}.",
                    row=number,
                )
            del record[width:]
        yield record


def _open_part(part: _Part, limits: ReaderLimits, stack: ExitStack) -> _Table:
    if part.kind in _SHEET_KINDS and isinstance(part.source, Path):
        return _open_sheet(part, part.source, limits, stack)
    return _open_text(part, limits, stack)


def _extension(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).suffix.lower().removeprefix(".")


def _zip_parts(path: Path, limits: ReaderLimits, stack: ExitStack) -> list[_Part]:
    with path.open("rb") as stream:
        head = stream.read(8)
    if not head:
        raise ReadError("empty_file", "The file is empty.")
    if not head.startswith(_ZIP_MAGIC):
        raise ReadError(
            "wrong_file_type",
            f"The file is named .zip but contains {_describe(head)}; upload a real ZIP archive.",
        )
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
    except zipfile.BadZipFile as exc:
        raise ReadError("corrupt_archive", f"The ZIP archive is damaged ({exc}); create it again.") from exc
    # folders and the metadata macOS adds when zipping are not data files
    infos = [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and not info.filename.startswith("__MACOSX/")
        and PurePosixPath(info.filename).name != ".DS_Store"
    ]
    if not infos:
        raise ReadError("empty_file", "The ZIP archive contains no files.")
    if len(infos) > limits.max_zip_members:
        raise ReadError(
            "too_many_members",
            f"The ZIP archive contains {len(infos)} files; at most {limits.max_zip_members} are allowed.",
        )
    _check_expansion(infos, limits, "The ZIP archive")
    parts: list[_Part] = []
    scratch: Path | None = None
    for info in infos:
        kind = _extension(info.filename)
        if kind in _ARCHIVE_KINDS:
            raise ReadError(
                "nested_archive",
                f'The ZIP archive contains another archive, "{info.filename}"; '
                "put the data files directly in one ZIP.",
            )
        if kind in _TEXT_KINDS:
            parts.append(_Part(kind, info.filename, partial(archive.open, info)))
        elif kind in _SHEET_KINDS:
            if scratch is None:
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="datalab-read-")))
            target = scratch / f"{len(parts)}.{kind}"
            part = _Part(kind, info.filename, target)
            with _archive_errors(part), archive.open(info) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            parts.append(part)
        else:
            raise ReadError(
                "unsupported_extension",
                f'The ZIP member "{info.filename}" is not a .csv, .txt, .tsv, .xlsx or .xls file; '
                "remove it from the archive.",
            )
    return parts


def _check_expansion(infos: Iterable[zipfile.ZipInfo], limits: ReaderLimits, container: str) -> None:
    # The sizes come from the central directory; zipfile never returns more than a member's declared
    # size (and checks its CRC), so a member that lies about its size fails instead of expanding.
    total = 0
    for info in infos:
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise ReadError(
                "encrypted_archive",
                f'{container} protects "{info.filename}" with a password; upload it without encryption.',
            )
        total += info.file_size
        if (
            info.file_size > _RATIO_FLOOR
            and info.file_size > info.compress_size * limits.max_compression_ratio
        ):
            raise ReadError(
                "zip_bomb",
                f'{container} holds "{info.filename}", which expands more than '
                f"{limits.max_compression_ratio} times; this looks like a ZIP bomb and was not unpacked.",
            )
    if total > limits.max_uncompressed_bytes:
        raise ReadError(
            "zip_bomb",
            f"{container} expands to {total} bytes, more than the {limits.max_uncompressed_bytes} allowed; "
            "split the data into smaller uploads.",
        )


@contextmanager
def _archive_errors(part: _Part) -> Iterator[None]:
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ReadError("corrupt_archive", f"{part.label} is damaged ({exc}); create the ZIP again.") from exc


def _describe(head: bytes) -> str:
    for magic, description, _archive in _SIGNATURES:
        if head.startswith(magic):
            return description
    return "text or unrecognised data"


def _open_text(part: _Part, limits: ReaderLimits, stack: ExitStack) -> _Table:
    encoding = part.encoding = part.encoding or _detect_encoding(part, limits)
    stream = stack.enter_context(closing(part.open_bytes()))
    chunks = _decoded(stream, encoding, part)
    first = next(chunks, "")
    if _looks_binary(first):
        raise ReadError(
            "wrong_file_type",
            f"{part.label} is named .{part.kind} but contains binary data, not text; "
            "export the data again as CSV.",
        )
    lines = _lines(itertools.chain((first,), chunks), limits.max_line_chars)
    skipped, header_lines = _header_lines(lines, limits, part)
    delimiter = _sniff_delimiter("".join(header_lines), "\t" if part.kind == "tsv" else ",")
    reader = csv.reader(itertools.chain(header_lines, lines), delimiter=delimiter)
    raw = next(reader)
    headers = _check_headers(raw, skipped + 1, limits, part)
    return _Table(
        headers,
        encoding,
        delimiter,
        "Line",
        _text_records(reader, skipped, limits, part),
        data_line=skipped + len(header_lines),
        raw_width=len(raw),
    )


def _detect_encoding(part: _Part, limits: ReaderLimits) -> str:
    # A byte-order mark decides. Otherwise the whole file is streamed through a strict UTF-8 decoder
    # (constant memory, one extra read) so a stray Windows byte deep in the file still selects cp1252
    # instead of failing half-way through the rows.
    with _archive_errors(part), closing(part.open_bytes()) as stream:
        head = stream.read(_CHUNK)
        if not head:
            raise ReadError("empty_file", f"{part.label} is empty.")
        for magic, description, archive in _SIGNATURES:
            if head.startswith(magic):
                if archive and part.member:
                    raise ReadError(
                        "nested_archive",
                        f"{part.label} is {description}, not text; put the data files directly in one ZIP.",
                    )
                raise ReadError(
                    "wrong_file_type",
                    f"{part.label} is named .{part.kind} but contains {description}; "
                    f"export the data again as .{part.kind}.",
                )
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        decoder = codecs.getincrementaldecoder("utf-8")()
        facts = _ByteFacts(limits.max_line_chars)
        piece = min(_SCAN_BYTES, limits.max_line_chars)
        try:
            chunk = head
            while chunk:
                view = memoryview(chunk)
                # decoded a little at a time: a larger text at once costs several times more (a fresh
                # allocation each time, too large for the allocator to reuse)
                for start in range(0, len(chunk), _CHUNK):
                    decoder.decode(view[start : start + _CHUNK])
                for start in range(0, len(chunk), piece):
                    facts.feed(chunk[start : start + piece])
                chunk = stream.read(_SCAN_BYTES)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    part.facts = facts
    return "utf-8"


def _decoder(encoding: str) -> Callable[[bytes, bool], str]:
    if encoding == "cp1252":
        return lambda data, _final: codecs.charmap_decode(data, "strict", _CP1252)[0]
    return codecs.getincrementaldecoder(encoding)().decode


def _decoded(stream: _Stream, encoding: str, part: _Part) -> Iterator[str]:
    decode = _decoder(encoding)
    offset = 0
    with _archive_errors(part):
        try:
            while chunk := stream.read(_CHUNK):
                # NULs are stripped, as upstream does: some exporters pad fields with them
                yield decode(chunk, False).replace("\x00", "")
                offset += len(chunk)
            yield decode(b"", True).replace("\x00", "")
        except UnicodeDecodeError as exc:
            # only a file that announces its encoding with a byte-order mark gets here: the mark is trusted
            raise ReadError(
                "bad_encoding",
                f"{part.label} starts with a {encoding} byte-order mark but is not valid {encoding} near "
                f"byte {offset + exc.start}; save it again as UTF-8.",
            ) from exc


def _looks_binary(text: str) -> bool:
    controls = len(text) - len(text.translate(_CONTROL_CHARS))
    return controls >= 4 and controls * 100 > len(text)


def _lines(chunks: Iterable[str], limit: int) -> Iterator[str]:
    # physical lines with their endings kept (\n, \r\n or a lone \r), as csv.reader expects them
    pending = ""
    for chunk in chunks:
        lines = io.StringIO(pending + chunk, newline="").readlines()
        # the last line may continue in the next chunk, and a final "\r" may be half of "\r\n"
        pending = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        for line in lines:
            if len(line) > limit:
                raise _LineTooLongError
            yield line
        if len(pending) > limit:
            raise _LineTooLongError
    if pending:
        yield pending


def _header_lines(lines: Iterator[str], limits: ReaderLimits, part: _Part) -> tuple[int, list[str]]:
    skipped = 0
    header: list[str] = []
    size = 0
    quoted = False
    try:
        for line in lines:
            if not header and not line.strip():
                skipped += 1
                continue
            header.append(line)
            size += len(line.encode("utf-8", errors="replace"))
            if size > limits.max_header_bytes:
                raise _LineTooLongError
            # a header may hold a quoted line break; it ends where its quotes balance
            quoted ^= line.count('"') % 2 == 1
            if not quoted:
                break
    except _LineTooLongError:
        raise ReadError(
            "header_too_large",
            f"The header row{part.where} is longer than {limits.max_header_bytes} bytes (or has an "
            "unmatched quote mark); check that the first line of the file is its header.",
            row=skipped + 1,
        ) from None
    if not header:
        raise ReadError("empty_file", f"{part.label} has no rows, only blank lines.")
    return skipped, header


def _sniff_delimiter(header: str, default: str) -> str:
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts.values())
    if counts[default] == best:
        return default
    return max(_DELIMITERS, key=counts.__getitem__)


def _text_records(
    reader: Reader, skipped: int, limits: ReaderLimits, part: _Part
) -> Iterator[tuple[int, list[str]]]:
    # numbers are the line where a record starts, as a text editor shows it (the header is line 1)
    start = skipped + reader.line_num + 1
    try:
        for record in reader:
            if "".join(record).strip():
                yield start, record
            start = skipped + reader.line_num + 1
    except csv.Error as exc:
        raise ReadError(
            "malformed_row", f"Line {start}{part.where} is not valid CSV: {exc}.", row=start
        ) from exc
    except _LineTooLongError:
        raise ReadError(
            "line_too_long",
            f"Line {start}{part.where} is longer than {limits.max_line_chars} characters; "
            "check that the rows are separated by line breaks.",
            row=start,
        ) from None


def _check_headers(raw: list[str], row: int, limits: ReaderLimits, part: _Part) -> list[str]:
    names = [name.strip() for name in raw]
    # a delimiter after the last name is a common export artefact, not an unnamed column
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ReadError("blank_header", f"The header row{part.where} has no column names.", row=row)
    if len(names) > limits.max_columns:
        raise ReadError(
            "too_many_columns",
            f"The header row{part.where} has {len(names)} columns; at most {limits.max_columns} are allowed.",
            row=row,
        )
    blanks = [str(index) for index, name in enumerate(names, 1) if not name]
    if blanks:
        raise ReadError(
            "blank_header",
            f"Column {', '.join(blanks)} of the header row{part.where} has no name; "
            "name every column or delete the empty ones.",
            row=row,
        )
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for index, name in enumerate(names, 1):
        key = name.casefold()
        if key in seen:
            duplicates.append(f'"{name}" (columns {seen[key]} and {index})')
        else:
            seen[key] = index
    if duplicates:
        raise ReadError(
            "duplicate_headers",
            f"The header row{part.where} repeats column names (ignoring case and spaces): "
            f"{', '.join(duplicates)}; rename or remove the repeats.",
            row=row,
        )
    return names


def _check_same_headers(expected: list[str], found: list[str], first: _Part, part: _Part) -> None:
    folded = [name.casefold() for name in found]
    if [name.casefold() for name in expected] == folded:
        return
    if len(found) != len(expected):
        detail = f"has {len(found)} columns where {first.member} has {len(expected)}"
    else:
        index = next(i for i, name in enumerate(expected) if name.casefold() != folded[i])
        detail = f'has "{found[index]}" in column {index + 1} where "{first.member}" has "{expected[index]}"'
    raise ReadError(
        "mixed_headers_in_zip",
        f'Every file in a ZIP upload must have the same header row, but "{part.member}" {detail}.',
    )


def _open_sheet(part: _Part, path: Path, limits: ReaderLimits, stack: ExitStack) -> _Table:
    with path.open("rb") as stream:
        head = stream.read(8)
    if not head:
        raise ReadError("empty_file", f"{part.label} is empty.")
    if not head.startswith(_ZIP_MAGIC if part.kind == "xlsx" else (_OLE_MAGIC,)):
        raise ReadError(
            "wrong_file_type",
            f"{part.label} is named .{part.kind} but contains {_describe(head)}, not an .{part.kind} "
            "workbook; save it from Excel again or give it the extension that matches its contents.",
        )
    if part.kind == "xlsx":
        # an .xlsx is itself a ZIP archive and could be a bomb
        try:
            with zipfile.ZipFile(path) as container:
                _check_expansion(container.infolist(), limits, f"{part.label} (an .xlsx workbook)")
        except zipfile.BadZipFile as exc:
            raise _not_a_spreadsheet(part, exc) from exc
    try:
        # calamine loads the whole sheet; Excel's own 1,048,576-row limit bounds what that costs
        workbook = stack.enter_context(python_calamine.CalamineWorkbook.from_path(path))
        sheet = workbook.get_sheet_by_name(_first_visible_sheet(workbook, part))
    except python_calamine.PasswordError as exc:
        raise ReadError(
            "encrypted_file", f"{part.label} is protected by a password; save it without one."
        ) from exc
    except python_calamine.CalamineError as exc:
        raise _not_a_spreadsheet(part, exc) from exc
    if sheet.start is None:
        raise ReadError("empty_file", f'{part.label} has nothing in its sheet "{sheet.name}".')
    # iter_rows pads the rows above the used range with empty ones, so counting from 1 gives Excel's row
    numbered = (
        (index, [_cell_text(value) for value in values]) for index, values in enumerate(sheet.iter_rows(), 1)
    )
    records = ((number, record) for number, record in numbered if "".join(record).strip())
    header = next(records, None)
    if header is None:
        raise ReadError("empty_file", f'{part.label} has only empty cells in its sheet "{sheet.name}".')
    number, raw = header
    if len("\t".join(raw).encode("utf-8", errors="replace")) > limits.max_header_bytes:
        raise ReadError(
            "header_too_large",
            f"The header row{part.where} is longer than {limits.max_header_bytes} bytes.",
            row=number,
        )
    return _Table(_check_headers(raw, number, limits, part), None, None, "Row", records)


def _not_a_spreadsheet(part: _Part, exc: Exception) -> ReadError:
    return ReadError(
        "not_a_spreadsheet",
        f"{part.label} could not be read as an .{part.kind} workbook ({exc}); "
        "open it in Excel and save it again.",
    )


def _first_visible_sheet(workbook: python_calamine.CalamineWorkbook, part: _Part) -> str:
    for sheet in workbook.sheets_metadata:
        if (
            sheet.visible == python_calamine.SheetVisibleEnum.Visible
            and sheet.typ == python_calamine.SheetTypeEnum.WorkSheet
        ):
            return sheet.name
    raise ReadError("no_visible_sheet", f"{part.label} has no visible worksheet; unhide the data sheet.")


def _cell_text(value: int | float | str | bool | time | date | datetime | timedelta) -> str:
    # Text cells are kept verbatim (leading zeros survive); whole numbers lose Excel's ".0" ("2134"),
    # other numbers use the shortest exact form ("3.5"); dates become ISO "YYYY-MM-DD", with " HH:MM:SS"
    # only when a time of day is set (the date cleansing drops text after the first space).
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    # a duration, shown as Excel's [h]:mm:ss
    seconds = int(value.total_seconds())
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
