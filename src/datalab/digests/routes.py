"""The signed-in user's e-mail digest subscription."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from sqlalchemy.orm import Session

from datalab.deps import ApiCallDep, DbDep, NowDep, OrgDep
from datalab.digests import service
from datalab.digests.schemas import DigestSubscription
from datalab.errors import ORG_SCOPED_ERRORS, error_responses
from datalab.scoping import OrgContext

router = APIRouter(prefix="/email-digest", tags=["E-mail digests"])


@router.get(
    "",
    operation_id="getEmailDigest",
    response_model=DigestSubscription,
    summary="Whether you get e-mail digests",
    responses=error_responses(*ORG_SCOPED_ERRORS),
)
async def get_subscription(api: ApiCallDep) -> DigestSubscription:
    """Whether the signed-in user gets one e-mail per digest period listing new exports."""

    def work(db: Session, org: OrgContext, _now: datetime) -> DigestSubscription:
        return DigestSubscription(subscribed=service.is_subscribed(db=db, org=org))

    return await api.read(work)


@router.put(
    "",
    operation_id="setEmailDigest",
    response_model=DigestSubscription,
    summary="Turn your e-mail digests on or off",
    responses=error_responses(*ORG_SCOPED_ERRORS),
)
def set_subscription(body: DigestSubscription, db: DbDep, org: OrgDep, now: NowDep) -> DigestSubscription:
    """Turn the signed-in user's digests on or off (in every organization); turning them off also drops
    the exports waiting for the next digest."""
    subscribed = service.set_subscribed(db=db, org=org, subscribed=body.subscribed, now=now)
    return DigestSubscription(subscribed=subscribed)
