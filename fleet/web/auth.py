"""The dashboard's operator token: read-only pages need none, pause/resume/abort need it.

The token is never stored: the database keeps a random salt and its scrypt hash (RFC 7914;
n=2**14, r=8, p=1: about 16 MB and a few tens of ms per check, cheap for an operator, dear for a
guesser). ``serve --operator-token-file F`` installs F's token (replacing the previous one);
without it a hub with no token generates one and prints it once.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from core.errors import UsageError
from fleet.errors import FleetError
from fleet.store import Store

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}


class TokenError(FleetError):
    code = "fleet.unauthorized"


def _hash(token: str, salt: bytes) -> str:
    return hashlib.scrypt(token.encode(), salt=salt, **SCRYPT).hex()


def validate(token: str) -> str:
    if len(token) < 16:
        raise UsageError("the operator token is too short (at least 16 characters)", where="--operator-token-file", code="usage.operator_token",
                         hint="e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))' > ops.token")
    return token


def install(store: Store, token: str) -> None:
    """Replace the stored token by ``token`` (hashed). Runs before the hub's loop starts."""
    validate(token)
    salt = secrets.token_bytes(16)
    with store.transaction():
        store.query("DELETE FROM operator_tokens")
        store.insert("operator_tokens", {"created": time.time(), "salt": salt.hex(), "hash": _hash(token, salt)})


def ensure(store: Store) -> str | None:
    """A new token if the database has none (the caller prints it once), else None."""
    if store.query("SELECT id FROM operator_tokens"):
        return None
    token = secrets.token_urlsafe(24)
    install(store, token)
    return token


def check(store: Store, token: str | None) -> bool:
    if not token:
        return False
    rows = store.query("SELECT salt, hash FROM operator_tokens")
    return any(hmac.compare_digest(_hash(token, bytes.fromhex(r["salt"])), r["hash"]) for r in rows)
