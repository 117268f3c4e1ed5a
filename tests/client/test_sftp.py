"""`sync --sftp` against a real SFTP server (asyncssh, on 127.0.0.1, chrooted to a temporary folder)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.support.client import (
    StoredExport,
    assert_no_secrets,
    client_env,
    files_under,
    run_client,
    stored_exports,
)
from tests.support.exports import PRODUCT_KEYS
from tests.support.server import LiveServer

SFTP_USER = "slate"
SFTP_PASSWORD = "sftp-secret-Zq7!"


@dataclass
class SftpServer:
    """An SFTP server in a background event loop; what it holds is under `root`."""

    root: Path
    host_key: asyncssh.SSHKey
    logins: list[tuple[str, bool]] = field(default_factory=list)
    port: int = 0

    def known_hosts_line(self) -> str:
        """The known_hosts entry of this server (non-standard port: `[host]:port`)."""
        public = self.host_key.export_public_key("openssh").decode().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n"

    def url(self, directory: str = "/incoming/{product}") -> str:
        return f"sftp://{SFTP_USER}@127.0.0.1:{self.port}{directory}"


def _server_class(server: SftpServer) -> type[asyncssh.SSHServer]:
    class PasswordServer(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            accepted = username == SFTP_USER and password == SFTP_PASSWORD
            server.logins.append((username, accepted))
            return accepted

    return PasswordServer


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[SftpServer]:
    root = tmp_path / "sftp-root"
    root.mkdir()
    server = SftpServer(root=root, host_key=asyncssh.generate_private_key("ssh-ed25519"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sftp-server", daemon=True)
    thread.start()

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[server.host_key],
            server_factory=_server_class(server),
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=os.fsencode(root)),
            allow_scp=False,
        )

    acceptor = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    server.port = acceptor.get_port()

    async def stop() -> None:
        acceptor.close()
        await acceptor.wait_closed()

    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _incoming(sftp: SftpServer, products: tuple[str, ...] = PRODUCT_KEYS) -> None:
    for product in products:
        (sftp.root / "incoming" / product).mkdir(parents=True)


def _sync(server: LiveServer, dest: Path, sftp: SftpServer, known_hosts: Path) -> tuple[int, dict[str, Any]]:
    env = client_env(server, DATALAB_SFTP_PASSWORD=SFTP_PASSWORD)
    result = run_client(
        env, "sync", str(dest), "--sftp", sftp.url(), "--sftp-known-hosts", str(known_hosts), "--json"
    )
    assert_no_secrets(server, result.stdout, result.stderr)
    assert SFTP_PASSWORD not in result.stdout + result.stderr
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def _pushed(exports: dict[str, StoredExport]) -> list[str]:
    return sorted(f"incoming/{e.product_key}/{e.file_name}" for e in exports.values())


def test_sync_pushes_every_file_once(api: LiveServer, sftp: SftpServer, tmp_path: Path) -> None:
    _incoming(sftp)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp.known_hosts_line())
    dest = tmp_path / "dest"
    exports = stored_exports(api)

    code, report = _sync(api, dest, sftp, known_hosts)

    assert code == 0, report
    assert report["failures"] == []
    assert len(report["downloaded"]) == 16
    assert sorted(item["file"] for item in report["hooks"]) == sorted(report["downloaded"])
    assert {item["hook"] for item in report["hooks"]} == {"sftp"}
    assert files_under(sftp.root) == _pushed(exports)  # no partial file left behind
    for export in exports.values():
        relative = f"{export.product_key}/{export.file_name}"
        pushed = (sftp.root / "incoming" / relative).read_bytes()
        assert pushed == (dest / relative).read_bytes() == export.content
    assert sftp.logins == [(SFTP_USER, True)] * 16
    state = json.loads((dest / ".datalab-sync.json").read_text())
    assert all(set(entry["hooks"]) == {"sftp"} for entry in state["files"].values())
    modified = {path: path.stat().st_mtime_ns for path in sftp.root.rglob("*.csv")}

    code, report = _sync(api, dest, sftp, known_hosts)

    assert (code, report) == (0, {"downloaded": [], "hooks": [], "failures": []})
    assert sftp.logins == [(SFTP_USER, True)] * 16  # not even a connection
    assert {path: path.stat().st_mtime_ns for path in sftp.root.rglob("*.csv")} == modified


def test_an_unknown_host_key_pushes_nothing(api: LiveServer, sftp: SftpServer, tmp_path: Path) -> None:
    _incoming(sftp)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    dest = tmp_path / "dest"

    code, report = _sync(api, dest, sftp, known_hosts)

    assert code == 1
    assert len(report["downloaded"]) == 16
    assert report["hooks"] == []
    assert len(report["failures"]) == 16
    assert all(
        failure.startswith("sftp of ") and f"cannot connect to 127.0.0.1:{sftp.port}" in failure
        for failure in report["failures"]
    )
    assert files_under(sftp.root) == []
    assert sftp.logins == []  # the password was never sent


def test_a_host_key_that_changed_pushes_nothing(api: LiveServer, sftp: SftpServer, tmp_path: Path) -> None:
    _incoming(sftp)
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sftp.port} {impostor[0]} {impostor[1]}\n")

    code, report = _sync(api, tmp_path / "dest", sftp, known_hosts)

    assert code == 1
    assert report["hooks"] == []
    assert len(report["failures"]) == 16
    assert files_under(sftp.root) == []
    assert sftp.logins == []


def test_a_missing_remote_folder_fails_the_push_until_it_exists(
    api: LiveServer, sftp: SftpServer, tmp_path: Path
) -> None:
    """The hook does not create remote folders: a file whose folder is missing fails, and is pushed on the
    run after the folder was made."""
    _incoming(sftp, tuple(key for key in PRODUCT_KEYS if key != "aos"))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp.known_hosts_line())
    dest = tmp_path / "dest"
    exports = stored_exports(api)

    code, report = _sync(api, dest, sftp, known_hosts)

    assert code == 1
    assert len(report["hooks"]) == 14
    assert len(report["failures"]) == 2
    assert all(f.startswith("sftp of aos/") and "/incoming/aos/" in f for f in report["failures"])
    assert files_under(sftp.root) == [
        path for path in _pushed(exports) if not path.startswith("incoming/aos/")
    ]

    (sftp.root / "incoming" / "aos").mkdir()
    code, report = _sync(api, dest, sftp, known_hosts)

    assert code == 0, report
    assert report["downloaded"] == []
    assert sorted(Path(item["file"]).parent.name for item in report["hooks"]) == ["aos", "aos"]
    assert files_under(sftp.root) == _pushed(exports)


def test_a_wrong_sftp_password_exits_1_and_pushes_nothing(
    api: LiveServer, sftp: SftpServer, tmp_path: Path
) -> None:
    _incoming(sftp)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp.known_hosts_line())
    env = client_env(api, DATALAB_SFTP_PASSWORD="wrong")
    result = run_client(
        env, "sync", str(tmp_path / "dest"), "--product", "aos", "--sftp", sftp.url(),
        "--sftp-known-hosts", str(known_hosts), "--json",
    )  # fmt: skip

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert len(report["failures"]) == 2
    assert files_under(sftp.root) == []
    assert sftp.logins and all(login == (SFTP_USER, False) for login in sftp.logins)
