"""Per-process worker state: settings, database sessions, this worker's name and device."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_sessionmaker
from kiln.settings import Settings, get_settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    host: str
    name: str
    device: str


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """Built once per process (after any fork), from the environment the worker was given."""
    settings = get_settings()
    host = socket.gethostname()
    name = os.environ.get("KILN_WORKER_NAME") or f"kiln@{host}"
    device = os.environ.get("KILN_WORKER_DEVICE", "cpu")
    return Runtime(settings, make_sessionmaker(make_engine(settings.db_url)), host, name, device)
