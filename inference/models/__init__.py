"""Built-in models, one per file: MODELS maps `linreg` to its builder; LIBRARY maps each model
of the library (bnn-classifier, forecast-linreg, forecast-bnn, vae, hmm) to its LibraryModel."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from inference.library import LibraryModel
from inference.models.linreg import LinReg

MODELS: dict[str, Callable[..., Any]] = {"linreg": LinReg}


class _Library(Mapping[str, LibraryModel]):
    """Library models by name, imported on first use (a linreg worker need not load them)."""

    def _models(self) -> dict[str, LibraryModel]:
        from inference.models import bnn, forecast, hmm, vae

        found: list[LibraryModel] = [
            forecast.LINREG,
            forecast.BNN,
            hmm.HMM,
            bnn.BNN_CLASSIFIER,
            vae.VAE_MODEL,
        ]
        return {model.name: model for model in found}

    def __getitem__(self, name: str) -> LibraryModel:
        return self._models()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models())

    def __len__(self) -> int:
        return len(self._models())


LIBRARY: Mapping[str, LibraryModel] = _Library()

__all__ = ["LIBRARY", "MODELS", "LinReg"]
