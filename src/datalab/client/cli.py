"""The campus-side commands: login, exports, upload, files and sync (base install, no server packages).

Credentials come from ENCOURA_API_KEY, ENCOURA_USERNAME, ENCOURA_PASSWORD and, optionally,
ENCOURA_ORGANIZATION_UID and ENCOURA_BASE_URL (or --base-url); ENCOURA_RETRIES sets how many times a
failing call is tried again.

Exit codes, for schedulers: 0 done; 1 some files failed (the next run retries them); 2 bad usage or
configuration, or a request the server refused (400, 404, 422); 3 credentials refused; 4 server
unreachable or failing (5xx); 5 an uploaded file could not be processed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from datalab.client.core import Client, Progress
from datalab.client.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    ConnectionFailed,
    DataLabError,
    ProcessingFailed,
)
from datalab.client.models import Export, FileRecord
from datalab.client.sftp import SftpHook, SftpTarget
from datalab.client.sync import ExecHook, Hook
from datalab.client.sync import sync as run_sync
from datalab.console import emit, fail

EXIT_PARTIAL, EXIT_USAGE, EXIT_AUTH, EXIT_UNAVAILABLE, EXIT_PROCESSING = 1, 2, 3, 4, 5

BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", envvar="ENCOURA_BASE_URL", help="API root, e.g. http://127.0.0.1:8080/v1."),
]
OrganizationOption = Annotated[
    str | None,
    typer.Option(
        "--organization", envvar="ENCOURA_ORGANIZATION_UID", help="Organization uid (default: the first)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON; no progress bars.")]

exports_cli = typer.Typer(help="Export files of the organization.", no_args_is_help=True)
files_cli = typer.Typer(help="Uploaded files of the organization.", no_args_is_help=True)


@contextmanager
def _client(base_url: str | None, organization: str | None) -> Iterator[Client]:
    """A client from the environment; errors become messages and exit codes."""
    # httpx logs every URL at INFO, signatures included: keep it quiet whatever the log level.
    for name in ("httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with Client(base_url=base_url, organization=organization) as client:
            yield client
    except ConfigurationError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except AuthenticationError as exc:
        raise fail(f"refused: {exc.message}", EXIT_AUTH) from None
    except ProcessingFailed as exc:
        raise fail(str(exc), EXIT_PROCESSING) from None
    except ApiError as exc:
        # A request the server refuses as such (bad filter, unknown id) will not succeed on a retry.
        raise fail(str(exc), EXIT_USAGE if exc.status < 500 else EXIT_UNAVAILABLE) from None
    except ConnectionFailed as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None
    except DataLabError as exc:
        raise fail(str(exc), EXIT_PARTIAL) from None


def _interactive(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty()


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[Callable[[str], Progress | None]]:
    """A factory of per-file progress callbacks drawing rich bars (bytes, rate, ETA) on a terminal."""
    if not enabled:
        yield lambda _label: None
        return
    # Imported here only: rich is a sizeable part of every command's start, and scheduled runs draw no bars.
    from rich import progress as rich_progress  # noqa: PLC0415

    with rich_progress.Progress(
        "{task.description}",
        rich_progress.BarColumn(),
        rich_progress.DownloadColumn(),
        rich_progress.TransferSpeedColumn(),
        rich_progress.TimeRemainingColumn(),
        console=None,
        transient=False,
    ) as bars:

        def factory(label: str) -> Progress:
            task = bars.add_task(label, total=None)

            def update(done: int, total: int | None) -> None:
                bars.update(task, completed=done, total=total)

            return update

        yield factory


def _export_row(export: Export) -> dict[str, Any]:
    return {
        "uid": export.uid,
        "productKey": export.product_key,
        "status": export.status,
        "quantity": export.quantity,
        "createdAt": export.created_at.isoformat() if export.created_at else None,
    }


def _file_row(record: FileRecord) -> dict[str, Any]:
    row = asdict(record)
    row.pop("raw")
    return row


def login(
    base_url: BaseUrlOption = None, organization: OrganizationOption = None, as_json: JsonOption = False
) -> None:
    """Check the credentials: log in and show the account and its organizations."""
    with _client(base_url, organization) as client:
        user = client.login()
    payload = {
        "userName": user.get("userName"),
        "organization": client.organization,
        "organizations": user.get("organizations", []),
    }
    emit(
        payload,
        as_json,
        lambda: f"logged in as {payload['userName']}; organization {payload['organization']}",
    )


@exports_cli.command("list")
def exports_list(
    status: Annotated[str | None, typer.Option(help="Delivered or NotDelivered.")] = None,
    product: Annotated[str | None, typer.Option(help="productKey, e.g. score-reporter.")] = None,
    base_url: BaseUrlOption = None,
    organization: OrganizationOption = None,
    as_json: JsonOption = False,
) -> None:
    """List export files."""
    with _client(base_url, organization) as client:
        rows = [_export_row(export) for export in client.exports(status=status, product_key=product)]
    emit(
        rows,
        as_json,
        lambda: (
            "\n".join(
                f"{r['uid']}  {r['productKey']:<20} {r['status']:<12} {r['quantity']:>7}  "
                f"{r['createdAt'] or ''}"
                for r in rows
            )
            or "no exports"
        ),
    )


@exports_cli.command("download")
def exports_download(
    uids: Annotated[list[str], typer.Argument(help="Export uids.")],
    dest: Annotated[Path, typer.Option(help="Directory to download into.")] = Path("."),
    base_url: BaseUrlOption = None,
    organization: OrganizationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download export files (complete and verified, or not at all)."""
    paths: list[str] = []
    with _client(base_url, organization) as client, _progress_bars(_interactive(as_json)) as bars:
        for uid in uids:
            paths.append(str(client.download(uid, dest, progress=bars(uid[:8]))))
    emit({"downloaded": paths}, as_json, lambda: "\n".join(paths))


