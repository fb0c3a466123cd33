"""Figures of the library models (numpy + matplotlib, no torch): VAE reconstructions, test
digits beside the classifier's class probabilities, and the forecast models' held-out days."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.plots import _pyplot, _save  # one Agg backend set-up and one PNG writer

__all__ = ["plot_class_probs", "plot_forecast", "plot_reconstructions", "plot_states"]

FORECAST_BAND = (5.0, 95.0)  # percentiles of plot_forecast's band: 90% of the draws


def _title(fig: Any, title: str) -> None:
    """Lay the panels out below the title (a third of an inch for it)."""
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=9)
        top = 1.0 - 0.3 / fig.get_figheight()
    fig.tight_layout(pad=0.3, rect=(0.0, 0.0, 1.0, top))


def _image(ax: Any, pixels: np.ndarray, image_shape: Sequence[int]) -> None:
    ax.imshow(np.asarray(pixels).reshape(image_shape), cmap="gray_r", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_reconstructions(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    image_shape: Sequence[int],
    path: str | Path,
    title: str = "",
    per_row: int = 16,
    row_labels: tuple[str, str] = ("data", "recon."),
) -> Path:
    """Pairs of rows: `per_row` originals above their reconstructions, as many pairs as it takes.

    Args:
        originals, reconstructions: (images, pixels) in [0, 1] (a leading axis of 1, as stored
            for a `data` or per-item site, is dropped).
        image_shape: (rows, cols) of one image, e.g. (8, 8).
        row_labels: what the upper and the lower row of a pair show (e.g. ("", "") to show
            draws from the prior in both).
    """
    originals = np.asarray(originals).reshape(-1, math.prod(image_shape))
    reconstructions = np.asarray(reconstructions).reshape(-1, math.prod(image_shape))
    count = min(len(originals), len(reconstructions))
    if count == 0:
        raise ValueError("plot_reconstructions: no images")
    per_row = min(per_row, count)
    pairs = math.ceil(count / per_row)
    plt = _pyplot()
    fig, axes = plt.subplots(
        2 * pairs, per_row, figsize=(0.7 * per_row, 1.45 * pairs + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i in range(count):
        pair, column = divmod(i, per_row)
        for row, images in ((2 * pair, originals), (2 * pair + 1, reconstructions)):
            ax = axes[row, column]
            ax.axis("on")
            _image(ax, images[i], image_shape)
    for pair in range(pairs):
        axes[2 * pair, 0].set_ylabel(row_labels[0], fontsize=7)
        axes[2 * pair + 1, 0].set_ylabel(row_labels[1], fontsize=7)
    _title(fig, title)
    return _save(fig, path)


def plot_class_probs(
    images: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    title: str = "",
    image_shape: Sequence[int] | None = None,
) -> Path:
    """One row per test image: the digit, then the averaged class probabilities as bars, the
    true class in green, the predicted one (when wrong) in red.

    Args:
        images: (n, pixels) in [0, 1]; square images unless image_shape says otherwise.
        probs: (n, classes) averaged class probabilities; labels: (n,) true classes.
    """
    probs = np.asarray(probs).reshape(-1, np.asarray(probs).shape[-1])
    labels = np.asarray(labels).reshape(-1)
    count = len(probs)
    images = np.asarray(images).reshape(count, -1)
    if image_shape is None:
        side = math.isqrt(images.shape[1])
        image_shape = (side, images.shape[1] // side)
    classes = np.arange(probs.shape[1])
    plt = _pyplot()
    fig, axes = plt.subplots(
        count, 2, figsize=(4.2, 1.0 * count + 0.3), squeeze=False,
        gridspec_kw={"width_ratios": [1, 3]},
    )  # fmt: skip
    for i in range(count):
        _image(axes[i, 0], images[i], image_shape)
        predicted = int(probs[i].argmax())
        colours = ["0.6"] * len(classes)
        colours[predicted] = "tab:red"
        colours[int(labels[i])] = "tab:green"
        bars = axes[i, 1]
        bars.bar(classes, probs[i], color=colours)
        bars.set_ylim(0.0, 1.0)
        bars.set_xticks(classes)
        bars.tick_params(labelsize=6)
        bars.set_yticks([0.0, 0.5, 1.0])
        axes[i, 0].set_ylabel(f"true {int(labels[i])}", fontsize=7)
    _title(fig, title)
    return _save(fig, path)


def plot_forecast(
    days: np.ndarray, observed: np.ndarray, draws: np.ndarray, path: str | Path, title: str
) -> Path:
    """The held-out days: observed % changes (points and line), the predictive mean and the
    90% band of `draws` (num_samples, days), against the dates (`days` since 1970-01-01, as a
    forecast prediction's `__day__` site stores them; a leading axis of 1 is dropped)."""
    days = np.asarray(days).reshape(-1)
    observed = np.asarray(observed, dtype=float).reshape(-1)
    draws = np.asarray(draws, dtype=float).reshape(-1, days.size)
    dates = days.astype("datetime64[D]")
    low, high = np.percentile(draws, FORECAST_BAND, axis=0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.axhline(0.0, color="0.6", linewidth=0.8, label="no change (naive)")
    ax.fill_between(dates, low, high, color="tab:blue", alpha=0.25, label="90% predictive band")
    ax.plot(dates, draws.mean(axis=0), color="tab:blue", linewidth=2, label="predictive mean")
    ax.plot(dates, observed, color="black", linewidth=1, marker="o", markersize=3.5,
            label="observed")  # fmt: skip
    ax.set_title(title)
    ax.set_ylabel("% change from the day before")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _save(fig, path)


def plot_states(
    days: np.ndarray, values: np.ndarray, state_probs: np.ndarray, path: str | Path, title: str
) -> Path:
    """An HMM's series coloured by its most probable state, above each state's posterior
    probability by time step (states ordered by their fitted mean)."""
    plt = _pyplot()
    days = np.asarray(days)
    x = days.astype("datetime64[D]") if days.dtype.kind in "iu" and days.min() > 1000 else days
    probs = np.asarray(state_probs)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})  # fmt: skip
    top.plot(x, values, color="0.6", lw=0.7)
    likely = probs.argmax(axis=1)
    for k in range(probs.shape[1]):
        mine = likely == k
        top.scatter(np.asarray(x)[mine], np.asarray(values)[mine], s=8, label=f"state {k}")
        bottom.plot(x, probs[:, k], lw=0.8, label=f"P(state {k})")
    top.legend(fontsize=8, loc="upper left")
    top.set_ylabel("value")
    bottom.set_ylabel("probability")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
