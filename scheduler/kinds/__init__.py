"""The submit-time check of every job kind, by the spec's `kind` (one entry per kind)."""

from __future__ import annotations

from scheduler.kinds.base import Check, CheckContext, Checked, NewDataset, Upload
from scheduler.kinds.continuation import check_continuation
from scheduler.kinds.library import check_library_fit
from scheduler.kinds.linreg import check_linreg_fit
from scheduler.kinds.predict import check_predict
from scheduler.kinds.user import check_user_fit

CHECKS: dict[str, Check] = {
    "linreg_fit": check_linreg_fit,
    "library_fit": check_library_fit,
    "user_svi_fit": check_user_fit,
    "user_mcmc_fit": check_user_fit,
    "predict": check_predict,
    "library_predict": check_predict,
    "user_predict": check_predict,
}
# Requests that are not job kinds themselves: the check makes a job of an existing kind.
REQUESTS: dict[str, Check] = {"continue_fit": check_continuation}

__all__ = ["CHECKS", "REQUESTS", "Check", "CheckContext", "Checked", "NewDataset", "Upload"]