def upload(
    file: Annotated[Path, typer.Argument(help="File to upload (CSV, TXT, TSV, XLSX, XLS or ZIP).")],
    product: Annotated[str, typer.Option(help="enrollment, ematch or affinity.")],
    description: Annotated[str | None, typer.Option(help="A note shown with the file.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the server has processed the file.")
    ] = False,
    base_url: BaseUrlOption = None,
    organization: OrganizationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a file for processing."""
    with _client(base_url, organization) as client, _progress_bars(_interactive(as_json)) as bars:
        record = client.upload(file, product, description, wait=wait, progress=bars(file.name))
    row = _file_row(record)
    emit(row, as_json, lambda: f"{record.id}  {record.status}  {record.file_name}")


@files_cli.command("list")
def files_list(
    status: Annotated[str | None, typer.Option(help="e.g. done or failure.")] = None,
    product: Annotated[str | None, typer.Option(help="enrollment, ematch or affinity.")] = None,
    base_url: BaseUrlOption = None,
    organization: OrganizationOption = None,
    as_json: JsonOption = False,
) -> None:
    """List uploaded files."""
    with _client(base_url, organization) as client:
        rows = [_file_row(record) for record in client.files(status=status, product_type=product)]
    emit(
        rows,
        as_json,
        lambda: (
            "\n".join(
                f"{r['id']}  {r['product_type']:<10} {r['status']:<24} {r['record_volume']:>7}  "
                f"{r['file_name']}"
                for r in rows
            )
            or "no files"
        ),
    )


@files_cli.command("show")
def files_show(
    file_id: Annotated[str, typer.Argument(help="File id.")],
    base_url: BaseUrlOption = None,
    organization: OrganizationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one uploaded file's record."""
    with _client(base_url, organization) as client:
        record = client.file(file_id)
    emit(
        record.raw,
        as_json,
        lambda: (
            f"{record.id}  {record.status}  {record.file_name}"
            + (f"\n{record.error}" if record.error else "")
        ),
    )


def sync(
    dest: Annotated[Path, typer.Argument(help="Folder to keep the files in (DEST/<productKey>/).")],
    product: Annotated[list[str] | None, typer.Option(help="Only this productKey (repeatable).")] = None,
    exec_command: Annotated[
        str | None, typer.Option("--exec", help="Command run per new file; {} is the path (else appended).")
    ] = None,
    sftp_url: Annotated[
        str | None,
        typer.Option("--sftp", help="Push each file to sftp://user@host[:port]/dir ({product} allowed)."),
    ] = None,
    sftp_key: Annotated[Path | None, typer.Option(help="Private key for --sftp.")] = None,
    sftp_known_hosts: Annotated[
        Path | None, typer.Option(help="known_hosts file for --sftp (default: the system's).")
    ] = None,
    base_url: BaseUrlOption = None,
    organization: OrganizationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download every export not downloaded before, then run the hooks; safe to stop and run again."""
    hooks: list[Hook] = []
    if exec_command:
        hooks.append(ExecHook(exec_command))
    with _client(base_url, organization) as client:
        if sftp_url:
            hooks.append(
                SftpHook(
                    SftpTarget.parse(sftp_url),
                    password=os.environ.get("DATALAB_SFTP_PASSWORD") or None,
                    key_file=sftp_key,
                    known_hosts=sftp_known_hosts,
                )
            )
        with _progress_bars(_interactive(as_json)) as bars:
            report = run_sync(
                client=client,
                dest=dest,
                products=product or (),
                hooks=hooks,
                progress=lambda export: bars(f"{export.product_key} {export.uid[:8]}"),
            )
    emit(
        report.as_json(),
        as_json,
        lambda: (
            "\n".join(
                [f"downloaded {path}" for path in report.downloaded]
                + [f"{hook} done for {path}" for path, hook in report.hooked]
                + [f"FAILED {failure}" for failure in report.failures]
            )
            or "nothing new"
        ),
    )
    if report.failures:
        raise typer.Exit(code=EXIT_PARTIAL)


def register(app: typer.Typer) -> None:
    """Add the client commands to the `datalab` command."""
    app.command("login")(login)
    app.add_typer(exports_cli, name="exports")
    app.command("upload")(upload)
    app.add_typer(files_cli, name="files")
    app.command("sync")(sync)
