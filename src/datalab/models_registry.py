"""Imports every table module so the metadata is complete (for migrations and their tests)."""

from __future__ import annotations

from sqlalchemy import MetaData

from datalab.accounts import models as accounts_models
from datalab.audit import models as audit_models
from datalab.db import Base
from datalab.digests import models as digests_models
from datalab.exports import models as exports_models
from datalab.pipeline import models as pipeline_models
from datalab.records import models as records_models
from datalab.students import models as students_models
from datalab.uploads import models as uploads_models
from datalab.web import models as web_models
from datalab.webhooks import models as webhooks_models

TABLE_MODULES = (
    accounts_models,
    exports_models,
    uploads_models,
    pipeline_models,
    students_models,
    records_models,
    web_models,
    audit_models,
    webhooks_models,
    digests_models,
)


def metadata() -> MetaData:
    """The metadata holding every table of the project."""
    return Base.metadata
