"""The client command line against a real server: sync (resumable, with hooks), exit codes and uploads."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from datalab.uploads.models import Upload
from tests.conftest import ServerFactory
from tests.support.client import (
    BROKEN_ENROLLMENT_CSV,
    GOOD_ENROLLMENT_CSV,
    SYNC_STATE,
    StoredExport,
    assert_no_secrets,
    client_env,
    datalab_command,
    files_under,
    run_client,
    stored_exports,
)
from tests.support.factories import add_export
from tests.support.server import LiveServer, free_port
from tests.support.uploads import sha256_of

SYNC_FILES = [SYNC_STATE, ".datalab-sync.lock"]
BIG_EXPORT_BYTES = 200 * 1024 * 1024


def _sync(server: LiveServer, dest: Path, *args: str, **env: str | None) -> tuple[int, dict[str, Any]]:
    """Run `datalab sync DEST --json`; its exit code and report (checked for secrets)."""
    result = run_client(client_env(server, **env), "sync", str(dest), *args, "--json")
    assert_no_secrets(server, result.stdout, result.stderr)
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def _layout(exports: dict[str, StoredExport], dest: Path) -> dict[str, Path]:
    """Where sync puts each export: DEST/<productKey>/<file name>."""
    return {uid: dest / export.product_key / export.file_name for uid, export in exports.items()}


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a key is repeated: {names}"
    return dict(pairs)


def _state(dest: Path) -> dict[str, Any]:
    """The files of the sync state (each uid once: a repeated key would fail)."""
    text = (dest / SYNC_STATE).read_text(encoding="utf-8")
    state: dict[str, Any] = json.loads(text, object_pairs_hook=_no_repeats)
    assert state["version"] == 1
    files: dict[str, Any] = state["files"]
    return files


def _assert_complete(exports: dict[str, StoredExport], dest: Path) -> None:
    """Every export is in DEST once, with its exact bytes, and nothing else is (no partial file)."""
    layout = _layout(exports, dest)
    assert files_under(dest) == sorted(
        [path.relative_to(dest).as_posix() for path in layout.values()] + SYNC_FILES
    )
    for uid, path in layout.items():
        assert path.stat().st_size == exports[uid].size
        assert sha256_of(path) == exports[uid].sha256
    state = _state(dest)
    assert set(state) == set(exports)
    for uid, entry in state.items():
        assert entry["path"] == layout[uid].relative_to(dest).as_posix()
        assert entry["productKey"] == exports[uid].product_key
        assert entry["size"] == exports[uid].size


def test_sync_fetches_every_export_once(api: LiveServer, tmp_path: Path) -> None:
    dest = tmp_path / "datalab"
    exports = stored_exports(api)
    assert len(exports) == 16

    code, report = _sync(api, dest)

    assert code == 0
    assert report["failures"] == []
    assert report["hooks"] == []
    assert sorted(report["downloaded"]) == sorted(str(path) for path in _layout(exports, dest).values())
    _assert_complete(exports, dest)
    for uid, path in _layout(exports, dest).items():
        assert path.read_bytes() == exports[uid].content
    modified = {path: path.stat().st_mtime_ns for path in dest.rglob("*.csv")}

    code, report = _sync(api, dest)

    assert (code, report) == (0, {"downloaded": [], "hooks": [], "failures": []})
    assert {path: path.stat().st_mtime_ns for path in dest.rglob("*.csv")} == modified


def test_sync_of_chosen_products(api: LiveServer, tmp_path: Path) -> None:
    chosen = {uid: e for uid, e in stored_exports(api).items() if e.product_key in {"aos", "score-reporter"}}

    code, report = _sync(api, tmp_path, "--product", "aos", "--product", "score-reporter")

    assert code == 0
    assert sorted(report["downloaded"]) == sorted(str(path) for path in _layout(chosen, tmp_path).values())
    _assert_complete(chosen, tmp_path)


def test_the_exec_hook_runs_once_per_file(api: LiveServer, tmp_path: Path) -> None:
    dest, log = tmp_path / "dest", tmp_path / "hook.log"
    hook = f"sh -c 'echo \"$1 $DATALAB_PRODUCT_KEY $DATALAB_EXPORT_UID\" >> {log}' hook"
    layout = _layout(stored_exports(api), dest)
    expected = sorted(f"{path} {path.parent.name} {uid}" for uid, path in layout.items())

    code, report = _sync(api, dest, "--exec", hook)

    assert code == 0
    assert sorted(log.read_text().splitlines()) == expected
    assert sorted(item["file"] for item in report["hooks"]) == sorted(map(str, layout.values()))
    assert {item["hook"] for item in report["hooks"]} == {"exec"}
    assert all(set(entry["hooks"]) == {"exec"} for entry in _state(dest).values())

    code, report = _sync(api, dest, "--exec", hook)

    assert (code, report) == (0, {"downloaded": [], "hooks": [], "failures": []})
    assert sorted(log.read_text().splitlines()) == expected


def test_a_failing_exec_hook_exits_1_and_is_retried_on_the_next_run(api: LiveServer, tmp_path: Path) -> None:
    dest, log, ready = tmp_path / "dest", tmp_path / "hook.log", tmp_path / "ready"
    hook = f"sh -c 'test -e {ready} || {{ echo not ready >&2; exit 3; }}; echo \"$1\" >> {log}' hook"
    layout = _layout(stored_exports(api), dest)

    code, report = _sync(api, dest, "--exec", hook)

    assert code == 1
    assert len(report["downloaded"]) == 16
    assert report["hooks"] == []
    assert len(report["failures"]) == 16
    assert all(f.startswith("exec of ") and "exited with 3: not ready" in f for f in report["failures"])
    assert not log.exists()
    assert all(entry["hooks"] == {} for entry in _state(dest).values())

    ready.touch()
    code, report = _sync(api, dest, "--exec", hook)

    assert code == 0
    assert report["downloaded"] == []
    assert report["failures"] == []
    assert sorted(log.read_text().splitlines()) == sorted(map(str, layout.values()))

    code, report = _sync(api, dest, "--exec", hook)
    assert (code, report) == (0, {"downloaded": [], "hooks": [], "failures": []})
    assert len(log.read_text().splitlines()) == 16


def test_log_lines_carry_no_secret(api: LiveServer, tmp_path: Path) -> None:
    env = client_env(api)
    existing = next(e for e in stored_exports(api).values() if e.product_key == "inquiry")
    (tmp_path / "inquiry").mkdir()
    (tmp_path / "inquiry" / existing.file_name).write_text("a file of ours with the same name\n")

    result = run_client(env, "sync", str(tmp_path), "--product", "inquiry", "--json", log_level="DEBUG")

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sum(line.startswith("LOG datalab.client.sync downloaded") for line in lines) == 2
    assert any("saving as" in line for line in lines)  # the name conflict was logged
    assert_no_secrets(api, result.stdout, result.stderr)


# --- a sync killed half-way through a download ----------------------------------------------------------


def _write_big_csv(path: Path, size: int) -> None:
    # Rows of about 1 kB: the file's size is what the test needs, and reading (the publication counts
    # the records) and writing cost per row.
    row = '{:010d},Firstname,O\'Lastname,"He said ""hi"", twice",01234,{:01000d}\r\n'
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("ID,FIRSTNAME,LASTNAME,NOTE,POSTALCODE,PADDING\r\n")
        written, index = 0, 0
        while written < size:
            block = "".join(row.format(index + n, index + n) for n in range(1_000))
            out.write(block)
            written += len(block)
            index += 1_000


@pytest.fixture(scope="module")
def big(make_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> tuple[LiveServer, str]:
    """A server whose newest export is about 200 MB (so sync fetches it last and for a while); its uid."""
    server = make_server()
    source = tmp_path_factory.mktemp("big") / "prospects.csv"
    _write_big_csv(source, BIG_EXPORT_BYTES)
    uid = add_export(server, source, product="prospect", order_name="Big list")
    source.unlink()
    return server, uid


def test_a_sync_killed_mid_download_completes_on_the_next_run(
    big: tuple[LiveServer, str], tmp_path: Path
) -> None:
    server, big_uid = big
    exports = stored_exports(server)
    assert exports[big_uid].size >= BIG_EXPORT_BYTES
    dest = tmp_path / "dest"
    big_target = _layout(exports, dest)[big_uid]
    partial = big_target.with_name(f".{big_target.name}.{big_uid[:8]}.part")

    process = subprocess.Popen(
        datalab_command("sync", str(dest), "--json"),
        env=client_env(server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and partial.stat().st_size > 0):
            assert process.poll() is None, "sync ended before it was caught mid-download"
            assert time.monotonic() < deadline, "sync never started the big download"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL

    # Killed: the big file is partial, under its temporary name only, and not in the state.
    assert 0 < partial.stat().st_size < exports[big_uid].size
    assert not big_target.exists()
    assert set(_state(dest)) == set(exports) - {big_uid}

    code, report = _sync(server, dest)

    assert code == 0
    assert report == {"downloaded": [str(big_target)], "hooks": [], "failures": []}
    _assert_complete(exports, dest)
    assert not list(dest.rglob("*.part"))


# --- exit codes -----------------------------------------------------------------------------------------


def test_a_wrong_password_exits_3(api: LiveServer, tmp_path: Path) -> None:
    env = client_env(api, ENCOURA_PASSWORD="not-the-password-at-all")
    result = run_client(env, "sync", str(tmp_path / "dest"), "--json")
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith("error: refused: ")
    assert "not-the-password-at-all" not in result.stdout + result.stderr
    assert_no_secrets(api, result.stdout, result.stderr)
    assert not (tmp_path / "dest" / SYNC_STATE).exists()


def test_an_unreachable_server_is_retried_as_configured_then_exits_4(api: LiveServer, tmp_path: Path) -> None:
    env = client_env(api, ENCOURA_BASE_URL=f"http://127.0.0.1:{free_port()}/v1", ENCOURA_RETRIES="1")
    result = run_client(env, "sync", str(tmp_path / "dest"), "--json", log_level="INFO")
    assert result.returncode == 4
    assert result.stderr.count("retrying POST http://127.0.0.1:") == 1
    assert result.stderr.splitlines()[-1].startswith("error: POST http://127.0.0.1:")
    assert_no_secrets(api, result.stdout, result.stderr)


def test_a_retry_count_that_is_not_a_number_exits_2(api: LiveServer, tmp_path: Path) -> None:
    result = run_client(client_env(api, ENCOURA_RETRIES="many"), "sync", str(tmp_path / "dest"), "--json")
    assert result.returncode == 2
    assert "ENCOURA_RETRIES" in result.stderr
    assert not (tmp_path / "dest").exists()


def test_a_missing_api_key_exits_2(api: LiveServer, tmp_path: Path) -> None:
    result = run_client(client_env(api, ENCOURA_API_KEY=None), "sync", str(tmp_path / "dest"), "--json")
    assert result.returncode == 2
    assert "ENCOURA_API_KEY" in result.stderr
    assert_no_secrets(api, result.stdout, result.stderr)
    assert not (tmp_path / "dest").exists()


def test_a_request_the_server_refuses_exits_2_not_4(api: LiveServer, tmp_path: Path) -> None:
    listing = run_client(client_env(api), "exports", "list", "--status", "delivered", "--json")
    assert listing.returncode == 2
    assert "Delivered, NotDelivered" in listing.stderr
    unknown = run_client(client_env(api), "files", "show", "no-such-file", "--json")
    assert unknown.returncode == 2
    assert "NOT found" in unknown.stderr


def test_a_malformed_sftp_target_exits_2(api: LiveServer, tmp_path: Path) -> None:
    result = run_client(
        client_env(api), "sync", str(tmp_path / "dest"), "--sftp", "sftp://user:pw@host/dir", "--json"
    )
    assert result.returncode == 2
    assert "DATALAB_SFTP_PASSWORD" in result.stderr
    assert not (tmp_path / "dest").exists()


# --- the other commands ---------------------------------------------------------------------------------


def test_login_and_exports_list_print_json(api: LiveServer) -> None:
    assert api.demo is not None
    env = client_env(api, ENCOURA_ORGANIZATION_UID=None)
    result = run_client(env, "login", "--json")
    assert result.returncode == 0, result.stderr
    logged_in = json.loads(result.stdout)
    assert logged_in["userName"] == api.demo.user_name
    assert logged_in["organization"] == api.demo.organization_uid

    result = run_client(env, "exports", "list", "--product", "ematch", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    stored = stored_exports(api)
    assert {row["uid"] for row in rows} == {uid for uid, e in stored.items() if e.product_key == "ematch"}
    assert all(row["status"] == stored[row["uid"]].status for row in rows)
    assert_no_secrets(api, result.stdout, result.stderr)


def test_exports_download_writes_the_file(api: LiveServer, tmp_path: Path) -> None:
    export = next(e for e in stored_exports(api).values() if e.product_key == "enrollment-marketing")
    result = run_client(client_env(api), "exports", "download", export.uid, "--dest", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"downloaded": [str(tmp_path / export.file_name)]}
    assert (tmp_path / export.file_name).read_bytes() == export.content
    assert_no_secrets(api, result.stdout, result.stderr)


def test_upload_and_wait_prints_done(api: LiveServer, tmp_path: Path) -> None:
    source = tmp_path / "enrollment.csv"
    source.write_bytes(GOOD_ENROLLMENT_CSV)

    result = run_client(client_env(api), "upload", str(source), "--product", "enrollment", "--wait")

    assert result.returncode == 0, result.stderr
    file_id, status, name = result.stdout.split()
    assert (status, name) == ("done", "enrollment.csv")
    with api.db() as db:
        assert db.scalars(select(Upload.status).where(Upload.uid == file_id)).one() == "done"
    shown = run_client(client_env(api), "files", "show", file_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "done"
    assert_no_secrets(api, result.stdout, result.stderr, shown.stdout, shown.stderr)


def test_upload_of_a_broken_file_exits_5_with_the_server_s_error(api: LiveServer, tmp_path: Path) -> None:
    source = tmp_path / "broken.csv"
    source.write_bytes(BROKEN_ENROLLMENT_CSV)

    result = run_client(client_env(api), "upload", str(source), "--product", "enrollment", "--wait")

    assert result.returncode == 5
    assert result.stdout == ""
    assert result.stderr.startswith(
        "error: broken.csv: Required fields are not mapped to any column of the file: UniqueID, "
    )
    assert_no_secrets(api, result.stdout, result.stderr)
