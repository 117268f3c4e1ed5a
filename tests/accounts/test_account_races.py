"""Races the account service must survive: a revocation in the same second as a login, and throttle
counters made and removed by concurrent logins."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from datalab.accounts.errors import InvalidSessionToken, SignInFailed
from datalab.accounts.models import LoginThrottle
from datalab.accounts.security import issue_token
from datalab.accounts.service import (
    authenticate,
    create_organization,
    create_user,
    set_user_status,
    user_from_token,
)
from datalab.db import make_engine, make_session_factory
from datalab.settings import Settings
from tests.support.databases import DatabaseFactory, postgres_url

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


@pytest.mark.skipif(postgres_url() is None, reason="the interleaving needs PostgreSQL's concurrent writers")
def test_a_throttle_row_made_and_removed_by_another_login_meanwhile_is_made_anew(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    engine = make_engine(database_factory.migrated_url(tmp_path))
    factory = make_session_factory(engine)
    now = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    steps: list[str] = []

    def other_login(statement: str, scope: str) -> None:
        # another login's own transaction, committed in between this one's steps
        with factory() as other:
            other.execute(text(statement), {"scope": scope, "now": now})
            other.commit()

    def after_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.startswith("SELECT") and "login_throttles" in statement and not steps:
            # this login found no counter: the other one makes it before this one can
            steps.append(next(iter(parameters.values())))
            other_login(
                "INSERT INTO login_throttles (scope, failures, window_started_at) VALUES (:scope, 0, :now)",
                steps[0],
            )

    def on_error(_context: Any) -> None:
        if len(steps) == 1:
            # this login's insert met the other's counter: the other login succeeds and removes it
            steps.append("removed")
            other_login("DELETE FROM login_throttles WHERE scope = :scope", steps[0])

    settings = Settings(secret_key=SECRET, home=tmp_path)
    try:
        with factory() as db:
            connection = db.connection()
            event.listen(connection, "after_cursor_execute", after_execute)
            event.listen(engine, "handle_error", on_error)
            with pytest.raises(SignInFailed):
                authenticate(
                    db=db, settings=settings, user_name="nobody", password="wrong", client_address="", now=now
                )
        assert steps[1:] == ["removed"]
        with factory() as db:
            counted = db.get_one(LoginThrottle, steps[0])
        assert counted.failures == 1
    finally:
        engine.dispose()
