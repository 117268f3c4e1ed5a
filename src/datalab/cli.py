"""The `datalab` command line: serve, demo and admin commands."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from datalab.client.cli import register as register_client_commands
from datalab.console import emit, fail

if TYPE_CHECKING:
    from datetime import datetime

    from pydantic_core import ErrorDetails
    from sqlalchemy.orm import Session

    from datalab.accounts.models import Organization, User
    from datalab.settings import Settings
    from datalab.storage.base import ObjectStore

app = typer.Typer(help="Data Lab file exchange: server and administration.", no_args_is_help=True)
admin = typer.Typer(help="Administer organizations, users, API keys and exports.", no_args_is_help=True)
org_cli = typer.Typer(help="Organizations.", no_args_is_help=True)
user_cli = typer.Typer(help="Users and service accounts.", no_args_is_help=True)
key_cli = typer.Typer(help="API keys.", no_args_is_help=True)
export_cli = typer.Typer(help="Export files.", no_args_is_help=True)
student_cli = typer.Typer(help="The student database eMatch files are matched against.", no_args_is_help=True)
audit_cli = typer.Typer(help="The audit trail of every organization.", no_args_is_help=True)
register_client_commands(app)
app.add_typer(admin, name="admin")
admin.add_typer(org_cli, name="org")
admin.add_typer(user_cli, name="user")
admin.add_typer(key_cli, name="apikey")
admin.add_typer(export_cli, name="export")
admin.add_typer(student_cli, name="students")
admin.add_typer(audit_cli, name="audit")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _load_settings() -> Settings:
    from pydantic import ValidationError

    from datalab.settings import load_settings

    try:
        return load_settings()
    except ValidationError as exc:
        problems = "; ".join(_settings_problem(error) for error in exc.errors())
        raise fail(f"invalid settings: {problems}") from None


def _settings_problem(error: ErrorDetails) -> str:
    """One refused setting as the operator wrote it: the variable (when one field is at fault) and why."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"DATALAB_{str(error['loc'][0]).upper()}: {message}"


@contextmanager
def admin_session() -> Iterator[tuple[Session, ObjectStore, Settings]]:
    """A migrated database session (committed on success) and the object store, for one command; what
    the command does is recorded in the audit trail as an operator's action."""
    from datalab.audit.service import Origin, origin_scope
    from datalab.db import transaction
    from datalab.runtime import build_runtime

    settings = _load_settings()
    runtime = build_runtime(settings)
    try:
        with origin_scope(Origin(channel="CLI")), transaction(runtime.session_factory) as db:
            yield db, runtime.store, settings
    finally:
        runtime.dispose()


def _now() -> datetime:
    from datalab.db import utcnow

    return utcnow()


def _serve(host: str, port: int, workers: int = 1) -> None:
    from datalab.operations.metrics_dir import prepare_metrics_dir

    settings = _load_settings()
    # Before the app (and so prometheus-client) is imported: the server's processes share the directory.
    prepare_metrics_dir(settings.home)

    from datalab.serving import serve as run_server

    if settings.dev_mode:
        typer.echo("dev mode: placeholder secrets allowed; never expose this server to a network", err=True)
    run_server(settings, host=host, port=port, workers=workers)


HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(help="Port to listen on.")]


WorkersOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Server processes sharing the port and the data directory (SQLite or PostgreSQL).",
    ),
]


@app.command()
def serve(host: HostOption = "127.0.0.1", port: PortOption = 8080, workers: WorkersOption = 1) -> None:
    """Run the API server (migrations are applied first)."""
    _serve(host, port, workers)


@app.command()
def worker() -> None:
    """Run pipeline workers (DATALAB_PIPELINE_QUEUE=procrastinate, PostgreSQL) until stopped."""
    from datalab.logs import configure_logging
    from datalab.pipeline.worker import run_worker

    settings = _load_settings()
    if settings.pipeline_queue != "procrastinate":
        raise fail(
            "`datalab worker` runs the procrastinate queue: set DATALAB_PIPELINE_QUEUE=procrastinate "
            "(with a PostgreSQL DATALAB_DATABASE_URL) for the worker and the servers; the embedded queue "
            "runs inside `datalab serve`"
        )
    configure_logging(settings.log_format)
    run_worker(settings=settings)


