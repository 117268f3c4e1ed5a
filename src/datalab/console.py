"""Output shared by every `datalab` command: JSON or human text on stdout, errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error to stderr and return the exit to raise (2: bad usage or configuration)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


def emit(payload: Any, as_json: bool, human: Callable[[], str]) -> None:
    """Print the payload as JSON or as the human text."""
    typer.echo(json.dumps(payload, indent=2, default=str) if as_json else human())
