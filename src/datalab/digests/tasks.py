"""Sending the export digests: a round of the sweeper claims each due digest, mails it, marks it sent.

The message is built with the standard library's `email` package (a multipart/alternative of text and
HTML) and sent with `smtplib`: one message to one SMTP server per digest needs neither templates nor
queues of a mail library, and smtplib speaks STARTTLS, implicit TLS and AUTH as they are.
"""

from __future__ import annotations

import html
import logging
import os
import smtplib
import socket
import ssl
import time
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from sqlalchemy.orm import Session, sessionmaker

from datalab.db import transaction
from datalab.digests.service import (
    ClaimedDigest,
    claim_digest,
    drop_digest,
    finish_digest,
    release_digest,
    skip_pending,
    unsubscribe_token,
)
from datalab.settings import Settings

log = logging.getLogger(__name__)

# Digests one round sends at most; the next round goes on.
MAX_DIGESTS_PER_ROUND = 200
# Beyond the SMTP timeout: how long a claimed digest stays with its sender.
LEASE_MARGIN = timedelta(minutes=2)


def exports_page_url(settings: Settings) -> str:
    """Data Center's Exports page, where the digest sends its readers."""
    return settings.base_url("") + "/datacenter/exports"


def unsubscribe_url(settings: Settings, user_uid: str) -> str:
    """The link that stops a user's digests without signing in (a page, and RFC 8058's one-click POST)."""
    token = unsubscribe_token(settings.unsubscribe_key, user_uid)
    return settings.base_url("") + f"/datacenter/unsubscribe/{user_uid}/{token}"


def _published(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def build_message(
    *, claimed: ClaimedDigest, sender: str, exports_url: str, unsubscribe_url: str, now: datetime
) -> EmailMessage:
    """The digest as a multipart/alternative message (plain text, then HTML), with its unsubscribe link in
    the text and in the headers mail programs show as an unsubscribe button (RFC 2369, RFC 8058)."""
    count = len(claimed.items)
    noun = "export" if count == 1 else "exports"
    message = EmailMessage()
    message["Subject"] = f"{count} new {noun} for {claimed.organization_name} in Data Lab"
    message["From"] = sender
    message["To"] = claimed.recipient
    message["Date"] = format_datetime(now)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "datalab"
    # Stable per digest: a digest sent again after a crash carries the same id.
    message["Message-ID"] = f"<digest-{claimed.uid}@{domain}>"
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    greeting = f"Hello {claimed.first_name}," if claimed.first_name else "Hello,"
    lines = [
        f"  - {item.file_name} ({item.product_key}, published {_published(item.published_at)})"
        for item in claimed.items
    ]
    message.set_content(
        "\n".join(
            [
                greeting,
                "",
                f"{count} new {noun} {'was' if count == 1 else 'were'} published to "
                f"{claimed.organization_name}:",
                "",
                *lines,
                "",
                f"Download them from Data Center: {exports_url}",
                "",
                f"Stop these e-mails: {unsubscribe_url}",
                "",
            ]
        )
    )
    rows = "".join(
        f"<li><strong>{html.escape(item.file_name)}</strong> ({html.escape(item.product_key)}, published "
        f"{_published(item.published_at)})</li>"
        for item in claimed.items
    )
    message.add_alternative(
        f"<p>{html.escape(greeting)}</p><p>{count} new {noun} published to "
        f"{html.escape(claimed.organization_name)}:</p><ul>{rows}</ul>"
        f'<p><a href="{html.escape(exports_url)}">Download them from Data Center</a></p>'
        f'<p style="font-size:small"><a href="{html.escape(unsubscribe_url)}">Stop these e-mails</a></p>',
        subtype="html",
    )
    return message


class SmtpMailer:
    """Sends messages through the SMTP server of the settings, one connection per round."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._connection is not None:
            try:
                self._connection.quit()
            except (smtplib.SMTPException, OSError):
                self._connection.close()
            self._connection = None

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        host, port, timeout = (
            settings.email_smtp_host,
            settings.email_smtp_port,
            settings.email_smtp_timeout_seconds,
        )
        if settings.email_smtp_security == "ssl":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            connection = smtplib.SMTP(host, port, timeout=timeout)
            if settings.email_smtp_security == "starttls":
                connection.starttls(context=ssl.create_default_context())
        if settings.email_smtp_user:
            connection.login(settings.email_smtp_user, settings.email_smtp_password.get_secret_value())
        return connection

    def send(self, message: EmailMessage) -> None:
        """Send one message; raises smtplib.SMTPException or OSError when the server refuses or fails."""
        if self._connection is None:
            self._connection = self._connect()
        self._connection.send_message(message)


def sender_name() -> str:
    """Who holds a claimed digest: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}:digests"


