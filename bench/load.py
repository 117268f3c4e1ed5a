"""Load benchmark: authenticated API reads at a fixed rate and far past saturation, open loop.

A small asyncio HTTP/1.1 load generator sends requests on a fixed schedule whatever the server does
(open loop: a slow answer does not slow the next request down), so latency is measured from each
request's *scheduled* time and queueing inside the server is not hidden. Connections are kept alive
and reused; a new one is opened when every open one is busy.

Phases, against a fresh `datalab serve` seeded with the demo (16 exports, a few uploads):
1. `GET /v1/datacenter/exports` (the export list) at --rate req/s;
2. `GET /v1/files/{id}` (one file's status) at --rate req/s;
3. the export list offered at --overload-rate req/s (past saturation): every answer must be 200 or
   503, and the 200s per second are the saturation throughput;
4. recovery: how long after the overload stops a request is answered normally again, then the
   export list at --rate req/s once more.

Each line gives p50/p99 latency, statuses, errors (timeouts, resets), the server's RSS and peak RSS,
and the load average of the machine (the generator shares it with the server: on a busy machine the
figures say more about the neighbours than about the server).

    python -m bench.load                                  # SQLite, the embedded default
    python -m bench.load --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python -m bench.load --workers 2 --duration 5         # two server processes, shorter phases
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from tests.support.databases import DatabaseFactory
from tests.support.server import DemoAccount, LiveServer, free_port, server_env

REQUEST_TIMEOUT = 10.0


@dataclass
class Result:
    """What one phase measured."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    late_starts: int = 0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Connections:
    """Keep-alive connections to one server: an idle one is reused, else a new one is opened."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
        self.opened = 0

    async def take(self, *, fresh: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A connection, and whether it was reused (the server may have closed it meanwhile)."""
        if self.idle and not fresh:
            reader, writer = self.idle.pop()
            return reader, writer, True
        self.opened += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    def give_back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle.append((reader, writer))

    async def close(self) -> None:
        while self.idle:
            _reader, writer = self.idle.pop()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class StaleConnection(Exception):
    """A kept-alive connection the server had closed (its idle timeout): retried on a new one."""


async def exchange(connections: Connections, raw: bytes) -> int:
    """Send one request and read its whole answer; the status code."""
    try:
        return await _exchange(connections, raw, fresh=False)
    except StaleConnection:
        return await _exchange(connections, raw, fresh=True)


async def _exchange(connections: Connections, raw: bytes, *, fresh: bool) -> int:
    reader, writer, reused = await connections.take(fresh=fresh)
    try:
        writer.write(raw)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
            if reused and not getattr(exc, "partial", b""):
                raise StaleConnection from None
            raise ConnectionResetError("closed before answering") from None
        status_line, *header_lines = head.split(b"\r\n")
        status = int(status_line.split()[1])
        length, close = 0, False
        for line in header_lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await reader.readexactly(length)
    except BaseException:
        writer.close()
        raise
    if close:
        writer.close()
    else:
        connections.give_back(reader, writer)
    return status


