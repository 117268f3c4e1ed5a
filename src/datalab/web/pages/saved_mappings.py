"""The organization's saved mappings: list, detail, rename, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from datalab.deps import DbDep, NowDep, ReadDbDep
from datalab.uploads import mappings
from datalab.web import service as web
from datalab.web.pages.common import BodyDep, PageRoute, ReadSessionDep, SessionDep, checked_form, one, render

router = APIRouter(route_class=PageRoute)


@router.get("/mappings")
def mappings_page(request: Request, session: ReadSessionDep, db: ReadDbDep) -> HTMLResponse:
    """The organization's saved mappings."""
    return render(
        request, "mappings.html", session, mappings=mappings.list_mappings(db=db, org=web.org_of(session))
    )


@router.get("/mappings/{uid}")
def mapping_detail(request: Request, uid: str, session: ReadSessionDep, db: ReadDbDep) -> HTMLResponse:
    """One saved mapping: its headers, fields and value mappings."""
    mapping = mappings.get_mapping(db=db, org=web.org_of(session), uid=uid)
    return render(request, "mapping_detail.html", session, mapping=mapping)


@router.post("/mappings/{uid}/rename")
def rename_mapping(uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """Rename a saved mapping."""
    form = checked_form(session, body)
    mappings.rename_mapping(db=db, org=web.org_of(session), uid=uid, name=one(form, "name"), now=now)
    return RedirectResponse(f"/datacenter/mappings/{uid}", status_code=303)


@router.post("/mappings/{uid}/delete")
def delete_mapping(uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """Delete a saved mapping."""
    checked_form(session, body)
    mappings.delete_mapping(db=db, org=web.org_of(session), uid=uid, now=now)
    return RedirectResponse("/datacenter/mappings", status_code=303)
