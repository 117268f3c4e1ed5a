"""File names of published exports, following upstream's conventions."""

from __future__ import annotations

import re
from datetime import datetime

FILE_TYPE_LABELS = {
    "aos": "AOS",
    "prospect": "Prospect",
    "affinity": "Affinity",
    "ematch": "eMatch",
    "score-reporter": "ACT",
    "declared": "Declared",
    "inquiry": "Inquiry",
    "enrollment-marketing": "EnrollmentMarketing",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _clean(text: str, *, space: str) -> str:
    return _UNSAFE.sub("", re.sub(r"\s+", space, text.strip())).strip("._-")


def export_file_name(
    *, product_key: str, organization_name: str, fice: str, order_name: str, at: datetime
) -> str:
    """File name: ACT-[ORG]-[MMDDYYYY]-[HMMSS].csv or [FileType]_[YYYYMMDD]_[FICE]_[Order].csv."""
    if product_key == "score-reporter":
        organization = _clean(organization_name.upper(), space="-") or "ORGANIZATION"
        return f"ACT-{organization}-{at:%m%d%Y}-{at.hour}{at:%M%S}.csv"
    label = FILE_TYPE_LABELS[product_key]
    order = _clean(order_name, space="_") or f"{label}_{at:%b%Y}"
    return f"{label}_{at:%Y%m%d}_{_clean(fice, space='_')}_{order}.csv"
