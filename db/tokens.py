"""API tokens: create (the secret shown once), list, revoke, and verify a presented token.

A token reads `kiln_<id>_<secret>`. The id is stored in clear and finds the row, so verifying
is one lookup and one hash, never a scan; only a salted scrypt hash of the whole token is
stored, so the database cannot give a token back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Token, as_utc, utcnow
from kiln.errors import NotFound, SpecError

ROLES = ("read", "submit", "admin")
PREFIX = "kiln"
# scrypt's cost: 16 MiB and about 40 ms a hash. A token holds 256 random bits, so the KDF only
# guards a leaked table; the server remembers a token it verified (kiln/server/auth.py).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# last_used_at is written at most this often per token: a read must not become a write.
TOUCH_EVERY = timedelta(seconds=60)
MAX_USER = 255


@dataclass(frozen=True, slots=True)
class TokenView:
    """A token as listed: never its secret, nor its hash."""

    id: str
    user: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    max_unfinished: int | None = None  # this token's caps (None: the server's)
    max_upload_bytes: int | None = None


def _view(token: Token) -> TokenView:
    return TokenView(token.id, token.user, token.role, as_utc(token.created_at),
                     as_utc(token.revoked_at), as_utc(token.last_used_at),
                     token.max_unfinished, token.max_upload_bytes)  # fmt: skip


def hash_token(token: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$<salt hex>$<digest hex>` of the token, with a fresh salt unless given."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)  # fmt: skip
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def hash_matches(token: str, stored: str) -> bool:
    """Whether `token` hashes to `stored` (the stored parameters and salt), in constant time."""
    try:
        name, n, r, p, salt, digest = stored.split("$")
        again = hashlib.scrypt(token.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                               p=int(p), dklen=len(bytes.fromhex(digest)))  # fmt: skip
    except ValueError:
        return False
    return name == "scrypt" and hmac.compare_digest(again.hex(), digest)


def token_id_of(token: str) -> str | None:
    """The id part of `kiln_<id>_<secret>`, or None when the text is not shaped like a token."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not token_id.isalnum() or len(token_id) > 32 or not secret:
        return None
    return token_id


def create_token(
    session: Session, user: str, role: str, *, max_unfinished: int | None = None,
    max_upload_bytes: int | None = None,
) -> tuple[TokenView, str]:  # fmt: skip
    """A new token for `user` with `role` (and caps of its own, if given); commits. Returns
    it and the token itself, which is not stored anywhere: show it once."""
    for name, cap in (("--max-unfinished", max_unfinished), ("--max-upload-mb", max_upload_bytes)):
        if cap is not None and not 0 < cap < 2**62:
            raise SpecError(f"{name}: must be a positive number (got {cap})", field=name[2:])
    if role not in ROLES:
        raise SpecError(f"--role {role!r}: one of {', '.join(ROLES)}", field="role")
    if not user or len(user) > MAX_USER or not user.isprintable() or user != user.strip():
        raise SpecError(
            f"--user {user[:40]!r}: 1 to {MAX_USER} printable characters, no surrounding spaces",
            field="user",
        )
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    row = Token(id=token_id, user=user, role=role, hash=hash_token(token), created_at=utcnow(),
                max_unfinished=max_unfinished, max_upload_bytes=max_upload_bytes)  # fmt: skip
    session.add(row)
    session.commit()
    return _view(row), token


def list_tokens(session: Session) -> Sequence[TokenView]:
    """Every token, revoked ones too, oldest first."""
    rows = session.scalars(select(Token).order_by(Token.created_at, Token.id)).all()
    return [_view(t) for t in rows]


def revoke_token(session: Session, token_id: str) -> TokenView:
    """Revoke the token (at once: the next request with it is refused); commits."""
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found (see `jobs token list`)")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return _view(row)


def find_token(session: Session, token: str) -> Token | None:
    """The row a presented token names (by its id), revoked or not; None for no such id.
    The caller checks the hash (hash_matches) and revoked_at."""
    token_id = token_id_of(token)
    return session.get(Token, token_id) if token_id is not None else None


def touch_token(session: Session, row: Token) -> None:
    """Record that the token was used, at most once per TOUCH_EVERY; commits when it writes."""
    now = utcnow()
    last = as_utc(row.last_used_at)
    if last is None or now - last >= TOUCH_EVERY:
        row.last_used_at = now
        session.commit()