def get_request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: bench"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_loop(port: int, raw: bytes, *, rate: float, seconds: float) -> Result:
    """Send `raw` at `rate` per second for `seconds`, each on schedule; collect latencies from schedule."""
    result = Result()
    connections = Connections("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        try:
            status = await asyncio.wait_for(exchange(connections, raw), timeout=REQUEST_TIMEOUT)
        except TimeoutError:
            result.errors["timeout"] += 1
            return
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            result.errors[type(exc).__name__] += 1
            return
        result.statuses[status] += 1
        if status == 200:
            result.latencies.append(loop.time() - scheduled)

    start = loop.time() + 0.05
    total = int(rate * seconds)
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            result.late_starts += 1
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.sent += 1
    if tasks:
        await asyncio.wait(tasks)
    await connections.close()
    return result


async def recovery_seconds(port: int, raw: bytes, *, normal_latency: float) -> float:
    """Seconds from now until one request is answered 200 within twice the normal latency (plus 20 ms)."""
    started = time.monotonic()
    connections = Connections("127.0.0.1", port)
    try:
        while time.monotonic() - started < 60:
            sent = time.monotonic()
            try:
                status = await asyncio.wait_for(exchange(connections, raw), timeout=REQUEST_TIMEOUT)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                status = 0
            if status == 200 and time.monotonic() - sent <= 2 * normal_latency + 0.02:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        return float("inf")
    finally:
        await connections.close()


def _kib(pid: int, name: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def server_pids(root_pid: int) -> list[int]:
    """The server process and its worker processes (with --workers)."""
    pids = [root_pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == root_pid:
                    pids.append(int(entry.name))
    return pids


def memory(root_pid: int) -> str:
    pids = server_pids(root_pid)
    rss = sum(_kib(pid, "VmRSS") for pid in pids) / 1024
    peak = sum(_kib(pid, "VmHWM") for pid in pids) / 1024
    return f"RSS {rss:.0f} MiB (peak {peak:.0f} MiB, {len(pids)} process{'es' if len(pids) > 1 else ''})"


def report(name: str, rate: float, result: Result, root_pid: int) -> str:
    load1, load5, _ = os.getloadavg()
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(result.statuses.items()))
    errors = ", ".join(f"{kind}: {count}" for kind, count in result.errors.items()) or "none"
    return (
        f"{name:<34} offered {rate:>6.0f} req/s  p50 {result.percentile(0.5) * 1000:7.1f} ms  "
        f"p99 {result.percentile(0.99) * 1000:7.1f} ms  statuses {{{statuses}}}  errors {errors}  "
        f"late starts {result.late_starts}  {memory(root_pid)}  load avg {load1:.2f}/{load5:.2f}"
    )


def answered(home: Path) -> Counter[str]:
    """Answers the server logged so far (its access log, JSON lines or text), by status."""
    counts: Counter[str] = Counter()
    with (home / "server.log").open("rb") as log:
        for line in log:
            if line.startswith(b"{"):
                entry = json.loads(line)
                if entry.get("logger") == "uvicorn.access" and "status" in entry:
                    counts[str(entry["status"])] += 1
            elif b'HTTP/1.1" ' in line:
                counts[line.rsplit(b'HTTP/1.1" ', 1)[1][:3].decode()] += 1
    return counts


def start_server(home: Path, database_url: str, workers: int) -> tuple[LiveServer, subprocess.Popen[bytes]]:
    """Seed the demo and start `datalab serve --workers N`; returns once it answers."""
    server = LiveServer(
        home=home, database_url=database_url, env=server_env(home=home, database_url=database_url)
    )
    server.port = free_port()
    seeded = server.cli_json("demo", "--base-url", server.root)
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "datalab", "serve", "--port", str(server.port), "--workers", str(workers)],
        env=server.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(server.root + "/healthz", timeout=1).status_code == 200:
                break
        if process.poll() is not None:
            raise RuntimeError((home / "server.log").read_text())
        time.sleep(0.1)
    server.demo = DemoAccount(
        api_key=seeded["apiKey"],
        user_name=seeded["userName"],
        password=seeded["password"],
        organization_uid=seeded["organizationUid"],
        base_url=seeded["baseUrl"],
    )
    return server, process


def run(args: argparse.Namespace, home: Path, database_url: str, label: str) -> None:
    server, process = start_server(home, database_url, args.workers)
    try:
        logged_in = server.login()
        headers = logged_in.headers
        created = httpx2.post(
            server.base_url + "/files/upload",
            headers=headers,
            json={"fileName": "roster.csv", "productType": "enrollment"},
        )
        created.raise_for_status()
        file_id = created.json()["id"]
        exports = get_request("/v1/datacenter/exports", headers)
        status = get_request(f"/v1/files/{file_id}", headers)
        print(f"--- {label}: datalab serve --workers {args.workers}, {args.duration:.0f} s per phase")
        # Warm-up: imports, caches and connections, at a modest rate.
        asyncio.run(open_loop(server.port, exports, rate=50, seconds=2))
        asyncio.run(open_loop(server.port, status, rate=50, seconds=1))
        base = asyncio.run(open_loop(server.port, exports, rate=args.rate, seconds=args.duration))
        print(report("exports list", args.rate, base, process.pid), flush=True)
        result = asyncio.run(open_loop(server.port, status, rate=args.rate, seconds=args.duration))
        print(report("file status", args.rate, result, process.pid), flush=True)
        logged_before = answered(home)
        result = asyncio.run(open_loop(server.port, exports, rate=args.overload_rate, seconds=args.duration))
        normal = base.percentile(0.5) if base.latencies else 0.05
        recovered = asyncio.run(recovery_seconds(server.port, exports, normal_latency=normal))
        logged = answered(home) - logged_before
        served = result.statuses.get(200, 0) / args.duration
        print(report("exports list, overloaded", args.overload_rate, result, process.pid), flush=True)
        others = sum(count for code, count in result.statuses.items() if code not in (200, 503))
        print(
            f"{'':<34} saturation throughput {served:.0f} req/s answered 200; non-200/503 answers: {others}"
        )
        by_status = ", ".join(f"{code}: {count}" for code, count in sorted(logged.items()))
        print(f"{'':<34} the server's access log for the phase: {{{by_status}}} of {result.sent} sent")
        print(f"{'':<34} normal answer {recovered:.2f} s after the overload stopped", flush=True)
        result = asyncio.run(open_loop(server.port, exports, rate=args.rate, seconds=args.duration))
        print(report("exports list, after overload", args.rate, result, process.pid), flush=True)
        log = (home / "server.log").read_text(errors="replace")
        print(f"{'':<34} server errors logged: {log.count('Traceback')}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200, help="requests per second of the steady phases")
    parser.add_argument(
        "--overload-rate", type=float, default=2000, help="requests per second offered past saturation"
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per phase")
    parser.add_argument("--workers", type=int, default=1, help="server processes (datalab serve --workers)")
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL to create the bench database with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="datalab-load-") as work:
        factory = DatabaseFactory(args.postgres or None)
        try:
            url = factory.new_url(Path(work))
            run(args, Path(work), url, "PostgreSQL" if args.postgres else "SQLite (embedded default)")
        finally:
            factory.drop_all()
    print(json.dumps({"python": sys.version.split()[0], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
