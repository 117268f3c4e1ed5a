"""Helpers for the client tests: the stored exports, the client's environment, CLI runs and secret checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from datalab.accounts.models import Organization
from datalab.exports.models import Export
from tests.support.server import Deployment, LiveServer

EXPORTS_BUCKET = "datalab-exports"
SYNC_STATE = ".datalab-sync.json"
# The enrollment layout's required fields, as the column names of a file that maps itself.
GOOD_ENROLLMENT_CSV = b"UniqueID,EntryYear,EntryTerm,Applied\r\n00123,2026,Fall,2025-11-02\r\n"
# A file no field of the layout maps to: an API upload of it ends in `failure`.
BROKEN_ENROLLMENT_CSV = b"a,b\r\n1,2\r\n"
# Query parameters of a signed URL that must never be printed or logged.
_SIGNED_URL_SECRETS = re.compile(r"X-Amz-(Signature|Security-Token|Credential)=", re.IGNORECASE)


@dataclass(frozen=True)
class StoredExport:
    """An export row of the server's database and where its bytes are stored."""

    uid: str
    product_key: str
    file_name: str
    status: str
    size: int
    sha256: str
    object_path: Path

    @property
    def content(self) -> bytes:
        """The stored bytes (the export as the server would send it)."""
        return self.object_path.read_bytes()


def stored_exports(server: Deployment, organization_uid: str | None = None) -> dict[str, StoredExport]:
    """The exports of an organization (the demo's by default) as stored, by uid."""
    assert server.demo is not None
    wanted = organization_uid or server.demo.organization_uid
    with server.db() as db:
        rows = db.scalars(
            select(Export)
            .join(Organization, Export.organization_id == Organization.id)
            .where(Organization.uid == wanted)
        ).all()
        return {
            row.uid: StoredExport(
                uid=row.uid,
                product_key=row.product_key,
                file_name=row.file_name,
                status=row.status,
                size=row.size_bytes,
                sha256=row.sha256,
                object_path=server.home / "objects" / EXPORTS_BUCKET / row.object_key,
            )
            for row in rows
        }


def files_under(directory: Path) -> list[str]:
    """Every file below a directory (hidden ones too), as sorted relative POSIX paths."""
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file())


def client_env(server: LiveServer, **changes: str | None) -> dict[str, str]:
    """The environment of a client command: the demo account's ENCOURA_* variables, no DATALAB_* settings.

    A change to None removes the variable.
    """
    assert server.demo is not None
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ENCOURA_", "DATALAB_", "PYTHONWARNINGS"))
    }
    env.update(
        {
            "ENCOURA_BASE_URL": server.base_url,
            "ENCOURA_API_KEY": server.demo.api_key,
            "ENCOURA_USERNAME": server.demo.user_name,
            "ENCOURA_PASSWORD": server.demo.password,
            "ENCOURA_ORGANIZATION_UID": server.demo.organization_uid,
            "PYTHONWARNINGS": "error",
        }
    )
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def datalab_command(*args: str, log_level: str | None = None) -> list[str]:
    """The argv of `python -m datalab <args>`; with log_level, the same command with logging configured."""
    if log_level is None:
        return [sys.executable, "-m", "datalab", *args]
    program = (
        "import logging, sys\n"
        f"logging.basicConfig(level=logging.{log_level}, stream=sys.stderr,"
        " format='LOG %(name)s %(message)s')\n"
        "from datalab.cli import main\n"
        "main()\n"
    )
    return [sys.executable, "-c", program, *args]


def run_client(
    env: Mapping[str, str], *args: str, log_level: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a client command to its end; never raises on a non-zero exit."""
    return subprocess.run(
        datalab_command(*args, log_level=log_level),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_no_secrets(server: LiveServer, *texts: str) -> None:
    """No password, API key or signed-URL credential in what a command printed or logged."""
    assert server.demo is not None
    for text in texts:
        assert server.demo.password not in text
        assert server.demo.api_key not in text
        assert not _SIGNED_URL_SECRETS.search(text), text
