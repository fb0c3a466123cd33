"""What the app holds while it runs: settings, database sessions, the Client that submits,
and the tokens verified so far."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

from kiln.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from kiln.client import Client

MAX_REMEMBERED = 4096


class Verified:
    """Tokens whose hash this process has checked (sha256 of the token by id), so scrypt runs
    once per token and process; revocation is still read from the database on every request."""

    def __init__(self) -> None:
        self._known: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def knows(self, token_id: str, token: str) -> bool:
        with self._lock:
            return self._known.get(token_id) == hashlib.sha256(token.encode()).digest()

    def remember(self, token_id: str, token: str) -> None:
        with self._lock:
            if len(self._known) >= MAX_REMEMBERED:
                self._known.clear()
            self._known[token_id] = hashlib.sha256(token.encode()).digest()


@dataclass
class ServerState:
    """The app's one state object (app.state.kiln)."""

    settings: Settings
    sessions: sessionmaker[Session]
    client: Client
    verified: Verified
    engine: Any = None


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.kiln
    return state
