"""kiln.plots: which panels a params or trace figure shows, and that it says what it left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.plots import MAX_PANELS, choose_panels, plot_params, plot_trace


def test_a_figure_says_which_values_and_sites_it_left_out() -> None:
    panels, note = choose_panels({"sigma": 1, "theta": 8})
    assert [name for name, _, _ in panels] == ["sigma", *(f"theta[{i}]" for i in range(6))]
    assert note == "shown: theta: first 6 of 8"
    assert choose_panels({"a": 1, "b": 1}) == ([("a", "a", 0), ("b", "b", 0)], "")
    many = {f"w{k}": 30 for k in range(10)}
    panels, note = choose_panels(many)
    assert len(panels) == MAX_PANELS
    assert note.endswith(f"{MAX_PANELS} of 60 panels (4 of 10 sites)")


def test_params_and_trace_figures_of_many_sites_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    draws = {f"w{k}": rng.normal(size=(40, 5, 3)) for k in range(4)} | {"s": rng.normal(size=40)}
    assert plot_params(draws, tmp_path / "p.png", title="t").stat().st_size > 10_000
    assert plot_trace(draws, 2, tmp_path / "t.png", title="t").stat().st_size > 10_000


def test_a_vector_sites_panels_are_named_by_their_labels() -> None:
    labels = {"weight": ["Close[-2]", "Close[-1]", "Volume[-1]"]}
    panels, _ = choose_panels({"weight": 3, "bias": 1}, labels)
    assert [name for name, _, _ in panels] == [
        "weight[Close[-2]]", "weight[Close[-1]]", "weight[Volume[-1]]", "bias"
    ]  # fmt: skip
    assert choose_panels({"weight": 2}, labels)[0][0][0] == "weight[0]"  # labels that do not fit
