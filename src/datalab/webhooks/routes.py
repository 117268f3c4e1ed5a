"""The webhooks API and Data Center page (an organization's admins only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from datalab.audit.service import is_admin
from datalab.deps import ApiCallDep, DbDep, NowDep, OrgDep, SettingsDep
from datalab.errors import ORG_SCOPED_ERRORS, error_responses
from datalab.pagination import parse_paging
from datalab.scoping import OrgContext
from datalab.web import service as web
from datalab.web.models import WebSession
from datalab.web.pages.common import TEMPLATES, BodyDep, PageRoute, SessionDep, checked_form, one, render
from datalab.webhooks import service
from datalab.webhooks.models import EVENT_TYPES
from datalab.webhooks.schemas import (
    DELIVERY_LIST,
    WEBHOOK_LIST,
    CreatedWebhookOut,
    DeliveryOut,
    WebhookCreate,
    WebhookOut,
    WebhookUpdate,
    delivery_out,
    webhook_out,
)
from datalab.webhooks.sealing import SecretBox
from datalab.webhooks.service import CreatedWebhook

router = APIRouter(prefix="/webhooks", tags=["Webhooks"])

OptionalText = Annotated[str | None, Query()]
PAGE_SIZE = 50
_ADMIN_ONLY = "Not an admin of the organization"
_ERRORS = error_responses(*ORG_SCOPED_ERRORS, s403=_ADMIN_ONLY)
_ONE_ERRORS = error_responses(
    *ORG_SCOPED_ERRORS, 404, s403=_ADMIN_ONLY, s404="No such webhook in this organization"
)


@router.get(
    "",
    operation_id="listWebhooks",
    response_model=list[WebhookOut],
    summary="The organization's webhooks",
    responses=_ERRORS,
)
async def list_webhooks(api: ApiCallDep) -> Response:
    """Every webhook of the organization, oldest first (secrets are not shown)."""

    def work(db: Session, org: OrgContext, _now: datetime) -> bytes:
        return WEBHOOK_LIST.dump_json(
            [webhook_out(webhook) for webhook in service.list_webhooks(db=db, org=org)]
        )

    return Response(await api.read(work), media_type="application/json")


@router.post(
    "",
    operation_id="createWebhook",
    status_code=201,
    response_model=CreatedWebhookOut,
    summary="Add a webhook",
    responses=error_responses(*ORG_SCOPED_ERRORS, s403=_ADMIN_ONLY, s422="Invalid url or events"),
)
def create_webhook(
    body: WebhookCreate, db: DbDep, org: OrgDep, settings: SettingsDep, now: NowDep
) -> CreatedWebhookOut:
    """Add a webhook; the answer holds its signing secret, which is never shown again."""
    created = service.create_webhook(
        db=db,
        org=org,
        url=body.url,
        events=body.events,
        active=body.active,
        description=body.description,
        box=SecretBox(settings.encryption_key),
        allow_private=settings.webhook_private_targets_allowed,
        now=now,
    )
    return created_out(created)


def created_out(created: CreatedWebhook) -> CreatedWebhookOut:
    """A webhook with its secret, shown this once."""
    return CreatedWebhookOut(**webhook_out(created.webhook).model_dump(), secret=created.secret)


@router.get(
    "/{uid}",
    operation_id="getWebhook",
    response_model=WebhookOut,
    summary="One webhook",
    responses=_ONE_ERRORS,
)
async def get_webhook(uid: str, api: ApiCallDep) -> WebhookOut:
    """A webhook of the organization."""

    def work(db: Session, org: OrgContext, _now: datetime) -> WebhookOut:
        return webhook_out(service.get_webhook(db=db, org=org, uid=uid))

    return await api.read(work)


@router.patch(
    "/{uid}",
    operation_id="updateWebhook",
    response_model=WebhookOut,
    summary="Change a webhook",
    responses=error_responses(*ORG_SCOPED_ERRORS, 404, s403=_ADMIN_ONLY, s422="Invalid url or events"),
)
def update_webhook(
    uid: str, body: WebhookUpdate, db: DbDep, org: OrgDep, settings: SettingsDep, now: NowDep
) -> WebhookOut:
    """Change the url, events, active flag or description (the fields sent)."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    allow_private = settings.webhook_private_targets_allowed
    return webhook_out(
        service.update_webhook(db=db, org=org, uid=uid, changes=changes, allow_private=allow_private, now=now)
    )


@router.post(
    "/{uid}/rotate-secret",
    operation_id="rotateWebhookSecret",
    response_model=CreatedWebhookOut,
    summary="Give a webhook a new secret",
    responses=_ONE_ERRORS,
)
def rotate_secret(uid: str, db: DbDep, org: OrgDep, settings: SettingsDep, now: NowDep) -> CreatedWebhookOut:
    """Issue a new signing secret, shown in this answer only; every attempt from now on is signed with it
    and the old one signs nothing more."""
    box = SecretBox(settings.encryption_key)
    return created_out(service.rotate_secret(db=db, org=org, uid=uid, box=box, now=now))


