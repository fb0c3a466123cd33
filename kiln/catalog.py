"""Names of built-in models, guides, ELBOs and optimisers, as plain data (no torch import)."""

from __future__ import annotations

from typing import Literal, get_args

ModelName = Literal["linreg"]
# The model library (kiln.library cards, inference/models): each with its own data and options.
LibraryModelName = Literal["bnn-classifier", "forecast-linreg", "forecast-bnn", "vae", "hmm"]
GuideName = Literal[
    "AutoNormal",
    "AutoDiagonalNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
    "AutoDelta",
    "AutoLaplaceApproximation",
]
ElboName = Literal["auto", "Trace_ELBO", "JitTrace_ELBO", "TraceMeanField_ELBO"]
OptimName = Literal["Adam", "ClippedAdam"]
QueueName = Literal["cpu", "gpu"]

MODELS: tuple[str, ...] = get_args(ModelName)
LIBRARY_MODELS: tuple[str, ...] = get_args(LibraryModelName)
GUIDES: tuple[str, ...] = get_args(GuideName)
ELBOS: tuple[str, ...] = get_args(ElboName)
OPTIMS: tuple[str, ...] = get_args(OptimName)
QUEUES: tuple[str, ...] = get_args(QueueName)

# Names a linreg model uses for its own sites; a formula term may not take them.
LINREG_RESERVED_SITES = ("sigma", "obs", "mean", "__X__", "__y__", "__row__")
