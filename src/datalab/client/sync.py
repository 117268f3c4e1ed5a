"""`sync`: fetch every export not fetched before into DEST/<productKey>/, then run the post-download hooks.

The state file `DEST/.datalab-sync.json` records a file only after it is completely written (and each
hook only after it succeeded), and is replaced atomically, so a run stopped at any point loses nothing:
the next run fetches what is missing — including exports the service already counts as delivered — and
finishes the hooks that did not run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from datalab.client.core import Client, Progress
from datalab.client.errors import DataLabError
from datalab.client.models import Export

log = logging.getLogger("datalab.client.sync")

STATE_FILE = ".datalab-sync.json"
STATE_VERSION = 1


class HookFailed(DataLabError):
    """A post-download hook did not succeed; the file stays pending for the next run."""


class Hook(Protocol):
    """Something done with each downloaded file, after which the file counts as handled."""

    name: str

    def run(self, path: Path, export: dict[str, Any]) -> None: ...


@dataclass
class ExecHook:
    """Run a command per file: `{}` in it is replaced by the path, else the path is appended."""

    command: str
    timeout: float = 3600
    name: str = "exec"

    def run(self, path: Path, export: dict[str, Any]) -> None:
        """Run the command; a non-zero exit is a failure."""
        words = shlex.split(self.command)
        arguments = (
            [word.replace("{}", str(path)) for word in words] if "{}" in self.command else [*words, str(path)]
        )
        env = {
            **os.environ,
            "DATALAB_FILE": str(path),
            "DATALAB_EXPORT_UID": str(export.get("uid", "")),
            "DATALAB_PRODUCT_KEY": str(export.get("productKey", "")),
        }
        try:
            result = subprocess.run(
                arguments, env=env, timeout=self.timeout, check=False, capture_output=True
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HookFailed(f"{arguments[0]}: {exc}") from exc
        if result.returncode != 0:
            output = (result.stderr or result.stdout).decode(errors="replace").strip()[-500:]
            raise HookFailed(f"{arguments[0]} exited with {result.returncode}: {output}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class SyncState:
    """What earlier runs fetched into a destination, and which hooks ran for each file."""

    path: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, dest: Path) -> SyncState:
        """Read the state file of dest (an empty state when there is none)."""
        path = dest / STATE_FILE
        if not path.exists():
            return cls(path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataLabError(
                f"{path} is not a readable sync state ({exc}); move it away to start over"
            ) from exc
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise DataLabError(f"{path} has an unknown format; move it away to start over")
        return cls(path=path, files=dict(data.get("files", {})))

    def save(self) -> None:
        """Replace the state file atomically (write, fsync, rename)."""
        temp = self.path.with_name(self.path.name + ".tmp")
        with temp.open("w", encoding="utf-8") as handle:
            json.dump({"version": STATE_VERSION, "files": self.files}, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(self.path)
        with contextlib.suppress(OSError):  # directories cannot be opened for fsync on every platform
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def record_download(self, export: Export, path: Path, dest: Path) -> None:
        """Remember a completely written file."""
        self.files[export.uid] = {
            "productKey": export.product_key,
            "path": path.relative_to(dest).as_posix(),
            "size": path.stat().st_size,
            "downloadedAt": _now(),
            "hooks": {},
        }
        self.save()

    def record_hook(self, uid: str, hook: str) -> None:
        """Remember that a hook succeeded for a file."""
        self.files[uid].setdefault("hooks", {})[hook] = _now()
        self.save()


@dataclass
class SyncReport:
    """What a run did."""

    downloaded: list[Path] = field(default_factory=list)
    hooked: list[tuple[Path, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "downloaded": [str(path) for path in self.downloaded],
            "hooks": [{"file": str(path), "hook": hook} for path, hook in self.hooked],
            "failures": self.failures,
        }


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Keep two syncs from working on one destination at once (where the OS offers file locks)."""
    try:
        import fcntl  # noqa: PLC0415  (POSIX only)
    except ImportError:
        yield
        return
    with (dest / ".datalab-sync.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataLabError(f"another sync is running into {dest}") from None
        yield


def _candidates(client: Client, products: Sequence[str]) -> list[Export]:
    keys: Sequence[str | None] = list(products) or [None]
    found: dict[str, Export] = {}
    for status in ("NotDelivered", "Delivered"):
        for key in keys:
            for export in client.exports(status=status, product_key=key):
                found.setdefault(export.uid, export)
    return sorted(found.values(), key=lambda e: (e.created_at is None, e.created_at or datetime.min, e.uid))


def sync(
    *,
    client: Client,
    dest: Path,
    products: Sequence[str] = (),
    hooks: Sequence[Hook] = (),
    progress: Callable[[Export], Progress | None] | None = None,
) -> SyncReport:
    """Fetch every export the state does not have, then run every hook not yet done, in order."""
    dest.mkdir(parents=True, exist_ok=True)
    report = SyncReport()
    with _locked(dest):
        state = SyncState.load(dest)
        for export in _candidates(client, products):
            if export.uid in state.files:
                continue
            safe_key = export.product_key.replace("/", "_").replace("\\", "_") or "unknown"
            try:
                path = client.download(
                    export,
                    dest / safe_key,
                    on_conflict="rename",
                    progress=progress(export) if progress else None,
                )
            except DataLabError as exc:
                report.failures.append(f"export {export.uid} ({export.product_key}): {exc}")
                log.error("could not download export %s: %s", export.uid, exc)
                continue
            state.record_download(export, path, dest)
            report.downloaded.append(path)
            log.info("downloaded %s", path)
        for uid, entry in state.files.items():
            path = dest / entry["path"]
            for hook in hooks:
                if hook.name in entry.get("hooks", {}):
                    continue
                try:
                    hook.run(path, {"uid": uid, "productKey": entry.get("productKey", "")})
                except DataLabError as exc:
                    report.failures.append(f"{hook.name} of {entry['path']}: {exc}")
                    log.error("%s of %s failed: %s", hook.name, entry["path"], exc)
                    # Later hooks of this file wait for this one: they run on the next sync.
                    break
                state.record_hook(uid, hook.name)
                report.hooked.append((path, hook.name))
    return report
