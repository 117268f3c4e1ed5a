"""Data Center: the pages people use to download exports, upload files, map fields and manage keys, and
the operators' pages.

Server-rendered (Jinja2), sharing the service layer with the API. Every page needs a signed-in session
(an HttpOnly, SameSite=Lax cookie, Secure over HTTPS) and every form carries the session's CSRF token,
except the digest's unsubscribe page, which its signed link allows (see `unsubscribe`).
Pages work without JavaScript except the upload itself, which the browser sends straight to the
presigned POST form.
"""

from __future__ import annotations

from fastapi import APIRouter

from datalab.web.pages import (
    admin,
    api_keys,
    exports,
    field_mapping,
    saved_mappings,
    signin,
    unsubscribe,
    uploads,
)
from datalab.web.pages.common import STATIC_DIR

__all__ = ["STATIC_DIR", "router"]

router = APIRouter(include_in_schema=False)
# In the order the pages were always matched in.
for section in (signin, exports, uploads, field_mapping, saved_mappings, api_keys, admin, unsubscribe):
    router.include_router(section.router, prefix="/datacenter")
