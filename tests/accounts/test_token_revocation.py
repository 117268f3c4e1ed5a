"""A revocation refuses every token issued before it, even one issued in the same second."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from datalab.accounts.errors import InvalidSessionToken
from datalab.accounts.security import issue_token
from datalab.accounts.service import create_organization, create_user, set_user_status, user_from_token
from datalab.db import make_engine, make_session_factory
from datalab.settings import Settings
from tests.support.databases import DatabaseFactory

SECRET = "a-secret-key-for-token-tests-0123456789"


@pytest.fixture
def db(database_factory: DatabaseFactory, tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(database_factory.migrated_url(tmp_path))
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def test_a_token_issued_earlier_in_the_revocations_second_is_refused(db: Session) -> None:
    settings = Settings(secret_key=SECRET, home=Path("unused"))
    organization = create_organization(db=db, name="College", fice="000123")
    user = create_user(db=db, user_name="ann", password="a long password 1", organizations=[organization])
    second = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    token = issue_token(
        secret_key=SECRET,
        user_uid=user.uid,
        now=second + timedelta(milliseconds=100),
        ttl=timedelta(minutes=20),
    )
    set_user_status(db=db, user=user, status="Inactive", now=second + timedelta(milliseconds=600))
    set_user_status(db=db, user=user, status="Active", now=second + timedelta(milliseconds=700))
    with pytest.raises(InvalidSessionToken, match="revoked"):
        user_from_token(db=db, settings=settings, token=token, now=second + timedelta(milliseconds=800))
    fresh = issue_token(
        secret_key=SECRET,
        user_uid=user.uid,
        now=second + timedelta(milliseconds=900),
        ttl=timedelta(minutes=20),
    )
    assert user_from_token(db=db, settings=settings, token=fresh, now=second + timedelta(seconds=1)) == user
