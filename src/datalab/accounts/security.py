"""Password hashing, API key material and signed session tokens."""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_KEY_ALPHABET = string.ascii_letters + string.digits
API_KEY_LENGTH = 40
TOKEN_ALGORITHM = "HS256"
TOKEN_ISSUER = "datalab"

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the userName is unknown, so both failures cost the same time.
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; spends the same time when there is no hash to check."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_api_key() -> str:
    """A random 40-character API key, the shape upstream hands out."""
    return "".join(secrets.choice(API_KEY_ALPHABET) for _ in range(API_KEY_LENGTH))


def hash_api_key(key: str) -> str:
    """SHA-256 of a key; keys are random and long, so a slow hash adds nothing."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class TokenClaims:
    """What a valid session token says."""

    user_uid: str
    issued_at: datetime
    expires_at: datetime


class InvalidToken(Exception):
    """A session token that is malformed, foreign-signed or expired."""


def _token_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"session-token", hashlib.sha256).digest()


def issued_at_claim(moment: datetime) -> float:
    """A moment as a token's `iat`: seconds since the epoch, to the millisecond (rounded down)."""
    return math.floor(moment.timestamp() * 1000) / 1000


def issue_token(*, secret_key: str, user_uid: str, now: datetime, ttl: timedelta) -> str:
    """A signed session token for the user, valid for ttl."""
    # to the millisecond, so a revocation in the same second as a login still refuses that token
    issued_at = issued_at_claim(now)
    claims = {
        "iss": TOKEN_ISSUER,
        "sub": user_uid,
        "iat": issued_at,
        "exp": issued_at + ttl.total_seconds(),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, _token_key(secret_key), algorithm=TOKEN_ALGORITHM)


def read_token(*, secret_key: str, token: str, now: datetime) -> TokenClaims:
    """The claims of a valid token, else InvalidToken saying why."""
    try:
        claims = jwt.decode(
            token,
            _token_key(secret_key),
            algorithms=[TOKEN_ALGORITHM],
            issuer=TOKEN_ISSUER,
            # exp and iat are checked below against `now`, not against the system clock.
            options={"require": ["exp", "iat", "sub", "iss"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("session token signature is not valid") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("session token is malformed") from exc
    try:
        issued_at = datetime.fromtimestamp(float(claims["iat"]), tz=now.tzinfo)
        expires_at = datetime.fromtimestamp(float(claims["exp"]), tz=now.tzinfo)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidToken("session token is malformed") from exc
    if issued_at > now:
        raise InvalidToken("session token is malformed")
    if now >= expires_at:
        raise InvalidToken("session token has expired; log in again")
    return TokenClaims(user_uid=str(claims["sub"]), issued_at=issued_at, expires_at=expires_at)
