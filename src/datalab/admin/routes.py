"""The operator API under /v1/admin: every route needs an operator's session token (OperatorDep).

The handlers call the same domain services as the `datalab admin` commands (accounts, exports); what
an operator does is recorded in the audit trail by those services, with the operator as the actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.routing import APIRoute

from datalab.accounts import service as accounts
from datalab.admin.schemas import (
    AdminExportOut,
    AdminOrganizationOut,
    AdminUserOut,
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    ExportFormIn,
    ExportFormOut,
    MembershipIn,
    OrganizationIn,
    OrganizationUpdate,
    StudentModelOut,
    StudentsLoadOut,
    UserIn,
    UserUpdate,
    admin_export_out,
    admin_user_out,
    api_key_out,
    organization_out,
)
from datalab.bodies import spooled_body
from datalab.deps import DbDep, NowDep, OperatorDep, SettingsDep, StoreDep, public_base_url, raw_body
from datalab.errors import error_responses
from datalab.exports import forms
from datalab.exports import service as exports
from datalab.pagination import Page, paginate, parse_paging
from datalab.scoping import OrgContext


def _operation_id(route: APIRoute) -> str:
    """`admin` and the handler's name in camelCase: `get_user` is adminGetUser."""
    return "admin" + "".join(word.capitalize() for word in route.name.split("_"))


router = APIRouter(prefix="/admin", tags=["Operators"], generate_unique_id_function=_operation_id)

OptionalText = Annotated[str | None, Query()]
FileBody = Annotated[bytes, Depends(raw_body)]
_CSV_BODY = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}}
_S403 = "operator_required: the caller is signed in but is not an operator"
# What every operator route can answer before its own work.
OPERATOR_ERRORS = (401, 403, 422, 503)
Item = TypeVar("Item")
Shown = TypeVar("Shown")


def _listed(response: Response, page: Page[Item], out: Callable[[Item], Shown]) -> list[Shown]:
    """The page's items as `out` shows them, the number of all matches in the total-count header."""
    response.headers["total-count"] = str(page.total)
    return [out(item) for item in page.items]


def _responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    return error_responses(*OPERATOR_ERRORS, *statuses, s403=_S403, s404="No such organization, user or key")


@router.post(
    "/organizations", status_code=201, summary="Create an organization", responses=_responses(400, 413)
)
def create_organization(body: OrganizationIn, db: DbDep, operator: OperatorDep) -> AdminOrganizationOut:
    """A new organization; FICE codes are unique."""
    organization = accounts.create_organization(
        db=db, name=body.name, fice=body.fice, state_code=body.stateCode, by=operator
    )
    return organization_out(organization)


@router.get("/organizations", summary="List organizations", responses=_responses(400))
def list_organizations(
    response: Response,
    db: DbDep,
    _operator: OperatorDep,
    active: Annotated[
        bool | None, Query(description="Only active (true) or deactivated (false) ones")
    ] = None,
    limit: OptionalText = None,
    offset: OptionalText = None,
) -> list[AdminOrganizationOut]:
    """Every organization, oldest first, paged (total in the total-count header)."""
    page_limit, page_offset = parse_paging(limit=limit, offset=offset)
    page = paginate(
        db=db, query=accounts.organizations_query(active=active), limit=page_limit, offset=page_offset
    )
    return _listed(response, page, organization_out)


@router.get(
    "/organizations/{org}", summary="Get an organization by uid or FICE code", responses=_responses(404)
)
def get_organization(org: str, db: DbDep, _operator: OperatorDep) -> AdminOrganizationOut:
    """One organization."""
    return organization_out(accounts.find_organization(db=db, ref=org))


@router.patch(
    "/organizations/{org}",
    summary="Rename, change the state code of, deactivate or reactivate an organization",
    responses=_responses(400, 404, 413),
)
def update_organization(
    org: str, body: OrganizationUpdate, db: DbDep, operator: OperatorDep, now: NowDep
) -> AdminOrganizationOut:
    """Change what the body names; `active: false` deactivates (its users can no longer act in it)."""
    organization = accounts.find_organization(db=db, ref=org)
    if body.name is not None or body.stateCode is not None:
        accounts.update_organization(
            db=db, organization=organization, name=body.name, state_code=body.stateCode, now=now, by=operator
        )
    if body.active is not None:
        accounts.set_organization_active(
            db=db, organization=organization, active=body.active, now=now, by=operator
        )
    return organization_out(organization)


@router.post(
    "/organizations/{org}/deactivate", summary="Deactivate an organization", responses=_responses(404)
)
def deactivate_organization(org: str, db: DbDep, operator: OperatorDep, now: NowDep) -> AdminOrganizationOut:
    """Its users can no longer act in it (403 organization_inactive); its rows are kept."""
    organization = accounts.find_organization(db=db, ref=org)
    accounts.set_organization_active(db=db, organization=organization, active=False, now=now, by=operator)
    return organization_out(organization)


