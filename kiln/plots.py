"""Figures from stored results (numpy + matplotlib, no torch): predictive bands, loss, params."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _is_binary(column: np.ndarray) -> bool:
    return bool(np.isin(column, (0.0, 1.0)).all()) and len(np.unique(column)) == 2


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def panels_for(
    X: np.ndarray, terms: Sequence[str]
) -> tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]:
    """How to lay out a regression: (x-axis name, x values, [(panel label, row mask)]).

    One panel per value of a 0/1 term (e.g. cont_africa) against the one continuous main
    effect (e.g. rugged); one panel against that term alone; else no x (name "").
    """
    terms = list(terms)
    binary = [t for j, t in enumerate(terms) if t != "Intercept" and _is_binary(X[:, j])]
    continuous = [
        t for j, t in enumerate(terms)
        if t != "Intercept" and ":" not in t and not _is_binary(X[:, j])
    ]  # fmt: skip
    every = np.ones(len(X), dtype=bool)
    if len(continuous) != 1:
        return "", np.zeros(len(X)), [("all rows", every)]
    x = X[:, terms.index(continuous[0])]
    if binary:
        g = X[:, terms.index(binary[0])]
        return continuous[0], x, [(f"{binary[0]} = 0", g == 0), (f"{binary[0]} = 1", g == 1)]
    return continuous[0], x, [("all rows", every)]


def plot_predictive(
    X: np.ndarray,
    terms: Sequence[str],
    y: np.ndarray,
    response: str,
    mean_draws: np.ndarray,
    obs_draws: np.ndarray,
    path: str | Path,
    title: str = "",
    losses: Sequence[tuple[int, float]] | None = None,
) -> Path:
    """The Pyro tutorial's figure: data points, the posterior mean of the regression line with
    its 90% band, and the 90% band of the posterior predictive (`obs`), one panel per group.

    mean_draws and obs_draws are (num_samples, rows). With `losses`, a loss panel is added.
    Without a single continuous term, predicted is plotted against observed.
    """
    plt = _pyplot()
    m_lo, m_mid, m_hi = np.quantile(mean_draws, (0.05, 0.5, 0.95), axis=0)
    o_lo, o_hi = np.quantile(obs_draws, (0.05, 0.95), axis=0)
    x_name, x, groups = panels_for(X, terms)
    if not x_name:
        x_name, x = "posterior mean of the regression line", mean_draws.mean(axis=0)
    extra = 1 if losses else 0
    fig, axes = plt.subplots(
        1, len(groups) + extra, figsize=(5.4 * (len(groups) + extra), 4.6), squeeze=False
    )
    axes = axes[0]
    known = np.isfinite(y)
    for ax, (label, rows) in zip(axes, groups, strict=False):
        order = np.argsort(x[rows], kind="stable")
        xs = x[rows][order]
        ax.fill_between(xs, o_lo[rows][order], o_hi[rows][order], color="tab:orange",
                        alpha=0.25, label="90% posterior predictive (obs)")  # fmt: skip
        ax.fill_between(xs, m_lo[rows][order], m_hi[rows][order], color="tab:blue",
                        alpha=0.35, label="90% interval of the mean")  # fmt: skip
        ax.plot(xs, m_mid[rows][order], color="tab:blue", lw=2, label="posterior median of mean")
        shown = rows & known
        if shown.any():
            ax.scatter(x[shown], y[shown], s=12, color="black", alpha=0.7, label="data")
            inside = (y[shown] >= o_lo[shown]) & (y[shown] <= o_hi[shown])
            label = f"{label}  ({inside.mean():.0%} of {shown.sum()} inside the obs band)"
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(x_name)
        ax.set_ylabel(response)
    # Below the axes, never over the data (loc="best" searches the data: seconds for a large
    # figure, and matplotlib warns).
    axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                   frameon=False)  # fmt: skip
    if losses:
        _loss_axes(axes[-1], losses)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _loss_axes(ax: Any, losses: Sequence[tuple[int, float]]) -> None:
    steps = np.array([s for s, _ in losses])
    values = np.array([v for _, v in losses])
    ax.plot(steps, values, lw=0.8, alpha=0.5, label="loss")
    if len(values) >= 20:
        k = max(len(values) // 50, 5)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.8, color="tab:red", label=f"mean of {k} steps")
        # The first steps dwarf the rest: show the settled part.
        low, high = np.quantile(values, (0.0, 0.98))
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)  # fmt: skip
    ax.set_title("ELBO loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (negative ELBO)")


def plot_loss(losses: Sequence[tuple[int, float]], path: str | Path, title: str = "") -> Path:
    """The loss of every step, and its running mean."""
    if not losses:
        raise ValueError("no losses to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _loss_axes(ax, losses)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


PER_SITE = 6  # a site with more values shows its first few
MAX_PANELS = 24  # a figure stays readable


def choose_panels(
    sizes: Mapping[str, int], labels: Mapping[str, Sequence[str]] | None = None
) -> tuple[list[tuple[str, str, int]], str]:
    """Panels (name, site, flat index) for sites of these flat sizes: each scalar site, the
    first PER_SITE values of the others (named by `labels[site]` when it has one per value),
    at most MAX_PANELS in all; and a note saying what was left out ("" when nothing was)."""
    panels: list[tuple[str, str, int]] = []
    cut: list[str] = []
    for site, size in sizes.items():
        if size == 1:
            panels.append((site, site, 0))
            continue
        names = list((labels or {}).get(site, ()))
        if len(names) != size:
            names = [str(i) for i in range(size)]
        panels.extend((f"{site}[{names[i]}]", site, i) for i in range(min(size, PER_SITE)))
        if size > PER_SITE:
            cut.append(f"{site}: first {PER_SITE} of {size}")
    notes = [f"shown: {'; '.join(cut)}"] if cut else []
    if len(panels) > MAX_PANELS:
        shown_sites = len({site for _, site, _ in panels[:MAX_PANELS]})
        notes.append(f"{MAX_PANELS} of {len(panels)} panels ({shown_sites} of {len(sizes)} sites)")
        panels = panels[:MAX_PANELS]
    return panels, " - ".join(notes)


def plot_params(
    draws: Mapping[str, np.ndarray], path: str | Path, title: str = "",
    labels: Mapping[str, Sequence[str]] | None = None,
) -> Path:  # fmt: skip
    """A density (histogram) of each scalar latent site's posterior draws, with its 90% interval.

    Sites with several values show their first 6 elements as separate panels.
    """
    flats = {site: np.asarray(v).reshape(len(v), -1) for site, v in draws.items()}
    chosen, note = choose_panels({site: flat.shape[1] for site, flat in flats.items()}, labels)
    panels = [(name, flats[site][:, i]) for name, site, i in chosen]
    if not panels:
        raise ValueError("no posterior draws to plot")
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, values) in zip(axes.flat, panels, strict=False):
        lo, hi = np.quantile(values, (0.05, 0.95))
        ax.hist(values, bins=40, density=True, color="tab:blue", alpha=0.6)
        ax.axvspan(lo, hi, color="tab:orange", alpha=0.15, label="90% interval")
        ax.axvline(values.mean(), color="black", lw=1.2, label=f"mean {values.mean():.3g}")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    _headed(fig, title, note)
    return _save(fig, path)


def _headed(fig: Any, title: str, note: str, x: float = 0.5, ha: str = "center") -> None:
    """The figure's title, and below it (smaller) what it left out; laid out beneath both."""
    lines = 0.0
    if title:
        fig.text(x, 1 - 0.12 / fig.get_figheight(), title, ha=ha, va="top", fontsize=12)
        lines += 0.3
    if note:
        fig.text(x, 1 - (0.14 + lines) / fig.get_figheight(), note, ha=ha, va="top",
                 fontsize=8, color="0.3", wrap=True)  # fmt: skip
        lines += 0.25
    fig.tight_layout(rect=(0, 0, 1, 1 - (lines + 0.1 * bool(lines)) / fig.get_figheight()))


