"""The worker's runner of every job kind, by the spec's `kind` (one entry per kind)."""

from __future__ import annotations

from worker.runners.base import AnyRunner, Runner
from worker.runners.batch import BatchRunner
from worker.runners.chain import UserMcmcChain
from worker.runners.library import LibraryFit, LibraryPredict
from worker.runners.linreg import LinregFit, LinregPredict
from worker.runners.user import UserMcmcFit, UserSviFit
from worker.runners.userpredict import UserPredict

RUNNERS: dict[str, AnyRunner] = {
    r.kind: r
    for r in (
        LinregFit(),
        LinregPredict(),
        LibraryFit(),
        LibraryPredict(),
        UserSviFit(),
        UserMcmcFit(),
        UserPredict(),
        BatchRunner(),
        UserMcmcChain(),
    )
}

__all__ = ["RUNNERS", "Runner"]
