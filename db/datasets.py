"""Content-addressed datasets: the same bytes stored twice are one row."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from db.models import Dataset
from kiln.errors import NotFound


def dataset_id_for(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def store_dataset(
    session: Session, content: bytes, *, name: str, format: str, columns: list[str], num_rows: int
) -> str:
    """Add the dataset unless its content is already stored; return its id. Does not commit."""
    dataset_id = dataset_id_for(content)
    if session.get(Dataset, dataset_id) is None:
        session.add(
            Dataset(
                id=dataset_id,
                format=format,
                name=name,
                columns=columns,
                num_rows=num_rows,
                size_bytes=len(content),
                content=content,
            )
        )
        session.flush()
    return dataset_id


def load_dataset(session: Session, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset
