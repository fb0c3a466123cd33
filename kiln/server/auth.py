"""Who is asking: the bearer token checked against db.tokens, and what each role may do.

Roles: `read` sees every job; `submit` submits and sees and cancels its own jobs; `admin` does
everything. A job a user may not see is not found (404), never forbidden: no existence leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kiln.server.problems import Refused
from kiln.server.state import ServerState, state_of
from scheduler.limits import Owner

bearer = HTTPBearer(auto_error=False, description="A token from `jobs token create`.")


@dataclass(frozen=True, slots=True)
class Identity:
    """The user behind a verified token, and their role."""

    user: str
    role: str
    token_id: str
    max_unfinished: int | None = None  # the caps that apply to this caller (None: none)
    max_upload_bytes: int | None = None

    @property
    def owner_filter(self) -> str | None:
        """Whose jobs this user may see: None for everyone's (read, admin), else their own."""
        return None if self.role in ("read", "admin") else self.user

    @property
    def may_submit(self) -> bool:
        return self.role in ("submit", "admin")

    @property
    def owner(self) -> Owner:
        """What a submission records as its owner, with the user's cap on unfinished jobs."""
        return Owner(self.user, self.max_unfinished)


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Identity:
    """The caller's identity, which the gate (kiln.server.gate) verified before the body was
    read; verified here when a route is reached without it (401 as there)."""
    known = getattr(request.state, "identity", None)
    if isinstance(known, Identity):
        return known
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    return verify(state_of(request), header)


def verify(state: ServerState, header: str | None) -> Identity:
    """The identity behind an `Authorization: Bearer TOKEN` header; Refused(401) otherwise."""
    from db.tokens import find_token, hash_matches, touch_token

    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Refused(401, "no token: send `Authorization: Bearer TOKEN` (see `jobs token create`)")
    with state.sessions() as session:
        row = find_token(session, token)
        known = row is not None and state.verified.knows(row.id, token)
        if row is None or not (known or hash_matches(token, row.hash)):
            raise Refused(401, "the token is not valid")
        if row.revoked_at is not None:
            raise Refused(401, f"token {row.id} was revoked; ask an admin for a new one")
        if not known:
            state.verified.remember(row.id, token)
        touch_token(session, row)
        settings = state.settings
        admin = row.role == "admin"
        unfinished = row.max_unfinished or (None if admin else settings.user_max_unfinished)
        upload = row.max_upload_bytes or (None if admin else settings.user_max_upload_mb * 2**20)
        return Identity(user=row.user, role=row.role, token_id=row.id,
                        max_unfinished=unfinished, max_upload_bytes=upload)  # fmt: skip


Caller = Annotated[Identity, Depends(authenticate)]


def may_submit(identity: Caller) -> Identity:
    """The caller, if their role may submit and cancel (submit, admin); else 403."""
    if not identity.may_submit:
        raise Refused(403, f"role `{identity.role}` may only read; submitting and cancelling"
                           " need role `submit` or `admin`")  # fmt: skip
    return identity


Submitter = Annotated[Identity, Depends(may_submit)]
