"""E-mail digests of new exports, sent to a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from datalab.accounts.models import User
from datalab.audit.models import AuditEvent
from datalab.db import make_engine, make_session_factory, utcnow
from datalab.demo.service import DEMO_USER
from datalab.digests.models import DigestEntry
from datalab.digests.service import unsubscribe_token
from datalab.digests.tasks import send_digests
from datalab.exports.models import Export
from datalab.settings import Settings
from tests.conftest import ServerFactory
from tests.support.accounts import login_as
from tests.support.checks import assert_envelope, wait_for
from tests.support.exports import publish
from tests.support.factories import add_account, add_organization
from tests.support.server import LiveServer, free_port
from tests.web.pages import sign_in

SENDER = "Data Lab <datalab@example.edu>"
PUBLIC_URL = "https://datalab.example.edu"


@dataclass
class Inbox:
    """What the SMTP server received: each message with the recipients of its envelope."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    # Recipients the server refuses for good (550).
    unknown: set[str] = field(default_factory=set)

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, _server: SMTP, _session: SmtpSession, envelope: Envelope, address: str, _options: list[str]
    ) -> str:
        if address in self.unknown:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: SMTP, _session: SmtpSession, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(([str(to) for to in envelope.rcpt_tos], parsed))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for recipients, message in self.received if address in recipients]


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port=port, inbox=inbox)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def quiet(make_server: ServerFactory) -> LiveServer:
    """A server whose own sweeper does not run during the test: the test runs the digest rounds."""
    return make_server(upload_sweep_interval_seconds="3600")


@pytest.fixture(scope="module")
def sessions(quiet: LiveServer) -> Iterator[sessionmaker[Session]]:
    """Sessions on the server's database, where the exports the demo seeded are already skipped (a round
    without an SMTP host)."""
    engine = make_engine(quiet.database_url)
    factory = make_session_factory(engine)
    send_digests(session_factory=factory, settings=_settings(quiet), now=utcnow())
    yield factory
    engine.dispose()


def _settings(server: LiveServer, **values: Any) -> Settings:
    return Settings(
        home=server.home,
        database_url=server.database_url,
        secret_key=server.env["DATALAB_SECRET_KEY"],
        public_url=PUBLIC_URL,
        **values,
    )


def _mailing(server: LiveServer, smtp: SmtpServer) -> Settings:
    return _settings(
        server,
        email_smtp_host="127.0.0.1",
        email_smtp_port=smtp.port,
        email_smtp_security="none",
        email_from=SENDER,
        email_digest_minutes=60,
    )


def _published(server: LiveServer, tmp_path: Path, *names: str) -> list[dict[str, Any]]:
    source = tmp_path / "list.csv"
    source.write_bytes(b"ID,FIRSTNAME\r\n1,Ann\r\n2,Bo\r\n")
    return [publish(server, source, product="prospect", order_name=name) for name in names]


def _states(server: LiveServer, export_uids: list[str]) -> set[str]:
    with server.db() as db:
        return set(
            db.scalars(
                select(DigestEntry.state)
                .join(Export, Export.id == DigestEntry.export_id)
                .where(Export.uid.in_(export_uids))
            )
        )


