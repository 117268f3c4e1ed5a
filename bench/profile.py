"""What one request costs: server CPU per request over HTTP, and a profile of the database work.

1. Against a fresh `datalab serve` (the demo: 16 exports), sequential keep-alive requests of the hot
   reads; the server process's CPU time (utime + stime) per request, next to `/healthz` (the cost
   of HTTP and the framework alone).
2. In-process, the work each of those requests does in its worker thread (authentication, queries,
   serialization), timed with process CPU time, and profiled with pyinstrument (`--profile`).

    python -m bench.profile [--requests 500] [--profile] [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx2
from pyinstrument import Profiler
from sqlalchemy.orm import Session
from tests.support.databases import DatabaseFactory
from tests.support.server import LiveServer, server_env

from bench.load import Connections, exchange, get_request
from datalab.deps import ApiCall
from datalab.exports import service as exports
from datalab.runtime import build_runtime
from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.uploads import service as uploads
from datalab.uploads.schemas import FILE_LIST, file_out

Work = Callable[[Session, OrgContext, datetime], bytes]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sequential(port: int, raw: bytes, count: int) -> None:
    connections = Connections("127.0.0.1", port)
    for _ in range(count):
        status = await exchange(connections, raw)
        if status != 200:
            raise RuntimeError(f"status {status}")
    await connections.close()


def http_costs(server: LiveServer, paths: dict[str, str], headers: dict[str, str], count: int) -> None:
    assert server.process is not None
    pid = server.process.pid
    for name, path in paths.items():
        raw = get_request(path, headers)
        asyncio.run(sequential(server.port, raw, 50))
        before, started = cpu_seconds(pid), time.perf_counter()
        asyncio.run(sequential(server.port, raw, count))
        cpu = (cpu_seconds(pid) - before) / count * 1000
        wall = (time.perf_counter() - started) / count * 1000
        load1 = os.getloadavg()[0]
        print(
            f"HTTP {name:<22} server CPU {cpu:5.2f} ms/request   wall {wall:5.2f} ms   load avg {load1:.2f}"
        )


def work_costs(call: ApiCall, works: dict[str, Work], count: int, profile: bool) -> None:
    for name, work in works.items():
        for _ in range(50):
            call.run(work)
        started = time.process_time()
        for _ in range(count):
            call.run(work)
        cpu = (time.process_time() - started) / count * 1000
        print(f"work {name:<22} CPU {cpu:5.2f} ms/request (authentication, queries, serialization)")
        if profile:
            profiler = Profiler(interval=0.0002)
            profiler.start()
            for _ in range(count):
                call.run(work)
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False))


def create_file(server: LiveServer, headers: dict[str, str]) -> str:
    """A file created for upload (its status is one of the hot reads): its id."""
    created = httpx2.post(
        server.base_url + "/files/upload",
        headers=headers,
        json={"fileName": "roster.csv", "productType": "enrollment"},
    )
    created.raise_for_status()
    file_id: str = created.json()["id"]
    return file_id


def hot_reads(file_id: str) -> dict[str, Work]:
    """The work of each hot read in its worker thread, by the name it is printed under."""

    def principal_only(_db: Session, _org: OrgContext, _now: datetime) -> bytes:
        return b""

    def exports_list(db: Session, org: OrgContext, now: datetime) -> bytes:
        body, _total = exports.export_list_json(
            db=db, org=org, status=None, product_key=None, limit=None, offset=0, now=now
        )
        return body

    def file_status(db: Session, org: OrgContext, _now: datetime) -> bytes:
        return file_out(uploads.get_upload(db=db, org=org, uid=file_id)).model_dump_json().encode()

    def files_list(db: Session, org: OrgContext, _now: datetime) -> bytes:
        page = uploads.list_uploads(
            db=db,
            org=org,
            status=None,
            product_type=None,
            sort_by=None,
            sort_direction=None,
            limit=20,
            offset=0,
        )
        return FILE_LIST.dump_json([file_out(upload) for upload in page.items])

    return {
        "principal only": principal_only,
        "exports list (16)": exports_list,
        "file status": file_status,
        "files list": files_list,
    }


def measure(server: LiveServer, args: argparse.Namespace) -> None:
    """Print the server's CPU per request over HTTP, then the in-process cost of each request's work."""
    headers = server.login().headers
    file_id = create_file(server, headers)
    http_costs(
        server,
        {
            "/healthz": "/healthz",
            "exports list (16)": "/v1/datacenter/exports",
            "file status": f"/v1/files/{file_id}",
            "files list": "/v1/files",
        },
        headers,
        args.requests,
    )
    settings = Settings(
        home=server.home,
        database_url=server.database_url,
        secret_key=server.env["DATALAB_SECRET_KEY"],
        pipeline_workers=0,
    )
    runtime = build_runtime(settings, migrate=False)
    call = ApiCall(
        runtime=runtime,
        authorization=headers["Authorization"],
        api_key=headers["x-api-key"],
        organization=headers["Organization"],
        base_url=server.base_url,
    )
    work_costs(call, hot_reads(file_id), args.requests, args.profile)
    runtime.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement")
    parser.add_argument("--profile", action="store_true", help="print pyinstrument profiles of the work")
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL to create the database with")
    args = parser.parse_args()
    factory = DatabaseFactory(args.postgres or None)
    with tempfile.TemporaryDirectory(prefix="datalab-profile-") as work_dir:
        home = Path(work_dir)
        database_url = factory.new_url(home)
        env = server_env(home=home, database_url=database_url, extra={"DATALAB_PIPELINE_WORKERS": "0"})
        server = LiveServer(own_process=True, home=home, database_url=database_url, env=env)
        server.start()
        try:
            measure(server, args)
        finally:
            server.stop()
            factory.drop_all()


if __name__ == "__main__":
    main()
