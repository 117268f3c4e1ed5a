"""Reading request bodies the way real clients send them: JSON whatever the Content-Type says.

Every body is bounded before it gets here (see datalab.limits); this module bounds what is inside:
the text must be UTF-8, the JSON at most MAX_JSON_DEPTH levels deep with integers of at most
MAX_INTEGER_DIGITS digits, and no string (key or value) may hold a lone surrogate, which no database
or file can store.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datalab.errors import bad_request

MAX_JSON_DEPTH = 32
MAX_INTEGER_DIGITS = 32


def decode_text(raw: bytes) -> str:
    """A body's text; a 400 when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"The request body is not UTF-8 text (byte {exc.start} is not valid)", code="invalid_encoding"
        ) from None


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"a number of more than {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def check_text(value: str, *, where: str) -> str:
    """The string, unless it holds a lone surrogate (a 400 naming where)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(
            f"{where} is not valid Unicode text (a lone surrogate)", code="invalid_text"
        ) from None
    return value


def _check_tree(parsed: Any) -> None:
    """Depth and text checks over a parsed document, without recursion."""
    stack: list[tuple[Any, int]] = [(parsed, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, where="A string of the request body")
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise bad_request(
                f"The request body is nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_body"
            )
        if isinstance(node, dict):
            for key, value in node.items():
                check_text(key, where="A field name of the request body")
                stack.append((value, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in node)


def parse_json(raw: bytes | str) -> Any:
    """Any JSON document within the limits above; a 400 saying what is wrong otherwise."""
    text = decode_text(raw) if isinstance(raw, bytes) else raw
    try:
        parsed = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            code="invalid_json",
        ) from None
    except RecursionError:
        raise bad_request(
            f"The request body is nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_body"
        ) from None
    except ValueError as exc:
        raise bad_request(f"The request body is not acceptable JSON: {exc}", code="invalid_json") from None
    _check_tree(parsed)
    return parsed


def parse_json_object(raw: bytes | str, *, wanted: str) -> dict[str, Any]:
    """The JSON object in a request body; a 400 saying what is wrong (empty, not JSON, not an object)."""
    text = decode_text(raw) if isinstance(raw, bytes) else raw
    if not text.strip():
        raise bad_request(f"The request body is empty: send a JSON object with {wanted}", code="invalid_body")
    parsed = parse_json(text)
    if not isinstance(parsed, dict):
        raise bad_request("The request body must be a JSON object", code="invalid_body")
    return parsed


@contextmanager
def spooled_body(body: bytes, *, temp_dir: Path, name: str) -> Iterator[Path]:
    """A request body that is a file, as a temporary file of this name (what errors about it say) for
    services that read files; removed afterwards."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=temp_dir) as work:
        path = Path(work) / name
        path.write_bytes(body)
        yield path
