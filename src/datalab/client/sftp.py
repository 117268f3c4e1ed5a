"""Pushing downloaded files to an SFTP folder (e.g. Slate's `/incoming/...`), as the sync's hook.

A file is written under a temporary name and renamed once its size is checked, so the consumer on the
other side never picks up half a file. Needs the `sftp` extra (paramiko).
"""

from __future__ import annotations

import posixpath
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from datalab.client.errors import ConfigurationError
from datalab.client.sync import HookFailed


@dataclass
class SftpTarget:
    """Where files go: `sftp://user@host[:port]/remote/dir`, `{product}` in the path for the productKey."""

    host: str
    port: int
    username: str
    directory: str

    @classmethod
    def parse(cls, url: str) -> SftpTarget:
        """Read an sftp:// URL (a password in it is refused: use the environment or a key)."""
        parts = urlsplit(url)
        if parts.scheme != "sftp" or not parts.hostname or not parts.username:
            raise ConfigurationError(f"the SFTP target must look like sftp://user@host/path, not {url!r}")
        if parts.password:
            raise ConfigurationError("put the SFTP password in DATALAB_SFTP_PASSWORD, not in the URL")
        return cls(
            host=parts.hostname,
            port=parts.port or 22,
            username=unquote(parts.username),
            directory=unquote(parts.path) or ".",
        )


class SftpHook:
    """Upload each file into the target folder, then rename it into place."""

    name = "sftp"

    def __init__(
        self,
        target: SftpTarget,
        *,
        password: str | None = None,
        key_file: Path | None = None,
        known_hosts: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        try:
            import paramiko  # noqa: PLC0415  (only SFTP users need it)
        except ImportError:
            raise ConfigurationError("SFTP needs paramiko: pip install 'datalab[sftp]'") from None
        self.paramiko = paramiko
        self.target = target
        self.password = password
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.timeout = timeout

    def _connect(self) -> Any:
        client = self.paramiko.SSHClient()
        if self.known_hosts is not None:
            client.load_host_keys(str(self.known_hosts))
        else:
            client.load_system_host_keys()
        # An unknown server is refused: pushing admissions data to an impostor is worse than not pushing.
        client.set_missing_host_key_policy(self.paramiko.RejectPolicy())
        sock = socket.create_connection((self.target.host, self.target.port), timeout=self.timeout)
        # The handshake is a series of small messages, each answered before the next: with Nagle's algorithm
        # on (paramiko leaves it on), several wait for a delayed acknowledgement, 40 ms each on Linux, ten
        # times the rest of a connection's set-up on a fast link (and there is a connection per file).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(
                self.target.host,
                port=self.target.port,
                username=self.target.username,
                password=self.password,
                key_filename=str(self.key_file) if self.key_file else None,
                timeout=self.timeout,
                allow_agent=self.key_file is None and self.password is None,
                look_for_keys=self.key_file is None and self.password is None,
                sock=sock,
            )
        except BaseException:
            client.close()
            sock.close()
            raise
        return client

    def run(self, path: Path, export: dict[str, Any]) -> None:
        """Push one file; any failure raises HookFailed and leaves no file under the final name."""
        directory = self.target.directory.replace("{product}", str(export.get("productKey", "")))
        final = posixpath.join(directory, path.name)
        partial = posixpath.join(directory, f".{path.name}.part")
        try:
            client = self._connect()
        except (OSError, self.paramiko.SSHException) as exc:
            raise HookFailed(f"cannot connect to {self.target.host}:{self.target.port}: {exc}") from exc
        try:
            sftp = client.open_sftp()
            sftp.put(str(path), partial, confirm=True)
            if sftp.stat(partial).st_size != path.stat().st_size:
                sftp.remove(partial)
                raise HookFailed(f"{final}: the size on the server does not match")
            sftp.posix_rename(partial, final)
        except (OSError, self.paramiko.SSHException) as exc:
            raise HookFailed(f"pushing {path.name} to {final} failed: {exc}") from exc
        finally:
            client.close()