@router.post(
    "/users", status_code=201, summary="Create a user with a password", responses=_responses(400, 404, 413)
)
def create_user(body: UserIn, db: DbDep, operator: OperatorDep) -> AdminUserOut:
    """A new active user in the organizations named (none for an operator)."""
    user = accounts.create_user(
        db=db,
        user_name=body.userName,
        password=body.password,
        organizations=[accounts.find_organization(db=db, ref=ref) for ref in body.organizations],
        first_name=body.firstName,
        last_name=body.lastName,
        email=body.email,
        admin=body.role == "admin",
        operator=body.operator,
        by=operator,
    )
    return admin_user_out(user)


@router.get("/users", summary="List users", responses=_responses(400, 404))
def list_users(
    response: Response,
    db: DbDep,
    _operator: OperatorDep,
    organization: Annotated[str | None, Query(description="Only this organization's members")] = None,
    limit: OptionalText = None,
    offset: OptionalText = None,
) -> list[AdminUserOut]:
    """Every user (or one organization's members), oldest first, paged."""
    page_limit, page_offset = parse_paging(limit=limit, offset=offset)
    member_of = accounts.find_organization(db=db, ref=organization) if organization is not None else None
    query = accounts.users_query(organization=member_of)
    page = paginate(db=db, query=query, limit=page_limit, offset=page_offset)
    return _listed(response, page, admin_user_out)


@router.get("/users/{user}", summary="Get a user by uid or userName", responses=_responses(404))
def get_user(user: str, db: DbDep, _operator: OperatorDep) -> AdminUserOut:
    """One user with their memberships."""
    return admin_user_out(accounts.find_user(db=db, ref=user))


@router.patch(
    "/users/{user}",
    summary="Activate or deactivate a user, grant or revoke the operator role",
    responses=_responses(400, 404, 413),
)
def update_user(user: str, body: UserUpdate, db: DbDep, operator: OperatorDep, now: NowDep) -> AdminUserOut:
    """Deactivation and revoking the operator role end the user's sessions at once."""
    target = accounts.find_user(db=db, ref=user)
    if body.status is not None:
        accounts.set_user_status(db=db, user=target, status=body.status, now=now, by=operator)
    if body.operator is not None:
        accounts.set_operator(db=db, user=target, on=body.operator, now=now, by=operator)
    return admin_user_out(target)


@router.put(
    "/users/{user}/memberships",
    summary="Add a user to an organization with a role (or change the role)",
    responses=_responses(400, 404, 413),
)
def add_membership(
    user: str, body: MembershipIn, db: DbDep, operator: OperatorDep, now: NowDep
) -> AdminUserOut:
    """The user's memberships afterwards."""
    target = accounts.find_user(db=db, ref=user)
    organization = accounts.find_organization(db=db, ref=body.organization)
    accounts.add_membership(
        db=db, user=target, organization=organization, role=body.role, now=now, by=operator
    )
    return admin_user_out(target)


@router.delete(
    "/users/{user}/memberships/{org}", summary="Take a user out of an organization", responses=_responses(404)
)
def remove_membership(user: str, org: str, db: DbDep, operator: OperatorDep, now: NowDep) -> AdminUserOut:
    """The user's memberships afterwards."""
    target = accounts.find_user(db=db, ref=user)
    organization = accounts.find_organization(db=db, ref=org)
    accounts.remove_membership(db=db, user=target, organization=organization, now=now, by=operator)
    return admin_user_out(target)


@router.post(
    "/users/{user}/api-keys",
    status_code=201,
    summary="Create an API key for a user",
    responses=_responses(404, 413),
)
def create_api_key(user: str, body: ApiKeyIn, db: DbDep, operator: OperatorDep) -> ApiKeyCreatedOut:
    """The key's value is in this response only; it is stored hashed."""
    issued = accounts.create_api_key(
        db=db, user=accounts.find_user(db=db, ref=user), name=body.name, by=operator
    )
    return ApiKeyCreatedOut(**api_key_out(issued.api_key).model_dump(), apiKey=issued.plain_key)


@router.get("/users/{user}/api-keys", summary="List a user's API keys", responses=_responses(404))
def list_api_keys(user: str, db: DbDep, _operator: OperatorDep) -> list[ApiKeyOut]:
    """Newest first, without their values."""
    return [
        api_key_out(key) for key in accounts.list_api_keys(db=db, user=accounts.find_user(db=db, ref=user))
    ]


@router.delete("/api-keys/{uid}", summary="Revoke an API key", responses=_responses(404))
def revoke_api_key(uid: str, db: DbDep, operator: OperatorDep, now: NowDep) -> ApiKeyOut:
    """The key stops working at once; revoking it again changes nothing."""
    return api_key_out(accounts.revoke_api_key(db=db, uid=uid, now=now, by=operator))


