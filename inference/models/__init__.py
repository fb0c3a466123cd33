"""Built-in models, one per file; MODELS maps a catalog name to its builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inference.models.linreg import LinReg

MODELS: dict[str, Callable[..., Any]] = {"linreg": LinReg}

__all__ = ["MODELS", "LinReg"]