def _quick_start(credentials: dict[str, str], root: str) -> str:
    body = json.dumps(
        {"userName": credentials["userName"], "password": credentials["password"], "acceptedTerms": True}
    )
    return "\n".join(
        [
            f"Data Lab sandbox: {root}/v1   (Swagger UI: {root}/docs)",
            *(f"  {name + ':':<17}{value}" for name, value in credentials.items() if name != "baseUrl"),
            "Log in:",
            f"  curl {root}/v1/login --header 'Content-Type: application/json' "
            f"--header 'x-api-key: {credentials['apiKey']}' --data '{body}'",
            f"Data Center (web pages): {root}/datacenter   (sign in with the userName and password)",
            "Campus client:",
            f"  ENCOURA_BASE_URL={root}/v1 ENCOURA_API_KEY={credentials['apiKey']} "
            f"ENCOURA_USERNAME={credentials['userName']} ENCOURA_PASSWORD={credentials['password']} "
            ".venv/bin/datalab sync ./datalab-files",
        ]
    )


@app.command()
def demo(
    as_json: JsonOption = False,
    base_url: Annotated[str, typer.Option(help="Base URL printed with the credentials.")] = "",
    serve_after: Annotated[bool, typer.Option("--serve", help="Serve the sandbox once seeded.")] = False,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8080,
) -> None:
    """Seed the demo organization, service account, API key and exports (idempotent); print credentials."""
    from datalab.demo.service import seed_demo

    root = (base_url or f"http://{host}:{port}").rstrip("/")
    with admin_session() as (db, store, settings):
        credentials = seed_demo(
            db=db, store=store, settings=settings, base_url=(settings.public_url or root) + "/v1", now=_now()
        )
    payload = dataclasses.asdict(credentials)
    emit(payload, as_json, lambda: _quick_start(payload, settings.public_url or root))
    if serve_after:
        _serve(host, port)


