"""Reading request bodies the way real clients send them: JSON whatever the Content-Type says."""

from __future__ import annotations

import json
from typing import Any

from datalab.errors import bad_request


def parse_json_object(text: str, *, wanted: str) -> dict[str, Any]:
    """The JSON object in a request body; a 400 saying what is wrong (empty, not JSON, not an object)."""
    if not text.strip():
        raise bad_request(f"The request body is empty: send a JSON object with {wanted}", code="invalid_body")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            code="invalid_json",
        ) from None
    if not isinstance(parsed, dict):
        raise bad_request("The request body must be a JSON object", code="invalid_body")
    return parsed