def plot_trace(
    draws: Mapping[str, np.ndarray], chains: int, path: str | Path, title: str = ""
) -> Path:
    """MCMC traces: each scalar site (first 6 elements of the others) by draw, one line per
    chain, beside its density per chain. Draws are chain-major, (chains * draws, *shape)."""
    flats = {site: np.asarray(v).reshape(chains, len(v) // chains, -1) for site, v in draws.items()}
    chosen, note = choose_panels({site: flat.shape[2] for site, flat in flats.items()})
    panels = [(name, flats[site][:, :, i]) for name, site, i in chosen]
    if not panels:
        raise ValueError("no posterior draws to plot")
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 1.9 * len(panels)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})  # fmt: skip
    for (trace_ax, density_ax), (name, values) in zip(axes, panels, strict=True):
        for chain in range(chains):
            trace_ax.plot(values[chain], lw=0.5, alpha=0.7, label=f"chain {chain}")
            density_ax.hist(values[chain], bins=40, density=True, histtype="step", lw=1)
        trace_ax.set_ylabel(name, fontsize=9)
        density_ax.set_yticks([])
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=min(chains, 8), frameon=False)
    axes[-1][0].set_xlabel("draw")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    if title or note:
        _headed(fig, title, note, x=0.02, ha="left")
    return _save(fig, path)


def plot_metrics(
    rows: Sequence[tuple[str, int, int, float]], path: str | Path, title: str = ""
) -> Path:
    """Each metric against the epoch (or step) it was measured at, one panel per metric."""
    by_name: dict[str, list[tuple[int, float]]] = {}
    for name, step, epoch, value in rows:
        by_name.setdefault(name, []).append((epoch or step, value))
    plt = _pyplot()
    cols = min(3, len(by_name))
    nrows = -(-len(by_name) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, by_name.items(), strict=False):
        x, y = zip(*points, strict=True)
        ax.plot(x, y, marker="o" if len(x) < 40 else None, ms=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch" if any(r[2] for r in rows) else "step")
    for ax in list(axes.flat)[len(by_name) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
