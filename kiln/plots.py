"""Figures from stored results (numpy + matplotlib, no torch): the fitted regression."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kiln.tables import build_design


def _is_binary(column: np.ndarray) -> bool:
    return bool(np.isin(column, (0.0, 1.0)).all()) and len(np.unique(column)) == 2


def plot_regression_fit(
    frame: pd.DataFrame,
    formula: str,
    draws: Mapping[str, np.ndarray],
    losses: Sequence[tuple[int, float]],
    path: str | Path,
    title: str = "",
    seed: int = 0,
) -> Path:
    """The tutorial's figure: data, posterior mean line, 90% bands of the mean and of `obs`.

    One panel per value of a 0/1 term (e.g. cont_africa) against the one continuous term
    (e.g. rugged), plus the loss curve. Without such terms: observed against predicted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    design = build_design(frame, formula)
    beta = np.stack([draws[t] for t in design.terms], axis=-1)  # (S, terms)
    mean = beta @ design.X.T  # (S, rows)
    rng = np.random.default_rng(seed)
    obs = mean + draws["sigma"][:, None] * rng.standard_normal(mean.shape)
    m_lo, m_mid, m_hi = np.quantile(mean, (0.05, 0.5, 0.95), axis=0)
    o_lo, o_hi = np.quantile(obs, (0.05, 0.95), axis=0)

    terms = list(design.terms)
    binary = [t for j, t in enumerate(terms) if t != "Intercept" and _is_binary(design.X[:, j])]
    continuous = [
        t for j, t in enumerate(terms)
        if t != "Intercept" and ":" not in t and not _is_binary(design.X[:, j])
    ]  # fmt: skip
    groups: list[tuple[str, np.ndarray]]
    if binary and len(continuous) == 1:
        g = design.X[:, terms.index(binary[0])]
        groups = [(f"{binary[0]} = 0", g == 0), (f"{binary[0]} = 1", g == 1)]
        x_name = continuous[0]
        x = design.X[:, terms.index(x_name)]
    elif len(continuous) == 1:
        x_name = continuous[0]
        x = design.X[:, terms.index(x_name)]
        groups = [("all rows", np.ones(len(x), dtype=bool))]
    else:
        x_name, x = "posterior mean prediction", m_mid
        groups = [("all rows", np.ones(len(x), dtype=bool))]

    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(5.2 * (len(groups) + 1), 4.6))
    for ax, (label, rows) in zip(axes, groups, strict=False):
        order = np.argsort(x[rows])
        xs = x[rows][order]
        ax.fill_between(xs, o_lo[rows][order], o_hi[rows][order], color="tab:orange",
                        alpha=0.25, label="90% predictive interval (obs)")  # fmt: skip
        ax.fill_between(xs, m_lo[rows][order], m_hi[rows][order], color="tab:blue",
                        alpha=0.35, label="90% interval of the mean")  # fmt: skip
        ax.plot(xs, m_mid[rows][order], color="tab:blue", lw=2, label="posterior median of mean")
        ax.scatter(x[rows], design.y[rows], s=12, color="black", alpha=0.7, label="data")
        ax.set_title(label)
        ax.set_xlabel(x_name)
        ax.set_ylabel(design.response)
    axes[0].legend(fontsize=8, loc="lower left")
    steps, values = zip(*losses, strict=True) if losses else ((), ())
    axes[-1].plot(steps, values, lw=1)
    axes[-1].set_title("ELBO loss")
    axes[-1].set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
