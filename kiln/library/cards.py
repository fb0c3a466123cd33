"""The library's card types and their registry (DataRef, ModelCard, CARDS, register()) and the
bounds of the cards' numeric options (OPTION_BOUNDS, check_option_bounds()).

Apart from kiln.library's __init__ so that the card modules (digits, forecast, hmm) import
these without importing the package that imports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kiln.errors import SpecError

__all__ = ["CARDS", "OPTION_BOUNDS", "DataRef", "ModelCard", "check_option_bounds", "register"]


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


# The range of every numeric option a card may have, by its name, whichever card has it: the
# sizes a worker allocates (layers, batches, windows) and the counts it loops over (epochs) are
# bounded, so a submission cannot ask a worker for a 10^11-unit layer. Inclusive, except that a
# rate must be above its low end. A card's check may narrow them (hmm's states, the
# classifier's threshold); the steps a fit takes are capped by KILN_MAX_STEPS besides.
OPTION_BOUNDS: dict[str, tuple[float, float]] = {
    "hidden": (1, 4096),  # units of a hidden layer
    "latent": (1, 1024),  # a VAE's code size
    "epochs": (1, 1_000_000),
    "batch_size": (1, 65_536),
    "test_every": (1, 1_000_000),  # epochs between test ELBOs
    "window": (1, 365),  # days of history a forecast reads
    "holdout": (1, 100_000),  # days held out
    "states": (2, 10),  # an HMM's regimes
    "steps": (1, 10**12),  # and KILN_MAX_STEPS
    "lr": (0.0, 1000.0),  # above 0
    "threshold": (0.0, math.log(10)),  # nats; above 0
}
RATES = ("lr", "threshold")  # bounded below by an open end


def check_option_bounds(card: ModelCard, options: Mapping[str, Any]) -> None:
    """Raise SpecError naming the first numeric option outside OPTION_BOUNDS (or not finite)."""
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        low, high = OPTION_BOUNDS.get(key, (-math.inf, math.inf))
        above_low = value > low if key in RATES else value >= low
        finite = not isinstance(value, float) or math.isfinite(value)
        if finite and above_low and value <= high:
            continue
        if key in RATES:
            want = f"a number above {_show(low)} and at most {_show(high)}"
        elif math.isinf(low):
            want = "a finite number"
        else:
            want = f"{_show(low)} to {_show(high)}"
        raise SpecError(
            f"--set {key}={_show(value)}: `{card.name}` takes {want} for `{key}`",
            field="options",
        )


def _show(value: float) -> str:
    """A number for a message: 4096, 1000000, 0.01, 2.30259, 1e+11; never 300 digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 10**15:
        value = int(value)
    if isinstance(value, int):
        if abs(value) < 10**15:
            return str(value)
        return f"{float(value):.3g}" if value.bit_length() < 1000 else "a huge number"
    return f"{value:g}"
