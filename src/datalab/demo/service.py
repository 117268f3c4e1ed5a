"""Seeding the demo organization: a service account, an API key and exports of every product."""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.accounts import service as accounts
from datalab.accounts.models import ApiKey, Organization, User
from datalab.accounts.security import API_KEY_ALPHABET, API_KEY_LENGTH, hash_api_key
from datalab.demo.synthetic import export_header, export_rows, write_export_csv
from datalab.exports.models import PRODUCT_KEYS, Export
from datalab.exports.service import publish_export
from datalab.scoping import OrgContext, scoped
from datalab.settings import Settings
from datalab.storage.base import ObjectStore
from datalab.students.models import Student
from datalab.students.service import load_students

DEMO_ORGANIZATION = "Sample University"
DEMO_FICE = "001024"
DEMO_STATE = "MO"
DEMO_USER = "api-service@sample-university.edu"
# Two files per product, published a week apart, so lists and filters have something to show.
DEMO_FILES_PER_PRODUCT = 2
DEMO_ROWS = {"score-reporter": 186}
DEMO_DEFAULT_ROWS = 250
DEMO_STUDENTS = 2000
# The demo's students are the people of a synthetic inquiry list, so eMatch files built from the demo's
# export files find them.
DEMO_STUDENT_SEED = 1000 * PRODUCT_KEYS.index("inquiry")


@dataclass(frozen=True)
class DemoCredentials:
    """What a developer needs to call the demo: printed by `datalab demo --json`."""

    apiKey: str
    userName: str
    password: str
    organizationUid: str
    baseUrl: str


def _derived(settings: Settings, purpose: str, length: int) -> str:
    # Derived from the deployment's secret: stable across runs (the seeding is idempotent and prints
    # the same credentials again) yet unguessable wherever the secret is real.
    digest = hmac.new(settings.secret_key.encode(), f"demo:{purpose}".encode(), hashlib.sha512).digest()
    return "".join(API_KEY_ALPHABET[byte % len(API_KEY_ALPHABET)] for byte in digest[:length])


def demo_students(*, today: date) -> Iterator[dict[str, str]]:
    """The demo's student database as student-file rows (deterministic)."""
    header = export_header("inquiry")
    for row in export_rows("inquiry", count=DEMO_STUDENTS, seed=DEMO_STUDENT_SEED, today=today):
        person = dict(zip(header, row, strict=True))
        yield {
            "StudentKey": person["STUDENTPIN"],
            "FirstName": person["FIRSTNAME"],
            "LastName": person["LASTNAME"],
            "BirthDate": person["BIRTHDATE"],
            "Email": person["EMAIL"],
            "ZipCode": person["POSTALCODE"],
            "StateCode": person["STATE"],
            "HSGradYear": person["GRADUATIONYEAR"],
        }


def _demo_organization(db: Session) -> Organization:
    organization = db.scalar(select(Organization).where(Organization.fice == DEMO_FICE))
    if organization is None:
        organization = accounts.create_organization(
            db=db, name=DEMO_ORGANIZATION, fice=DEMO_FICE, state_code=DEMO_STATE
        )
    return organization


def _demo_user(*, db: Session, organization: Organization, password: str, now: datetime) -> User:
    user = accounts.get_user(db=db, user_name=DEMO_USER)
    if user is None:
        user = accounts.create_user(
            db=db,
            user_name=DEMO_USER,
            password=password,
            organizations=[organization],
            first_name="API",
            last_name="Service Account",
            attributes=[{"key": "serviceAccount", "value": True}],
            admin=True,
        )
    elif any(m.organization_id == organization.id and m.role != "admin" for m in user.memberships):
        # A sandbox seeded before organizations had admins: its account reads the audit trail too.
        accounts.set_membership_role(db=db, user=user, organization=organization, role="admin", now=now)
    return user


def _publish_demo_exports(
    *, db: Session, store: ObjectStore, settings: Settings, organization: Organization, now: datetime
) -> None:
    """Generate and publish the files of every product, published a week apart up to ``now``."""
    temp_dir = settings.temp_dir
    temp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=temp_dir) as work:
        for product_index, product_key in enumerate(PRODUCT_KEYS):
            for copy in range(DEMO_FILES_PER_PRODUCT):
                published_at = now - timedelta(
                    days=7 * (DEMO_FILES_PER_PRODUCT - copy), minutes=product_index
                )
                source = Path(work) / f"{product_key}-{copy}.csv"
                write_export_csv(
                    source,
                    product_key,
                    count=DEMO_ROWS.get(product_key, DEMO_DEFAULT_ROWS) + 17 * copy,
                    seed=1000 * product_index + copy,
                    today=published_at.date(),
                )
                publish_export(
                    db=db,
                    store=store,
                    bucket=settings.exports_bucket,
                    organization=organization,
                    product_key=product_key,
                    source=source,
                    order_name=""
                    if product_key == "score-reporter"
                    else f"Demo {published_at:%b%Y} {copy + 1}",
                    now=published_at,
                )


def seed_demo(
    *, db: Session, store: ObjectStore, settings: Settings, base_url: str, now: datetime
) -> DemoCredentials:
    """Create the demo organization, account, key, exports and students unless they exist."""
    password = _derived(settings, "password", 20)
    plain_key = _derived(settings, "api-key", API_KEY_LENGTH)
    organization = _demo_organization(db)
    user = _demo_user(db=db, organization=organization, password=password, now=now)
    key_hash = hash_api_key(plain_key)
    if db.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash)) is None:
        db.add(ApiKey(user=user, name="demo", prefix=plain_key[:8], key_hash=key_hash))
    owner = OrgContext(user=None, organization=organization)
    if db.scalar(scoped(Export, owner).with_only_columns(Export.id).limit(1)) is None:
        _publish_demo_exports(db=db, store=store, settings=settings, organization=organization, now=now)
    if db.scalar(select(Student.id).limit(1)) is None:
        load_students(db=db, rows=demo_students(today=now.date()), now=now)
    db.flush()
    return DemoCredentials(
        apiKey=plain_key,
        userName=DEMO_USER,
        password=password,
        organizationUid=organization.uid,
        baseUrl=base_url,
    )
