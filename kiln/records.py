"""Records passed between packages: SiteStats (a latent site's posterior summary)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `jobs list` and `jobs show` never load NumPy
    import numpy as np

STATS = ("mean", "sd", "q05", "q50", "q95")
# MCMC convergence diagnostics stored per site, in this order (kiln.diagnostics computes them).
DIAGNOSTICS = ("r_hat", "ess_bulk", "ess_tail")


@dataclass(frozen=True, slots=True)
class SiteStats:
    """A latent site's posterior summary; each statistic shaped like one draw of the site."""

    site: str
    shape: tuple[int, ...]
    mean: np.ndarray
    sd: np.ndarray
    q05: np.ndarray
    q50: np.ndarray
    q95: np.ndarray
