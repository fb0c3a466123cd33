"""The library's card types and their registry: DataRef, ModelCard, CARDS and register().

Apart from kiln.library's __init__ so that the card modules (digits, forecast, hmm) import
these without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CARDS", "DataRef", "ModelCard", "register"]


@dataclass(frozen=True)
class DataRef:
    """The data a job names: a built-in set (`digits`), a CSV file's bytes, or arrays (an
    MNIST directory's IDX files, read by the submitter into an .npz)."""

    kind: str  # "builtin" | "csv" | "npz"
    name: str  # `digits`, or the file's name
    content: bytes | None = None


@dataclass(frozen=True)
class ModelCard:
    """A library model as the scheduler and the CLI see it."""

    name: str
    summary: str
    defaults: Mapping[str, Any]  # `--set key=value` may change these; the type is the default's
    data: tuple[str, ...]  # what --data may be: "digits", "mnist" (a directory), "csv"
    # check(options, data) -> facts for the job record; raises SpecError/DataError by name.
    check: Callable[[Mapping[str, Any], DataRef], dict[str, Any]]


CARDS: dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    """Add a card to CARDS (each card module does, on import); returns it."""
    CARDS[card.name] = card
    return card
