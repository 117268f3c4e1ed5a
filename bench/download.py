"""Download benchmark: serve a 1 GiB export through a one-time URL.

Prints the server's throughput as a ratio of `cat file > /dev/null` on the same file in the same run,
and the server process's peak memory (VmHWM) before and after the downloads.
Run with `make bench` (or `python -m bench.download --size-mib 256` for a quicker look).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from tests.support.databases import DatabaseFactory
from tests.support.server import LiveServer, server_env

ROW = (
    "000123456,Jane,Q,Doe,12 Elm St,Apt 4,Boston,MA,02134,0001,jane.doe@example.edu,6175550100,2026,3.85\r\n"
)
HEADER = (
    "STUDENTPIN,FIRSTNAME,MIDDLEINITIAL,LASTNAME,ADDRESS,ADDRESS2,CITY,STATE,POSTALCODE,ZIP4,EMAIL,PHONE,"
    "GRADYEAR,GPA\r\n"
)


def write_csv(path: Path, size_bytes: int) -> None:
    """A CSV file of about size_bytes, written in large blocks."""
    block = ROW * (4 * 1024 * 1024 // len(ROW))
    with path.open("w", newline="") as out:
        out.write(HEADER)
        written = len(HEADER)
        while written < size_bytes:
            out.write(block)
            written += len(block)


def status_kib(pid: int, field: str) -> int:
    """A memory field of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_report(pid: int, peak_before_kib: int, what: str) -> str:
    """The process's peak RSS now, and how much it grew since peak_before_kib, as one line."""
    peak = status_kib(pid, "VmHWM")
    growth = (peak - peak_before_kib) / 1024
    return f"server peak RSS (VmHWM): {peak / 1024:.1f} MiB (+{growth:.1f} MiB during {what})"


def timed_command(command: list[str]) -> float:
    """Seconds a command takes."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def timed_cat(path: Path) -> float:
    """Seconds `cat path > /dev/null` takes."""
    return timed_command(["sh", "-c", f"cat '{path}' > /dev/null"])


def download_url(server: LiveServer, uid: str) -> str:
    """A fresh one-time URL for the export."""
    headers = server.login().headers
    response = httpx2.get(f"{server.base_url}/datacenter/exports/{uid}/download", headers=headers)
    response.raise_for_status()
    url: str = response.json()["downloadUrl"]
    return url


def timed_download(url: str) -> tuple[float, int]:
    """Seconds and bytes for fetching the URL with curl (a C client, so the server is what is measured)."""
    started = time.perf_counter()
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    status, size = result.stdout.split()
    if status != "200":
        raise RuntimeError(f"download answered {status}")
    return elapsed, int(size)


def publish_bench_export(server: LiveServer, source: Path) -> dict[str, Any]:
    """Publish the file as a prospect export of the demo organization, with the admin command."""
    assert server.demo is not None
    published: dict[str, Any] = server.cli_json(
        "admin",
        "export",
        "publish",
        "--org",
        server.demo.organization_uid,
        "--product",
        "prospect",
        "--order-name",
        "Bench",
        str(source),
    )
    return published


def time_downloads(server: LiveServer, published: dict[str, Any], stored: Path, runs: int) -> None:
    """Download the export `runs` times and print each run's throughput against cat, then peak memory."""
    assert server.process is not None
    size = stored.stat().st_size
    timed_cat(stored)  # warm the page cache so both sides read from memory
    # A login first: its argon2 check alone takes 64 MiB, which is not the download's doing.
    server.login()
    rss_before = status_kib(server.process.pid, "VmHWM")
    print(f"export: {size / 2**20:.0f} MiB, {published['quantity']} records")
    print(f"server peak RSS after start-up and a login: {rss_before / 1024:.1f} MiB")
    for run in range(1, runs + 1):
        cat_seconds = timed_cat(stored)
        seconds, received = timed_download(download_url(server, published["uid"]))
        if received != size:
            raise RuntimeError(f"received {received} bytes of {size}")
        cat_rate, server_rate = size / cat_seconds / 2**20, size / seconds / 2**20
        print(
            f"run {run}: cat {cat_rate:,.0f} MiB/s, server {server_rate:,.0f} MiB/s, "
            f"ratio server/cat {cat_seconds / seconds:.3f}"
        )
    print(peak_report(server.process.pid, rss_before, f"{runs} downloads of {size / 2**20:.0f} MiB"))


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024, help="export size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="downloads to time (default 3)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("bench needs curl")

    with tempfile.TemporaryDirectory(prefix="datalab-bench-") as work:
        home = Path(work)
        source = home / "big.csv"
        write_csv(source, args.size_mib * 1024 * 1024)
        database_url = DatabaseFactory(None).new_url(home)
        server = LiveServer(
            own_process=True,
            home=home,
            database_url=database_url,
            env=server_env(home=home, database_url=database_url),
        )
        server.start()
        try:
            published = publish_bench_export(server, source)
            source.unlink()
            time_downloads(
                server, published, next((home / "objects").rglob("Prospect_*_Bench.csv")), args.runs
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