def test_one_digest_per_user_lists_every_new_export_once(
    quiet: LiveServer, smtp: SmtpServer, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    colleague = add_account(quiet)
    elsewhere = add_organization(quiet)
    stranger = add_account(quiet, organization_uids=[elsewhere.uid])
    settings = _mailing(quiet, smtp)
    exports = _published(quiet, tmp_path, "Fall Prospects", "Spring Prospects")
    names = [export["fileName"] for export in exports]
    now = utcnow()

    assert send_digests(session_factory=sessions, settings=settings, now=now) == 0
    assert smtp.inbox.received == []

    later = now + timedelta(minutes=61)
    assert send_digests(session_factory=sessions, settings=settings, now=later) == 2
    for address in (DEMO_USER, colleague.user_name):
        [message] = smtp.inbox.to(address)
        assert message["To"] == address
        assert message["From"] == SENDER
        assert message["Subject"] == "2 new exports for Sample University in Data Lab"
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        assert text is not None and html is not None
        for name in names:
            assert name in text.get_content() and name in html.get_content()
        assert "prospect" in text.get_content()
        assert f"{PUBLIC_URL}/datacenter/exports" in text.get_content()
        link = _unsubscribe_link(message)
        assert link.startswith(f"{PUBLIC_URL}/datacenter/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f"Stop these e-mails: {link}" in text.get_content()
        assert f'href="{link}"' in html.get_content()
    assert smtp.inbox.to(stranger.user_name) == []
    assert len(smtp.inbox.received) == 2

    assert send_digests(session_factory=sessions, settings=settings, now=later + timedelta(hours=2)) == 0
    assert len(smtp.inbox.received) == 2
    assert _states(quiet, [export["uid"] for export in exports]) == {"sent"}
    with quiet.db() as db:
        audited = db.scalars(select(AuditEvent).where(AuditEvent.action == "email.digest_sent")).all()
    assert sorted(event.detail["exports"] for event in audited) == [2, 2]
    assert all("password" not in str(event.detail).lower() for event in audited)


def test_nothing_is_sent_while_no_smtp_host_is_set_nor_later(
    quiet: LiveServer, smtp: SmtpServer, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    before = len(smtp.inbox.received)
    exports = _published(quiet, tmp_path, "Unmailed")
    later = utcnow() + timedelta(hours=2)

    assert send_digests(session_factory=sessions, settings=_settings(quiet), now=later) == 0
    assert _states(quiet, [exports[0]["uid"]]) == {"skipped"}
    assert send_digests(session_factory=sessions, settings=_mailing(quiet, smtp), now=later) == 0
    assert len(smtp.inbox.received) == before


def test_a_digest_the_smtp_server_refuses_waits_for_the_next_round(
    quiet: LiveServer, smtp: SmtpServer, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    before = len(smtp.inbox.received)
    exports = _published(quiet, tmp_path, "Retried")
    later = utcnow() + timedelta(hours=2)
    unreachable = _mailing(quiet, smtp).model_copy(update={"email_smtp_port": free_port()})

    assert send_digests(session_factory=sessions, settings=unreachable, now=later) == 0
    assert _states(quiet, [exports[0]["uid"]]) == {"pending"}
    assert send_digests(session_factory=sessions, settings=_mailing(quiet, smtp), now=later) == 2
    assert len(smtp.inbox.received) == before + 2


def test_a_user_who_opts_out_gets_no_digest(
    quiet: LiveServer, smtp: SmtpServer, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    reader = add_account(quiet)
    leaver = add_account(quiet)
    leaving = login_as(quiet, leaver)
    url = quiet.base_url + "/email-digest"
    assert httpx2.get(url, headers=leaving.headers).json() == {"subscribed": True}
    _published(quiet, tmp_path, "Before Leaving")
    turned_off = httpx2.put(url, headers=leaving.headers, json={"subscribed": False})
    assert turned_off.status_code == 200 and turned_off.json() == {"subscribed": False}
    assert httpx2.get(url, headers=leaving.headers).json() == {"subscribed": False}
    assert_envelope(
        httpx2.put(url, headers=leaving.headers, json={"subscribed": "maybe"}), 422, "validation_error"
    )
    _published(quiet, tmp_path, "After Leaving")

    later = utcnow() + timedelta(hours=2)
    send_digests(session_factory=sessions, settings=_mailing(quiet, smtp), now=later)
    assert smtp.inbox.to(leaver.user_name) == []
    [digest] = smtp.inbox.to(reader.user_name)
    assert digest["Subject"].startswith("2 new exports")
    with quiet.db() as db:
        leaver_states = db.scalars(
            select(DigestEntry.state)
            .join(Export, Export.id == DigestEntry.export_id)
            .join(User, User.id == DigestEntry.user_id)
            .where(User.uid == leaver.uid)
        ).all()
        recorded = db.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "email.digest_subscription", AuditEvent.target_id == leaver.uid
            )
        ).all()
    assert leaver_states == ["skipped"]
    assert [event.detail for event in recorded] == [{"subscribed": False}]

    turned_on = httpx2.put(url, headers=leaving.headers, json={"subscribed": True})
    assert turned_on.json() == {"subscribed": True}


def _unsubscribe_link(message: EmailMessage) -> str:
    header = str(message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">")
    return header[1:-1]


def _on(server: LiveServer, link: str) -> str:
    """The link of a message (made with the public URL) on the test's server."""
    return server.root + link.removeprefix(PUBLIC_URL)


def _link_events(server: LiveServer, user_uid: str) -> list[dict[str, Any]]:
    with server.db() as db:
        events = db.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "email.digest_subscription", AuditEvent.target_id == user_uid
            )
        ).all()
        return [
            {"actor": event.actor_uid, "organization": event.organization_id, **event.detail}
            for event in events
        ]


def test_the_unsubscribe_link_stops_the_digest_without_signing_in(
    quiet: LiveServer, smtp: SmtpServer, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    reader = add_account(quiet)
    later = utcnow() + timedelta(hours=2)
    _published(quiet, tmp_path, "Linked")
    send_digests(session_factory=sessions, settings=_mailing(quiet, smtp), now=later)
    [message] = smtp.inbox.to(reader.user_name)
    link = _on(quiet, _unsubscribe_link(message))
    digest_url = quiet.base_url + "/email-digest"
    api = login_as(quiet, reader)

    # opening the link (as a mail scanner does) changes nothing
    shown = httpx2.get(link)
    assert shown.status_code == 200
    assert f"{reader.user_name} gets an e-mail listing the new export files" in shown.text
    assert "Stop the e-mails" in shown.text
    assert httpx2.get(digest_url, headers=api.headers).json() == {"subscribed": True}

    waiting = _published(quiet, tmp_path, "Waiting")
    # a mail program's one-click request (RFC 8058), without a session or a CSRF token
    clicked = httpx2.post(
        link,
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert clicked.status_code == 200
    assert f"{reader.user_name} gets no more e-mail digests" in clicked.text
    assert httpx2.get(digest_url, headers=api.headers).json() == {"subscribed": False}
    with quiet.db() as db:
        reader_states = db.scalars(
            select(DigestEntry.state)
            .join(User, User.id == DigestEntry.user_id)
            .join(Export, Export.id == DigestEntry.export_id)
            .where(User.uid == reader.uid, Export.uid == waiting[0]["uid"])
        ).all()
    assert reader_states == ["skipped"]
    # the page's button again: nothing more to stop, nothing more recorded
    assert httpx2.post(link).status_code == 200
    assert "gets no more e-mail digests" in httpx2.get(link).text
    assert _link_events(quiet, reader.uid) == [
        {"actor": reader.uid, "organization": None, "subscribed": False, "from": "unsubscribe link"}
    ]


def test_an_unsubscribe_link_changed_or_made_for_another_user_is_refused(
    quiet: LiveServer, smtp: SmtpServer, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    reader = add_account(quiet)
    other = add_account(quiet)
    _published(quiet, tmp_path, "Guarded")
    send_digests(session_factory=sessions, settings=_mailing(quiet, smtp), now=utcnow() + timedelta(hours=2))
    [message] = smtp.inbox.to(reader.user_name)
    link = _on(quiet, _unsubscribe_link(message))
    prefix, token = link.rsplit("/", 1)
    changed = token[:-1] + ("A" if token[-1] != "A" else "B")
    for forged in (
        f"{prefix}/{changed}",
        link.replace(reader.uid, other.uid),
        f"{prefix}/{token[:-1]}",
        link.replace(reader.uid, "no-such-user"),
    ):
        for method in ("GET", "POST"):
            refused = httpx2.request(method, forged)
            assert refused.status_code == 404, forged
            assert "This unsubscribe link is not valid" in refused.text
    for person in (reader, other):
        api = login_as(quiet, person)
        assert httpx2.get(quiet.base_url + "/email-digest", headers=api.headers).json() == {
            "subscribed": True
        }
        assert _link_events(quiet, person.uid) == []


def test_unsubscribe_tokens_depend_on_the_secret_key() -> None:
    first = Settings(secret_key="a" * 40)
    second = Settings(secret_key="b" * 40)
    token = unsubscribe_token(first.unsubscribe_key, "user-1")
    assert len(token) == 32
    assert token == unsubscribe_token(first.unsubscribe_key, "user-1")
    assert token != unsubscribe_token(first.unsubscribe_key, "user-2")
    assert token != unsubscribe_token(second.unsubscribe_key, "user-1")


def test_a_recipient_the_smtp_server_refuses_for_good_is_not_tried_again(
    quiet: LiveServer, smtp: SmtpServer, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    gone = add_account(quiet)
    smtp.inbox.unknown.add(gone.user_name)
    before = len(smtp.inbox.received)
    [export] = _published(quiet, tmp_path, "Refused")
    later = utcnow() + timedelta(hours=2)

    assert send_digests(session_factory=sessions, settings=_mailing(quiet, smtp), now=later) >= 1
    assert smtp.inbox.to(gone.user_name) == []
    assert any(export["fileName"] in str(message) for _, message in smtp.inbox.received[before:])
    with quiet.db() as db:
        states = db.scalars(
            select(DigestEntry.state)
            .join(User, User.id == DigestEntry.user_id)
            .join(Export, Export.id == DigestEntry.export_id)
            .where(User.uid == gone.uid, Export.uid == export["uid"])
        ).all()
    assert states == ["skipped"]


def test_the_sweeper_of_datalab_serve_sends_the_digests(
    make_server: ServerFactory, smtp: SmtpServer, tmp_path: Path
) -> None:
    server = make_server(
        upload_sweep_interval_seconds="1",
        public_url=PUBLIC_URL,
        email_smtp_host="127.0.0.1",
        email_smtp_port=str(smtp.port),
        email_smtp_security="none",
        email_from=SENDER,
        email_digest_minutes="0.001",
    )
    [export] = _published(server, tmp_path, "Swept")

    def mailed() -> bool:
        return any(export["fileName"] in str(message) for _, message in smtp.inbox.received)

    assert wait_for(mailed, timeout=30)


def test_data_center_turns_the_digest_off_and_on(make_server: ServerFactory, smtp: SmtpServer) -> None:
    mailing = make_server(
        email_smtp_host="127.0.0.1",
        email_smtp_port=str(smtp.port),
        email_smtp_security="none",
        email_from=SENDER,
        public_url=PUBLIC_URL,
    )
    person = add_account(mailing)
    api = login_as(mailing, person)
    digest_url = mailing.base_url + "/email-digest"
    page = sign_in(mailing, person.user_name, person.password)
    try:
        assert "Stop the e-mails" in page.get("/datacenter/exports").text
        off = page.post("/datacenter/email-digest", {"digest": "off"})
        assert off.status_code == 303 and off.headers["location"] == "/datacenter/exports"
        assert httpx2.get(digest_url, headers=api.headers).json() == {"subscribed": False}
        assert "E-mail me new export files" in page.get("/datacenter/exports").text

        refused = page.post("/datacenter/email-digest", {"digest": "maybe"})
        assert refused.status_code == 400
        assert "The e-mail digest is turned on or off, not &#39;maybe&#39;" in refused.text
        unsigned = page.post("/datacenter/email-digest", {"digest": "on"}, with_csrf=False)
        assert unsigned.status_code == 403
        assert httpx2.get(digest_url, headers=api.headers).json() == {"subscribed": False}

        on = page.post("/datacenter/email-digest", {"digest": "on"})
        assert on.status_code == 303
        assert httpx2.get(digest_url, headers=api.headers).json() == {"subscribed": True}
    finally:
        page.close()


def test_without_an_smtp_server_data_center_offers_no_digest(quiet: LiveServer) -> None:
    person = add_account(quiet)
    page = sign_in(quiet, person.user_name, person.password)
    try:
        shown = page.get("/datacenter/exports")
        assert shown.status_code == 200 and "Export Files" in shown.text
        assert "E-mail digest" not in shown.text
    finally:
        page.close()