@router.post(
    "/organizations/{org}/exports",
    status_code=201,
    summary="Publish an export: its record and the presigned POST form for its file",
    responses=_responses(400, 404, 413),
)
def create_export_form(
    request: Request,
    org: str,
    body: ExportFormIn,
    db: DbDep,
    operator: OperatorDep,
    settings: SettingsDep,
    store: StoreDep,
    now: NowDep,
) -> ExportFormOut:
    """The export is listed to the organization once the file posted with the form is complete."""
    form = forms.create_export_form(
        db=db,
        store=store,
        bucket=settings.exports_bucket,
        organization=accounts.find_organization(db=db, ref=org),
        product_key=body.productKey,
        order_name=body.orderName,
        base_url=public_base_url(request, settings),
        ttl_seconds=settings.upload_form_ttl_seconds,
        max_size=settings.max_upload_bytes,
        now=now,
        by=operator,
    )
    return ExportFormOut(export=admin_export_out(form.export), url=form.url, fields=form.fields)


@router.get(
    "/organizations/{org}/exports",
    summary="List an organization's exports in every state",
    responses=_responses(400, 404),
)
def list_exports(
    response: Response,
    org: str,
    db: DbDep,
    _operator: OperatorDep,
    limit: OptionalText = None,
    offset: OptionalText = None,
) -> list[AdminExportOut]:
    """Newest first: awaiting their file, published, withdrawn and expired ones."""
    page_limit, page_offset = parse_paging(limit=limit, offset=offset)
    context = OrgContext(user=None, organization=accounts.find_organization(db=db, ref=org))
    page = exports.list_exports(
        db=db,
        org=context,
        status=None,
        product_key=None,
        limit=page_limit,
        offset=page_offset,
        include_expired=True,
    )
    return _listed(response, page, admin_export_out)


@router.get(
    "/organizations/{org}/exports/{uid}",
    summary="Get an export of an organization",
    responses=_responses(404),
)
def get_export(
    org: str, uid: str, db: DbDep, _operator: OperatorDep, settings: SettingsDep, store: StoreDep, now: NowDep
) -> AdminExportOut:
    """One export; on S3 its file's arrival is looked for first."""
    export = forms.find_export(db=db, organization=accounts.find_organization(db=db, ref=org), uid=uid)
    forms.reconcile_export(db=db, store=store, bucket=settings.exports_bucket, export=export, now=now)
    return admin_export_out(export)


@router.post(
    "/organizations/{org}/exports/{uid}/withdraw",
    summary="Withdraw an export",
    responses=_responses(404, 409),
)
def withdraw_export(org: str, uid: str, db: DbDep, operator: OperatorDep, now: NowDep) -> AdminExportOut:
    """No longer listed to the organization; its download URLs, even issued ones, are refused."""
    export = forms.find_export(db=db, organization=accounts.find_organization(db=db, ref=org), uid=uid)
    return admin_export_out(forms.withdraw_export(db=db, export=export, now=now, by=operator))


@router.post(
    "/organizations/{org}/exports/file",
    status_code=201,
    summary="Publish a small export sent whole in the request body (a CSV file)",
    openapi_extra=_CSV_BODY,
    responses=_responses(400, 404, 408, 413),
)
def publish_export_file(
    org: str,
    body: FileBody,
    db: DbDep,
    operator: OperatorDep,
    settings: SettingsDep,
    store: StoreDep,
    now: NowDep,
    productKey: Annotated[str, Query(max_length=40, description="e.g. prospect or score-reporter")],
    orderName: Annotated[str, Query(max_length=200, description="Order name used in the file name")] = "",
) -> AdminExportOut:
    """Listed to the organization at once; the body is at most DATALAB_ADMIN_FILE_MAX_BYTES."""
    organization = accounts.find_organization(db=db, ref=org)
    with spooled_body(body, temp_dir=settings.temp_dir, name="export.csv") as source:
        export = exports.publish_export(
            db=db,
            store=store,
            bucket=settings.exports_bucket,
            organization=organization,
            product_key=productKey,
            source=source,
            order_name=orderName,
            now=now,
            created_by=operator,
        )
    return admin_export_out(export)


@router.post(
    "/students",
    summary="Load the student database from a CSV file sent in the request body",
    openapi_extra=_CSV_BODY,
    responses=_responses(400, 408, 413),
)
def load_students(
    body: FileBody,
    db: DbDep,
    operator: OperatorDep,
    settings: SettingsDep,
    now: NowDep,
    train: Annotated[bool, Query(description="Train the eMatch matching model afterwards")] = True,
) -> StudentsLoadOut:
    """Insert or update students by StudentKey, all or nothing (what `datalab admin students load` does)."""
    # Loaded here, not with the app: the students' packages (polars, pyarrow, splink, duckdb) take
    # longer to import than the rest of the server, and only this route and the pipeline need them.
    from datalab.students.matching import matching_dir  # noqa: PLC0415
    from datalab.students.service import load_and_train  # noqa: PLC0415

    with spooled_body(body, temp_dir=settings.temp_dir, name="students.csv") as path:
        result, model = load_and_train(
            db=db,
            path=path,
            now=now,
            snapshot_dir=matching_dir(settings),
            train=train,
            pairs=settings.ematch_training_pairs,
            by=operator,
        )
    return StudentsLoadOut(
        inserted=result.inserted,
        updated=result.updated,
        model=StudentModelOut(id=model.model_id, students=model.student_count) if model is not None else None,
    )
