"""Mapping an upload's columns (and coded values) to its product's layout."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from datalab.domain_errors import Unprocessable
from datalab.layouts import load_layout
from datalab.uploads.models import Upload
from datalab.web.pages.common import (
    CODED_RULES,
    BodyDep,
    PageRoute,
    ReadSessionDep,
    ReadUploadServiceDep,
    SessionDep,
    UploadServiceDep,
    checked_form,
    one,
    render,
)

router = APIRouter(route_class=PageRoute)


def _distinct_values(meta: dict[str, Any]) -> dict[str, list[str]]:
    """The distinct values of each column: all of them for coded columns, else those of the sample."""
    seen: dict[str, list[str]] = {
        header: list(values) for header, values in meta.get("codedValues", {}).items()
    }
    for row in meta.get("data", []):
        for header, value in row.items():
            if header in meta.get("codedValues", {}):
                continue
            values = seen.setdefault(header, [])
            text = str(value).strip()
            if text and text not in values and len(values) < 25:
                values.append(text)
    return seen


def _mapping_context(upload: Upload, errors: list[str], chosen: dict[str, str] | None) -> dict[str, Any]:
    meta = upload.meta or {}
    layout = load_layout(upload.product_type)
    suggested = {str(entry["field"]): entry.get("fileHeader") or "" for entry in meta.get("headersMap", [])}
    selected = chosen if chosen is not None else suggested
    headers = meta.get("headers", [])
    samples = _distinct_values(meta)
    return {
        "upload": upload,
        "layout": layout,
        "headers": headers,
        "samples": samples,
        "samples_json": json.dumps(samples),
        "selected": selected,
        "coded": [f for f in layout.fields if f.rule in CODED_RULES],
        "errors": errors,
        "require_one_of": [", ".join(group) for group in layout.require_one_of],
    }


@router.get("/uploads/{uid}/mapping")
def mapping_page(
    request: Request, uid: str, session: ReadSessionDep, service: ReadUploadServiceDep
) -> HTMLResponse:
    """Map the file's columns (and coded values) to the product's layout."""
    upload = service.get(uid)
    return render(request, "mapping.html", session, **_mapping_context(upload, [], None))


@router.post("/uploads/{uid}/mapping")
def submit_mapping(
    request: Request, uid: str, session: SessionDep, body: BodyDep, service: UploadServiceDep
) -> Response:
    """Save the mapping for the organization and product, and queue the file."""
    form = checked_form(session, body)
    upload = service.get(uid)
    fields_map = {
        name.removeprefix("field:"): values[0]
        for name, values in form.items()
        if name.startswith("field:") and values[0]
    }
    values_map: dict[str, dict[str, str]] = {}
    for name, values in form.items():
        if not name.startswith("value:"):
            continue
        _prefix, field, index = name.split(":", 2)
        source = one(form, f"source:{field}:{index}")
        if values[0].strip() and source:
            values_map.setdefault(field, {})[source] = values[0].strip()
    try:
        service.process(uid, {"fieldsMap": fields_map, "valuesMap": values_map})
    except Unprocessable as refused:
        problems = (
            [str(p["msg"]) for p in refused.detail] if isinstance(refused.detail, list) else [refused.message]
        )
        response = render(request, "mapping.html", session, **_mapping_context(upload, problems, fields_map))
        response.status_code = 422
        return response
    return RedirectResponse(f"/datacenter/uploads/{uid}", status_code=303)
