"""Response shapes of the File Export API, field for field as the documentation shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from datalab.accounts.models import User
from datalab.exports.models import Delivery, Export


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, upstream's timestamp format."""
    return int(moment.timestamp() * 1000)


class CreatedBy(BaseModel):
    uid: str
    name: str
    type: str


class Created(BaseModel):
    createdBy: CreatedBy
    createdAt: int


class DeliveryDownload(BaseModel):
    downloadedBy: str
    date: int


class DeliveryOut(BaseModel):
    uid: str
    triggeredBy: str = "Client"
    method: str
    email: str
    date: int
    combined: bool = False
    fileType: str
    download: DeliveryDownload
    created: Created


class ExportOut(BaseModel):
    uid: str = Field(description="The file UID used in the download call")
    fice: str
    organizationUid: str
    productKey: str
    purchaseItems: list[dict[str, Any]]
    status: str
    listGenerated: bool
    listPath: str
    quantity: int
    costInPoints: int
    costInDollars: float
    date: int
    deliveries: list[DeliveryOut]
    created: Created
    isExpired: bool
    overdueEmailSentAt: int | None
    isContinuous: bool


# Serializes a list page straight to JSON bytes (what the list route sends).
EXPORT_LIST = TypeAdapter(list[ExportOut])


class DownloadUrlOut(BaseModel):
    downloadUrl: str = Field(
        description="One-time signed URL; fetch it with no headers within about a minute"
    )


def _created_by(user: User | None) -> CreatedBy:
    if user is None:
        return CreatedBy(uid="", name="", type="")
    return CreatedBy(uid=user.uid, name=user.display_name, type=user.type)


def delivery_out(delivery: Delivery) -> DeliveryOut:
    """A delivery as the export list shows it."""
    moment = epoch_ms(delivery.delivered_at)
    user = delivery.user
    return DeliveryOut(
        uid=delivery.uid,
        method=delivery.method,
        email=user.email if user else "",
        date=moment,
        fileType=delivery.file_type,
        download=DeliveryDownload(downloadedBy=user.display_name if user else "", date=moment),
        created=Created(createdBy=_created_by(user), createdAt=moment),
    )


def export_out(export: Export, *, now: datetime) -> ExportOut:
    """An export as the list endpoint shows it."""
    created_at = epoch_ms(export.created_at)
    return ExportOut(
        uid=export.uid,
        fice=export.organization.fice,
        organizationUid=export.organization.uid,
        productKey=export.product_key,
        purchaseItems=[],
        status=export.status,
        listGenerated=True,
        listPath=export.list_path,
        quantity=export.quantity,
        costInPoints=export.cost_in_points,
        costInDollars=float(export.cost_in_dollars),
        date=created_at,
        deliveries=[delivery_out(delivery) for delivery in export.deliveries],
        created=Created(createdBy=_created_by(export.created_by), createdAt=created_at),
        isExpired=export.expires_at is not None and export.expires_at <= now,
        overdueEmailSentAt=epoch_ms(export.overdue_email_sent_at) if export.overdue_email_sent_at else None,
        isContinuous=export.is_continuous,
    )


def _display_name(first_name: str | None, last_name: str | None, user_name: str | None) -> str:
    return f"{first_name} {last_name}".strip() or (user_name or "")


def _user_fields(
    uid: str | None, first: str | None, last: str | None, user_name: str | None, kind: str | None
) -> dict[str, str]:
    if uid is None:
        return {"uid": "", "name": "", "type": ""}
    return {"uid": uid, "name": _display_name(first, last, user_name), "type": kind or ""}


def delivery_row_out(row: Any) -> dict[str, Any]:
    """A delivery row (see exports.service.export_list_json) shaped exactly like `delivery_out`."""
    moment = epoch_ms(row.delivered_at)
    created_by = _user_fields(row.user_uid, row.first_name, row.last_name, row.user_name, row.user_type)
    return {
        "uid": row.uid,
        "triggeredBy": "Client",
        "method": row.method,
        "email": (row.email or "") if row.user_uid is not None else "",
        "date": moment,
        "combined": False,
        "fileType": row.file_type,
        "download": {"downloadedBy": created_by["name"], "date": moment},
        "created": {"createdBy": created_by, "createdAt": moment},
    }


def export_row_out(
    row: Any, *, fice: str, organization_uid: str, deliveries: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """An export row (see exports.service.export_list_json) shaped exactly like `export_out`."""
    created_at = epoch_ms(row.created_at)
    return {
        "uid": row.uid,
        "fice": fice,
        "organizationUid": organization_uid,
        "productKey": row.product_key,
        "purchaseItems": [],
        "status": row.status,
        "listGenerated": True,
        "listPath": row.list_path,
        "quantity": row.quantity,
        "costInPoints": row.cost_in_points,
        "costInDollars": float(row.cost_in_dollars),
        "date": created_at,
        "deliveries": deliveries,
        "created": {
            "createdBy": _user_fields(
                row.user_uid, row.first_name, row.last_name, row.user_name, row.user_type
            ),
            "createdAt": created_at,
        },
        "isExpired": row.expires_at is not None and row.expires_at <= now,
        "overdueEmailSentAt": epoch_ms(row.overdue_email_sent_at) if row.overdue_email_sent_at else None,
        "isContinuous": row.is_continuous,
    }
