"""Webhook signing secrets encrypted at rest, with cryptography's Fernet (AES-CBC with HMAC-SHA256).

The secret signs every delivery, so it must be recoverable (a hash cannot sign); it is stored encrypted
with a key derived from DATALAB_SECRET_KEY (`Settings.encryption_key`), which a database dump does not
hold. Changing DATALAB_SECRET_KEY therefore makes stored secrets unreadable: their deliveries fail with
that reason until each webhook's secret is rotated.

Secrets stored in plain text before encryption existed are encrypted by `seal_plaintext_secrets` when a
process migrates the database: the migration itself runs with a connection only, without the settings
the key is derived from.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import transaction
from datalab.webhooks.models import Webhook

# Every secret `new_secret` issues starts so; a Fernet token never does.
PLAINTEXT_PREFIX = "whsec_"


class UnreadableSecret(Exception):
    """A stored secret that the current key does not decrypt (DATALAB_SECRET_KEY changed)."""


class SecretBox:
    """Encrypts secrets for storage and decrypts stored ones."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, secret: str) -> str:
        """The stored form of a secret."""
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, stored: str) -> str:
        """The secret of a stored value (one stored before encryption existed is returned as it is)."""
        if stored.startswith(PLAINTEXT_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise UnreadableSecret("the webhook's secret does not decrypt with DATALAB_SECRET_KEY") from None


def seal_plaintext_secrets(*, session_factory: sessionmaker[Session], box: SecretBox) -> int:
    """Encrypt every secret still stored in plain text; how many."""
    with transaction(session_factory) as db:
        plain = db.scalars(select(Webhook).where(Webhook.secret.startswith(PLAINTEXT_PREFIX))).all()
        for webhook in plain:
            webhook.secret = box.seal(webhook.secret)
    return len(plain)