@router.delete(
    "/{uid}", operation_id="deleteWebhook", status_code=204, summary="Remove a webhook", responses=_ONE_ERRORS
)
def delete_webhook(uid: str, db: DbDep, org: OrgDep, now: NowDep) -> Response:
    """Remove a webhook with its deliveries; nothing more is sent to it."""
    service.delete_webhook(db=db, org=org, uid=uid, now=now)
    return Response(status_code=204)


@router.post(
    "/{uid}/test",
    operation_id="testWebhook",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a test event",
    responses=_ONE_ERRORS,
)
def test_webhook(uid: str, db: DbDep, org: OrgDep, now: NowDep) -> DeliveryOut:
    """Queue a `webhook.test` event to the webhook; follow it in its deliveries."""
    return delivery_out(service.send_test_event(db=db, org=org, uid=uid, now=now))


@router.get(
    "/{uid}/deliveries",
    operation_id="listWebhookDeliveries",
    response_model=list[DeliveryOut],
    summary="A webhook's delivery log",
    responses=_ONE_ERRORS,
)
async def list_deliveries(
    uid: str, api: ApiCallDep, limit: OptionalText = None, offset: OptionalText = None
) -> Response:
    """Newest first, 50 per page by default, each with its attempts (status, error, duration);
    `total-count` gives the number of deliveries."""

    def work(db: Session, org: OrgContext, _now: datetime) -> tuple[bytes, int]:
        page_limit, page_offset = parse_paging(limit=limit, offset=offset)
        page = service.list_deliveries(
            db=db, org=org, uid=uid, limit=PAGE_SIZE if page_limit is None else page_limit, offset=page_offset
        )
        return DELIVERY_LIST.dump_json([delivery_out(delivery) for delivery in page.items]), page.total

    body, total = await api.read(work)
    return Response(body, media_type="application/json", headers={"total-count": str(total)})


# --- Data Center ------------------------------------------------------------------------------------

pages = APIRouter(prefix="/datacenter", route_class=PageRoute, include_in_schema=False)
RECENT_DELIVERIES = 10


def _webhooks_page(
    request: Request,
    session: WebSession,
    db: Session,
    created: CreatedWebhook | None,
    *,
    rotated: bool = False,
) -> HTMLResponse:
    org = web.org_of(session)
    hooks = service.list_webhooks(db=db, org=org)
    recent = {
        webhook.uid: service.list_deliveries(
            db=db, org=org, uid=webhook.uid, limit=RECENT_DELIVERIES, offset=0
        ).items
        for webhook in hooks
    }
    return render(
        request,
        "webhooks.html",
        session,
        shows_secret=created is not None,
        webhooks=hooks,
        recent=recent,
        created=created,
        rotated=rotated,
        event_types=EVENT_TYPES,
    )


@pages.get("/webhooks")
def webhooks_page(request: Request, session: SessionDep, db: DbDep) -> HTMLResponse:
    """The organization's webhooks and their latest deliveries (its admins only)."""
    return _webhooks_page(request, session, db, None)


@pages.post("/webhooks")
def create_webhook_page(
    request: Request, session: SessionDep, body: BodyDep, db: DbDep, settings: SettingsDep, now: NowDep
) -> HTMLResponse:
    """Add a webhook; its secret is shown on this page once and never again."""
    form = checked_form(session, body)
    created = service.create_webhook(
        db=db,
        org=web.org_of(session),
        url=one(form, "url"),
        events=form.get("events", []),
        active=True,
        description=one(form, "description"),
        box=SecretBox(settings.encryption_key),
        allow_private=settings.webhook_private_targets_allowed,
        now=now,
    )
    return _webhooks_page(request, session, db, created)


@pages.post("/webhooks/{uid}/rotate-secret")
def rotate_secret_page(
    uid: str,
    request: Request,
    session: SessionDep,
    body: BodyDep,
    db: DbDep,
    settings: SettingsDep,
    now: NowDep,
) -> HTMLResponse:
    """Give a webhook a new secret, shown on this page once."""
    checked_form(session, body)
    box = SecretBox(settings.encryption_key)
    rotated = service.rotate_secret(db=db, org=web.org_of(session), uid=uid, box=box, now=now)
    return _webhooks_page(request, session, db, rotated, rotated=True)


@pages.post("/webhooks/{uid}/test")
def test_webhook_page(
    uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Send a test event to a webhook; its delivery shows on the page."""
    checked_form(session, body)
    service.send_test_event(db=db, org=web.org_of(session), uid=uid, now=now)
    return RedirectResponse("/datacenter/webhooks", status_code=303)


@pages.post("/webhooks/{uid}/delete")
def delete_webhook_page(
    uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Remove a webhook."""
    checked_form(session, body)
    service.delete_webhook(db=db, org=web.org_of(session), uid=uid, now=now)
    return RedirectResponse("/datacenter/webhooks", status_code=303)


def webhooks_visible(session: WebSession) -> bool:
    """Whether the signed-in user sees the Webhooks page (for the navigation)."""
    return session.organization is not None and is_admin(web.org_of(session))


TEMPLATES.env.globals["webhooks_visible"] = webhooks_visible
