"""Upload benchmark: post a 2 GiB file through the presigned POST form of the embedded store.

Prints the server's receive throughput as a ratio of `cp` of the same bytes in the same run, and the
server process's peak memory before and after the uploads. Run with `make bench` (or
`python -m bench.upload --size-mib 256` for a quicker look).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx2
from tests.support.databases import DatabaseFactory
from tests.support.server import LiveServer, server_env

from bench.download import peak_report, status_kib, timed_command


def write_file(path: Path, size_bytes: int) -> None:
    """A CSV-looking file of size_bytes, written in large blocks."""
    row = b"000123456,Jane,Doe,02134,2026/08/15,FA26\n"
    block = row * (4 * 1024 * 1024 // len(row))
    with path.open("wb") as out:
        written = 0
        while written < size_bytes:
            piece = block[: size_bytes - written]
            out.write(piece)
            written += len(piece)


def new_form(server: LiveServer) -> dict[str, object]:
    """A fresh upload record and its form."""
    response = httpx2.post(
        server.base_url + "/files/upload",
        headers=server.login().headers,
        json={"fileName": "enrollment.csv", "productType": "enrollment", "datasource": "API"},
    )
    response.raise_for_status()
    form: dict[str, object] = response.json()
    return form


def timed_upload(form: dict[str, object], source: Path) -> float:
    """Seconds curl takes to post the file with the form's fields (file last)."""
    fields = form["fields"]
    assert isinstance(fields, dict)
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", str(form["url"])]
    for name, value in fields.items():
        command += ["--form-string", f"{name}={value}"]
    command += ["--form", f"file=@{source}"]
    started = time.perf_counter()
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.stdout != "204":
        raise RuntimeError(f"upload answered {result.stdout}: {shlex.join(command[:8])} ...")
    return elapsed


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=2048, help="file size in MiB (default 2048)")
    parser.add_argument("--runs", type=int, default=2, help="uploads to time (default 2)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("bench needs curl")

    with tempfile.TemporaryDirectory(prefix="datalab-bench-") as work:
        home = Path(work)
        source = home / "upload.csv"
        size = args.size_mib * 1024 * 1024
        write_file(source, size)
        database_url = DatabaseFactory(None).new_url(home)
        server = LiveServer(
            own_process=True,
            home=home,
            database_url=database_url,
            env=server_env(home=home, database_url=database_url),
        )
        server.start()
        try:
            assert server.process is not None
            copy = home / "copy.csv"
            timed_command(["cp", str(source), str(copy)])  # warm the page cache for both sides
            new_form(server)  # the login's argon2 check alone takes 64 MiB: count it before measuring
            peak_before = status_kib(server.process.pid, "VmHWM")
            print(f"file: {size / 2**20:.0f} MiB")
            print(f"server peak RSS after start-up and a login: {peak_before / 1024:.1f} MiB")
            for run in range(1, args.runs + 1):
                copy.unlink()
                cp_seconds = timed_command(["sh", "-c", f"cp '{source}' '{copy}' && sync '{copy}'"])
                upload_seconds = timed_upload(new_form(server), source)
                cp_rate, upload_rate = size / cp_seconds / 2**20, size / upload_seconds / 2**20
                print(
                    f"run {run}: cp+sync {cp_rate:,.0f} MiB/s, upload {upload_rate:,.0f} MiB/s, "
                    f"ratio upload/cp {cp_seconds / upload_seconds:.3f}"
                )
            print(
                peak_report(server.process.pid, peak_before, f"{args.runs} uploads of {size / 2**20:.0f} MiB")
            )
            stored = sum(p.stat().st_size for p in (home / "objects" / "datalab-uploads").rglob("*.csv"))
            print(f"stored: {stored / 2**20:.0f} MiB in {args.runs} objects")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