def _refused_for_good(exc: smtplib.SMTPRecipientsRefused) -> bool:
    return all(500 <= code < 600 for code, _message in exc.recipients.values())


def send_digests(*, session_factory: sessionmaker[Session], settings: Settings, now: datetime) -> int:
    """One round: send every due digest (without an SMTP server, skip what waits); how many were sent.

    The round's clock starts at `now` and moves with the time the round takes, so a lease taken late in
    a long round still lasts its full length.
    """
    if not settings.email_enabled:
        with transaction(session_factory) as db:
            skip_pending(db=db)
        return 0
    period = timedelta(minutes=settings.email_digest_minutes)
    lease = timedelta(seconds=settings.email_smtp_timeout_seconds) + LEASE_MARGIN
    sender, exports_url, sent, started = sender_name(), exports_page_url(settings), 0, time.monotonic()
    with SmtpMailer(settings) as mailer:
        for _ in range(MAX_DIGESTS_PER_ROUND):
            moment = now + timedelta(seconds=time.monotonic() - started)
            with transaction(session_factory) as db:
                claimed = claim_digest(db=db, sender=sender, lease=lease, period=period, now=moment)
            if claimed is None:
                break
            outcome = _send(mailer, claimed=claimed, settings=settings, exports_url=exports_url, now=moment)
            with transaction(session_factory) as db:
                if outcome == "sent":
                    sent += finish_digest(db=db, claimed=claimed, now=moment)
                elif outcome == "undeliverable":
                    drop_digest(db=db, claimed=claimed)
                else:
                    release_digest(db=db, claimed=claimed)
            if outcome == "retry":
                break
    return sent


def _send(
    mailer: SmtpMailer, *, claimed: ClaimedDigest, settings: Settings, exports_url: str, now: datetime
) -> str:
    """Build and send one digest: `sent`; `undeliverable` (no valid message for this recipient, or the
    server refused the recipient for good), never tried again; or `retry` (the server failed or refused
    for now), in the next round."""
    try:
        message = build_message(
            claimed=claimed,
            sender=settings.email_from,
            exports_url=exports_url,
            unsubscribe_url=unsubscribe_url(settings, claimed.user_uid),
            now=now,
        )
    except ValueError as exc:
        log.warning("e-mail digest %s not sent: no valid message for its recipient: %s", claimed.uid, exc)
        return "undeliverable"
    try:
        mailer.send(message)
    except smtplib.SMTPRecipientsRefused as exc:
        if _refused_for_good(exc):
            log.warning("e-mail digest %s not sent: the SMTP server refused its recipient", claimed.uid)
            return "undeliverable"
        log.warning("e-mail digest %s not sent: the SMTP server refused its recipient for now", claimed.uid)
        return "retry"
    except (smtplib.SMTPException, OSError) as exc:
        # The server's answer only: the settings' password never reaches an exception text.
        log.warning("e-mail digest %s not sent: %s: %s", claimed.uid, type(exc).__name__, exc)
        return "retry"
    log.info("e-mail digest %s sent (%s exports)", claimed.uid, len(claimed.items))
    return "sent"