@org_cli.command("create")
def org_create(
    name: Annotated[str, typer.Option(help="Organization name, e.g. 'Sample University'.")],
    fice: Annotated[str, typer.Option(help="FICE code (text; leading zeros kept).")],
    state: Annotated[str, typer.Option(help="Two-letter state code.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create an organization."""
    from datalab.accounts.service import create_organization
    from datalab.domain_errors import DomainError

    with admin_session() as (db, _store, _settings):
        try:
            organization = create_organization(db=db, name=name, fice=fice, state_code=state)
        except DomainError as exc:
            raise fail(exc.message) from None
        payload = {
            "uid": organization.uid,
            "name": organization.name,
            "fice": organization.fice,
            "stateCode": organization.state_code,
        }
    emit(payload, as_json, lambda: f"created organization {payload['uid']} ({name}, FICE {fice})")


@org_cli.command("set-active")
def org_set_active(
    org: Annotated[str, typer.Argument(help="Organization uid or FICE.")],
    active: Annotated[
        bool,
        typer.Option(
            "--on/--off", help="Reactivate (--on) or deactivate (--off): its users cannot act in it."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Deactivate an organization (its rows are kept) or reactivate it."""
    from datalab.accounts.service import set_organization_active

    with admin_session() as (db, _store, _settings):
        (organization,) = _organizations(db, [org])
        set_organization_active(db=db, organization=organization, active=active, now=_now())
        payload = {"uid": organization.uid, "name": organization.name, "active": active}
    emit(payload, as_json, lambda: f"{payload['name']} is now {'active' if active else 'deactivated'}")


def _user(db: Session, user_name: str) -> User:
    from datalab.accounts.service import find_user
    from datalab.domain_errors import DomainError

    try:
        return find_user(db=db, ref=user_name)
    except DomainError as exc:
        raise fail(exc.message) from None


def _organizations(db: Session, refs: list[str]) -> list[Organization]:
    from datalab.accounts.service import find_organization
    from datalab.domain_errors import DomainError

    try:
        return [find_organization(db=db, ref=ref) for ref in refs]
    except DomainError as exc:
        raise fail(exc.message) from None


@user_cli.command("create")
def user_create(
    user_name: Annotated[
        str, typer.Option("--user-name", help="Login name, usually the service account email.")
    ],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="DATALAB_NEW_PASSWORD",
            help="Password (prompted when omitted; or DATALAB_NEW_PASSWORD).",
        ),
    ],
    first_name: Annotated[str, typer.Option("--first-name")] = "",
    last_name: Annotated[str, typer.Option("--last-name")] = "",
    email: Annotated[str, typer.Option()] = "",
    org: Annotated[
        list[str] | None,
        typer.Option(help="Organization uid or FICE; repeat for several (none for an operator)."),
    ] = None,
    admin_role: Annotated[
        bool, typer.Option("--admin", help="An admin of its organizations (reads their audit trail).")
    ] = False,
    operator: Annotated[
        bool, typer.Option("--operator", help="An operator: uses the /v1/admin API, needs no organization.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a user or service account in one or more organizations, or an operator."""
    from datalab.accounts.schemas import user_out
    from datalab.accounts.service import create_user
    from datalab.domain_errors import DomainError

    with admin_session() as (db, _store, _settings):
        try:
            user = create_user(
                db=db,
                user_name=user_name,
                password=password,
                organizations=_organizations(db, org or []),
                first_name=first_name,
                last_name=last_name,
                email=email,
                admin=admin_role,
                operator=operator,
            )
        except DomainError as exc:
            raise fail(exc.message) from None
        payload = user_out(user).model_dump() | {"operator": user.is_operator}
    emit(payload, as_json, lambda: f"created user {payload['uid']} ({user_name})")


@user_cli.command("set-status")
def user_set_status(
    user_name: Annotated[str, typer.Argument(help="The user's userName.")],
    status: Annotated[str, typer.Argument(help="Active or Inactive.")],
    as_json: JsonOption = False,
) -> None:
    """Activate or deactivate a user (deactivation revokes their session tokens at once)."""
    from datalab.accounts.service import set_user_status
    from datalab.domain_errors import DomainError

    with admin_session() as (db, _store, _settings):
        user = _user(db, user_name)
        try:
            set_user_status(db=db, user=user, status=status, now=_now())
        except DomainError as exc:
            raise fail(exc.message) from None
        payload = {"uid": user.uid, "userName": user.user_name, "status": user.status}
    emit(payload, as_json, lambda: f"{user_name} is now {status}")


@user_cli.command("set-role")
def user_set_role(
    user_name: Annotated[str, typer.Argument(help="The user's userName.")],
    role: Annotated[str, typer.Argument(help="admin (reads the organization's audit trail) or member.")],
    org: Annotated[str, typer.Option(help="Organization uid or FICE the user belongs to.")],
    as_json: JsonOption = False,
) -> None:
    """Make a user an admin of one of their organizations, or a plain member again."""
    from datalab.accounts.service import set_membership_role
    from datalab.domain_errors import DomainError

    with admin_session() as (db, _store, _settings):
        user = _user(db, user_name)
        (organization,) = _organizations(db, [org])
        try:
            set_membership_role(db=db, user=user, organization=organization, role=role, now=_now())
        except DomainError as exc:
            raise fail(exc.message) from None
        payload = {"userName": user.user_name, "organizationUid": organization.uid, "role": role}
    emit(payload, as_json, lambda: f"{user_name} is now {role} of {organization.name}")


@user_cli.command("set-operator")
def user_set_operator(
    user_name: Annotated[str, typer.Argument(help="The user's userName.")],
    on: Annotated[bool, typer.Option("--on/--off", help="Grant (--on) or revoke (--off) the operator role.")],
    as_json: JsonOption = False,
) -> None:
    """Grant or revoke the operator role (revoking it ends the user's sessions at once)."""
    from datalab.accounts.service import set_operator

    with admin_session() as (db, _store, _settings):
        user = _user(db, user_name)
        set_operator(db=db, user=user, on=on, now=_now())
        payload = {"uid": user.uid, "userName": user.user_name, "operator": user.is_operator}
    emit(payload, as_json, lambda: f"{user_name} is {'now' if on else 'no longer'} an operator")


@key_cli.command("create")
def key_create(
    user_name: Annotated[str, typer.Option("--user", help="userName of the key's owner.")],
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create an API key; its value is printed once and stored only hashed."""
    from datalab.accounts.service import create_api_key

    with admin_session() as (db, _store, _settings):
        user = _user(db, user_name)
        issued = create_api_key(db=db, user=user, name=name)
        payload = {
            "uid": issued.api_key.uid,
            "apiKey": issued.plain_key,
            "userName": user.user_name,
            "name": name,
        }
    emit(
        payload, as_json, lambda: f"API key {payload['uid']}: {payload['apiKey']}  (shown once; store it now)"
    )


@key_cli.command("revoke")
def key_revoke(
    uid: Annotated[str, typer.Argument(help="The key's uid.")], as_json: JsonOption = False
) -> None:
    """Revoke an API key."""
    from datalab.accounts.service import revoke_api_key
    from datalab.domain_errors import DomainError

    with admin_session() as (db, _store, _settings):
        try:
            api_key = revoke_api_key(db=db, uid=uid, now=_now())
        except DomainError as exc:
            raise fail(exc.message) from None
        payload = {
            "uid": api_key.uid,
            "revokedAt": api_key.revoked_at.isoformat() if api_key.revoked_at else None,
        }
    emit(payload, as_json, lambda: f"revoked API key {uid}")


@key_cli.command("list")
def key_list(
    user_name: Annotated[str, typer.Option("--user", help="userName of the keys' owner.")],
    as_json: JsonOption = False,
) -> None:
    """List a user's API keys (prefix, created, last used, revoked)."""
    from datalab.accounts.service import list_api_keys

    with admin_session() as (db, _store, _settings):
        user = _user(db, user_name)
        payload = [
            {
                "uid": k.uid,
                "name": k.name,
                "prefix": k.prefix,
                "createdAt": k.created_at.isoformat(),
                "lastUsedAt": k.last_used_at.isoformat() if k.last_used_at else None,
                "revokedAt": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in list_api_keys(db=db, user=user)
        ]
    emit(
        payload,
        as_json,
        lambda: (
            "\n".join(
                f"{k['uid']}  {k['prefix']}…  {k['name']}  last used {k['lastUsedAt'] or 'never'}"
                f"{'  REVOKED' if k['revokedAt'] else ''}"
                for k in payload
            )
            or "no keys"
        ),
    )


@export_cli.command("publish")
def export_publish(
    org: Annotated[str, typer.Option(help="Organization uid or FICE.")],
    product: Annotated[str, typer.Option(help="productKey, e.g. prospect or score-reporter.")],
    file: Annotated[Path, typer.Argument(help="CSV file with a header row.")],
    order_name: Annotated[str, typer.Option("--order-name", help="Order name used in the file name.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Publish a CSV file as a new export of an organization."""
    from datalab.exports.errors import ExportError
    from datalab.exports.schemas import export_out
    from datalab.exports.service import publish_export

    with admin_session() as (db, store, settings):
        (organization,) = _organizations(db, [org])
        try:
            export = publish_export(
                db=db,
                store=store,
                bucket=settings.exports_bucket,
                organization=organization,
                product_key=product,
                source=file,
                order_name=order_name,
                now=_now(),
            )
        except ExportError as exc:
            raise fail(str(exc)) from None
        payload = export_out(export, now=_now()).model_dump() | {"fileName": export.file_name}
    emit(
        payload,
        as_json,
        lambda: f"published {payload['fileName']} as export {payload['uid']} ({payload['quantity']} records)",
    )


@export_cli.command("withdraw")
def export_withdraw(
    org: Annotated[str, typer.Option(help="Organization uid or FICE.")],
    uid: Annotated[str, typer.Argument(help="The export's uid.")],
    as_json: JsonOption = False,
) -> None:
    """Withdraw an export: no longer listed to the organization, its download URLs refused."""
    from datalab.domain_errors import DomainError
    from datalab.exports.forms import find_export, withdraw_export

    with admin_session() as (db, _store, _settings):
        (organization,) = _organizations(db, [org])
        try:
            export = withdraw_export(
                db=db, export=find_export(db=db, organization=organization, uid=uid), now=_now()
            )
        except DomainError as exc:
            raise fail(exc.message) from None
        withdrawn_at = export.withdrawn_at.isoformat() if export.withdrawn_at else None
        payload = {"uid": export.uid, "fileName": export.file_name, "withdrawnAt": withdrawn_at}
    emit(payload, as_json, lambda: f"withdrew export {uid} ({payload['fileName']})")


@export_cli.command("list")
def export_list(
    org: Annotated[str, typer.Option(help="Organization uid or FICE.")],
    status: Annotated[str | None, typer.Option(help="Delivered or NotDelivered.")] = None,
    product: Annotated[str | None, typer.Option(help="productKey filter.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List an organization's exports, those expired under retention too (status Expired)."""
    from datalab.domain_errors import DomainError
    from datalab.exports.schemas import export_out
    from datalab.exports.service import list_exports, parse_export_filters
    from datalab.scoping import OrgContext

    with admin_session() as (db, _store, _settings):
        (organization,) = _organizations(db, [org])
        try:
            status_filter, product_filter = parse_export_filters(status=status, product_key=product)
        except DomainError as exc:
            raise fail(exc.message) from None
        context = OrgContext(user=None, organization=organization)
        page = list_exports(
            db=db,
            org=context,
            status=status_filter,
            product_key=product_filter,
            limit=None,
            offset=0,
            include_expired=True,
        )
        now = _now()
        rows = [
            export_out(export, now=now).model_dump()
            | {"fileName": export.file_name}
            | ({"status": "Expired"} if export.expired_at is not None else {})
            for export in page.items
        ]
    emit(
        rows,
        as_json,
        lambda: (
            "\n".join(
                f"{r['uid']}  {r['productKey']:<20} {r['status']:<12} {r['quantity']:>7}  {r['fileName']}"
                for r in rows
            )
            or "no exports"
        ),
    )


@student_cli.command("load")
def students_load(
    file: Annotated[
        Path,
        typer.Argument(
            help="UTF-8 CSV with a header row: StudentKey, FirstName, LastName, and optionally BirthDate, "
            "Email, ZipCode, StateCode, HSGradYear, Address1, City, Phone, HSCode, Gender."
        ),
    ],
    train: Annotated[
        bool,
        typer.Option("--train/--no-train", help="Train the eMatch matching model on the loaded students."),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Insert or update students (by StudentKey) from a CSV file, all or nothing; then train the matcher."""
    from datalab.students.matching import matching_dir
    from datalab.students.service import StudentFileError, load_and_train

    if not file.is_file():
        raise fail(f"{file} is not a readable file")
    with admin_session() as (db, _store, settings):
        try:
            result, model = load_and_train(
                db=db,
                path=file,
                now=_now(),
                snapshot_dir=matching_dir(settings),
                train=train,
                pairs=settings.ematch_training_pairs,
            )
        except StudentFileError as exc:
            raise fail(exc.message) from None
        payload: dict[str, object] = {"inserted": result.inserted, "updated": result.updated}
        if model is not None:
            payload["model"] = {"id": model.model_id, "students": model.student_count}
    emit(payload, as_json, lambda: f"{payload['inserted']} students added, {payload['updated']} updated")


@student_cli.command("train")
def students_train(
    people: Annotated[
        Path | None,
        typer.Option(
            help="An eMatch CSV (layout field names as headers): the m probabilities are then estimated "
            "with EM on the pairs its people form with the students, instead of kept from the shipped model."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train the eMatch matching model on the student database and store it (it is used from now on)."""
    from datalab.students.matching import matching_dir
    from datalab.students.service import read_people_file, train_and_store

    if people is not None and not people.is_file():
        raise fail(f"{people} is not a readable file")
    with admin_session() as (db, _store, settings):
        rows = read_people_file(people, today=_now().date()) if people is not None else None
        model = train_and_store(
            db=db,
            now=_now(),
            snapshot_dir=matching_dir(settings),
            people=rows,
            pairs=settings.ematch_training_pairs,
        )
        payload = {
            "id": model.model_id,
            "students": model.student_count,
            "trainedAt": model.trained_at.isoformat(),
        }
    emit(payload, as_json, lambda: f"model {payload['id']} trained on {payload['students']} students")


@audit_cli.command("export")
def audit_export(
    org: Annotated[
        str | None, typer.Option(help="Organization uid or FICE; every organization's events when omitted.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 date or date-time (UTC unless it says otherwise).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write the CSV here instead of to stdout.")] = None,
) -> None:
    """Print the audit trail as CSV, oldest event first (with events of no organization when --org is
    omitted)."""
    import sys

    from datalab.audit.schemas import parse_since
    from datalab.audit.service import csv_chunks, operator_events, organization_uids
    from datalab.errors import ApiError

    try:
        moment = parse_since(since)
    except ApiError as exc:
        raise fail(exc.message) from None
    with admin_session() as (db, _store, _settings):
        organization = _organizations(db, [org])[0] if org is not None else None
        events = operator_events(db=db, organization=organization, since=moment)
        chunks = csv_chunks(events, organization_uids(db))
        if output is None:
            sys.stdout.writelines(chunks)
        else:
            with output.open("w", encoding="utf-8", newline="") as target:
                target.writelines(chunks)


def main() -> None:
    """Entry point of the `datalab` command."""
    app(prog_name="datalab")


if __name__ == "__main__":
    main()
