"""The model library's cards: each built-in model's name, options with defaults, the data it
takes, and a submit-time check. Torch-free (pandas and numpy only), so the scheduler validates
a submission with the same code that the worker later uses to read the data.

The Pyro side of each model is in inference/models/ (inference.library.LibraryModel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiln.errors import SpecError
from kiln.library.cards import CARDS, DataRef, ModelCard, register

__all__ = ["CARDS", "DataRef", "ModelCard", "get_card", "parse_options", "register"]


def get_card(name: str) -> ModelCard:
    """The card of a library model (importing the library's modules on first use)."""
    from kiln.library import digits, forecast, hmm  # noqa: F401  (each registers its cards)

    try:
        return CARDS[name]
    except KeyError:
        raise SpecError(
            f"unknown library model `{name}` (have: {', '.join(sorted(CARDS))})", field="model"
        ) from None


def parse_options(card: ModelCard, pairs: Mapping[str, object] | list[str]) -> dict[str, Any]:
    """`--set key=value` strings (or a mapping from a spec) -> the card's defaults, updated and
    typed; an unknown key or a value of the wrong type is a SpecError naming it."""
    given: dict[str, Any] = {}
    if isinstance(pairs, list):
        for text in pairs:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise SpecError(f"--set {text!r}: write KEY=VALUE", field="options")
            given[key.strip()] = value.strip()
    else:
        given = dict(pairs)
    options = dict(card.defaults)
    for key, value in given.items():
        if key not in card.defaults:
            raise SpecError(
                f"--set {key}: `{card.name}` has no option `{key}`"
                f" (options: {', '.join(sorted(card.defaults))})",
                field="options",
            )
        options[key] = _typed(card.name, key, value, card.defaults[key])
    return options


def _typed(model: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return text in ("true", "1", "yes")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SpecError(
            f"--set {key}={value}: `{model}` wants {kind.__name__} for `{key}`", field="options"
        ) from None
