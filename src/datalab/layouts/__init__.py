"""Per-product Standard Import Layouts as data: fields in order, widths, required flags, cleansing rules.

One JSON definition per product ships next to this module (``enrollment.json``, ``affinity.json``,
``ematch.json``); ``legacy`` is an alias of ``affinity`` that callers resolve. The cleansing rules live in
``datalab.layouts.cleansing`` (``clean_value``, ``RULES``, ``Cleaned``, ``FieldWarning``).
"""

from datalab.layouts.definitions import (
    PRODUCTS,
    load_layout,
    load_layout_file,
    match_headers,
    missing_required,
    normalize_header,
)
from datalab.layouts.model import Layout, LayoutError, LayoutField

__all__ = [
    "PRODUCTS",
    "Layout",
    "LayoutError",
    "LayoutField",
    "load_layout",
    "load_layout_file",
    "match_headers",
    "missing_required",
    "normalize_header",
]
