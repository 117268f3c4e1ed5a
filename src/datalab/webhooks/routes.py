"""HTTP handlers of the webhooks API (an organization's admins only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from datalab.deps import ApiCallDep, DbDep, NowDep, OrgDep
from datalab.errors import ORG_SCOPED_ERRORS, error_responses
from datalab.pagination import parse_paging
from datalab.scoping import OrgContext
from datalab.webhooks import service
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
def create_webhook(body: WebhookCreate, db: DbDep, org: OrgDep, now: NowDep) -> CreatedWebhookOut:
    """Add a webhook; the answer holds its signing secret, which is never shown again."""
    created = service.create_webhook(
        db=db,
        org=org,
        url=body.url,
        events=body.events,
        active=body.active,
        description=body.description,
        now=now,
    )
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
def update_webhook(uid: str, body: WebhookUpdate, db: DbDep, org: OrgDep, now: NowDep) -> WebhookOut:
    """Change the url, events, active flag or description (the fields sent)."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    return webhook_out(service.update_webhook(db=db, org=org, uid=uid, changes=changes, now=now))


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
