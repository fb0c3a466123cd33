"""Content-addressed model sources: a user's model file, stored once, loaded by workers."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from db.models import ModelSource
from kiln.errors import NotFound


def source_id_for(content: str) -> str:
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()


def store_source(session: Session, content: str, *, filename: str) -> str:
    """Add the source unless the same text is already stored; return its id. Does not commit."""
    source_id = source_id_for(content)
    if session.get(ModelSource, source_id) is None:
        session.add(
            ModelSource(
                id=source_id,
                filename=filename,
                size_bytes=len(content.encode("utf-8")),
                content=content,
            )
        )
        session.flush()
    return source_id


def load_source(session: Session, source_id: str) -> ModelSource:
    source = session.get(ModelSource, source_id)
    if source is None:
        raise NotFound(f"model source {source_id} not found")
    return source
