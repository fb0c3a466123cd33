"""The image models of the library (bnn-classifier, vae) on scikit-learn's 8x8 digits, their
cards' checks, their mini-batches, and the MNIST IDX reader on small synthetic files."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pytest
import torch

from inference.library import LibraryModel, LibraryPrediction, Problem
from inference.models import bnn, vae
from inference.state import dump_state, load_state
from kiln.errors import DataError, SpecError
from kiln.library import DataRef, parse_options
from kiln.library.digits import BNN_CLASSIFIER, VAE, load_images, read_mnist_dir
from kiln.library.mnist import IMAGES_MAGIC, LABELS_MAGIC, MNIST_FILES
from kiln.library.plots import plot_class_probs, plot_reconstructions

DIGITS = DataRef("builtin", "digits")
SEED = 1


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small networks: one thread fits as fast, and a second only spins when the cores are
    shared (a 7 s VAE fit took 50-80 s beside other work on two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fit(problem: Problem, lr: float) -> list[dict[str, float]]:
    """The caller-owned SVI loop the runner runs: batches by step, metrics at each epoch's end."""
    # pyro.optim makes Adam from torch.optim at import time: there is no Adam for mypy to see
    adam = pyro.optim.Adam({"lr": lr})  # type: ignore[attr-defined]
    svi = pyro.infer.SVI(problem.model, problem.guide, adam, loss=pyro.infer.Trace_ELBO())
    metrics = []
    for step in range(problem.steps):
        args, kwargs = problem.batch(step)
        svi.step(*args, **kwargs)
        if (step + 1) % problem.steps_per_epoch == 0 and problem.evaluate is not None:
            with torch.no_grad():
                metrics.append(problem.evaluate())
    return metrics


def predict_in_a_fresh_process(
    model: LibraryModel, options: dict[str, Any], data: DataRef, state: bytes, num_samples: int
) -> LibraryPrediction:
    """What a predict job does: prepare() again, load the fitted state, predict."""
    problem = model.prepare(options, data, seed=SEED, device="cpu")
    load_state(state)
    return model.predict(problem, num_samples=num_samples, seed=7)


def check_sites(
    prediction: LibraryPrediction, expected: dict[str, tuple[str, tuple[int, ...]]]
) -> None:
    assert {name: (kind, value.shape) for name, (kind, value) in prediction.sites.items()} == (
        expected
    )


# --- bnn-classifier -------------------------------------------------------------------------


def test_bnn_classifier_on_digits_reaches_090_and_says_when_it_does_not_know(
    tmp_path: Path,
) -> None:
    options = parse_options(BNN_CLASSIFIER, {})
    started = time.perf_counter()
    problem = bnn.BNN_CLASSIFIER.prepare(options, DIGITS, seed=SEED, device="cpu")
    metrics = fit(problem, options["lr"])
    fit_s = time.perf_counter() - started
    prediction = bnn.BNN_CLASSIFIER.predict(problem, num_samples=20, seed=7)
    print(f"bnn fit {fit_s:.1f} s; epochs 1, 10, last: {metrics[0]}, {metrics[9]}, {metrics[-1]}")
    print(f"bnn predict: {prediction.metrics}")

    assert len(metrics) == options["epochs"]
    assert all(set(m) == {"test_accuracy"} for m in metrics)
    assert metrics[-1]["test_accuracy"] >= 0.90
    assert problem.loss_items == 1437 and problem.latent_sites == ()
    check_sites(
        prediction,
        {
            "class_probs": ("deterministic", (1, 360, 10)),
            "predicted": ("deterministic", (1, 360)),
            "entropy": ("deterministic", (1, 360)),
            "__y__": ("data", (1, 360)),
            "__x__": ("data", (1, 360, 64)),
        },
    )
    sites = {name: value for name, (_, value) in prediction.sites.items()}
    np.testing.assert_allclose(sites["class_probs"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sites["predicted"], sites["class_probs"].argmax(-1))
    assert sites["predicted"].dtype == np.int64 and sites["__y__"].dtype == np.int64
    assert ((sites["entropy"] >= 0) & (sites["entropy"] <= np.log(10) + 1e-6)).all()
    m = prediction.metrics
    assert set(m) == {"test_accuracy", "mean_entropy", "abstain_rate", "accuracy_when_confident"}
    assert m["test_accuracy"] >= 0.90
    assert m["test_accuracy"] == pytest.approx(float((sites["predicted"] == sites["__y__"]).mean()))
    abstains = sites["entropy"] > options["threshold"]
    assert m["abstain_rate"] == pytest.approx(float(abstains.mean()))
    assert 0.0 < m["abstain_rate"] < 0.5
    assert m["accuracy_when_confident"] >= m["test_accuracy"]
    assert prediction.info["image_shape"] == [8, 8]

    # A predict job in another process: the same draws from the stored state.
    again = predict_in_a_fresh_process(bnn.BNN_CLASSIFIER, options, DIGITS, dump_state(), 20)
    np.testing.assert_allclose(again.sites["class_probs"][1], sites["class_probs"], atol=1e-6)

    # The article's figure: a few test digits beside their class probabilities.
    shown = np.r_[np.flatnonzero(abstains[0])[:3], np.flatnonzero(~abstains[0])[:3]]
    written = plot_class_probs(
        sites["__x__"][0, shown], sites["class_probs"][0, shown], sites["__y__"][0, shown],
        tmp_path / "bnn_class_probs.png", title="bnn-classifier: test digits",
    )  # fmt: skip
    assert written.stat().st_size > 5_000


def test_bnn_classifier_keeps_at_most_1000_test_images_for_plots(tmp_path: Path) -> None:
    data = DataRef("npz", "synthetic", _npz(train=300, test=1100, rows=4, cols=4))
    options = parse_options(BNN_CLASSIFIER, ["hidden=8", "epochs=1"])
    problem = bnn.BNN_CLASSIFIER.prepare(options, data, seed=SEED, device="cpu")
    fit(problem, options["lr"])
    prediction = bnn.BNN_CLASSIFIER.predict(problem, num_samples=2, seed=0)
    assert prediction.sites["class_probs"][1].shape == (1, 1100, 10)
    assert prediction.sites["__x__"][1].shape == (1, 1000, 16)
    assert prediction.info["stored_images"] == 1000


# --- vae ----------------------------------------------------------------------------------


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
def test_vae_test_elbo_improves_and_reconstructions_are_digits(tmp_path: Path) -> None:
    options = parse_options(VAE, {})
    started = time.perf_counter()
    problem = vae.VAE_MODEL.prepare(options, DIGITS, seed=SEED, device="cpu")
    metrics = fit(problem, options["lr"])
    fit_s = time.perf_counter() - started
    prediction = vae.VAE_MODEL.predict(problem, num_samples=200, seed=7)
    elbos = [m["test_elbo"] for m in metrics]
    print(f"vae fit {fit_s:.1f} s; test ELBO per image every 10 epochs: {np.round(elbos[::10], 2)}")
    print(f"vae predict: {prediction.metrics}")

    assert len(elbos) == options["epochs"]
    assert elbos[-1] < elbos[0] - 2.0
    assert elbos[-1] < 26.0  # the mean image alone scores 27.1 nats per image
    check_sites(
        prediction,
        {
            "reconstruction": ("predictive", (1, 64, 64)),
            "__x__": ("data", (1, 64, 64)),
            "samples": ("predictive", (1, 64, 64)),
        },
    )
    sites = {name: value for name, (_, value) in prediction.sites.items()}
    for value in sites.values():
        assert value.min() >= 0.0 and value.max() <= 1.0
    # Reconstructions are nearer their own originals than the originals are to each other.
    own = np.abs(sites["reconstruction"][0] - sites["__x__"][0]).mean()
    other = np.abs(sites["__x__"][0] - np.roll(sites["__x__"][0], 1, axis=0)).mean()
    assert own < 0.8 * other
    assert prediction.metrics["test_elbo"] == pytest.approx(elbos[-1], abs=0.5)

    # A predict job in another process computes with the stored weights.
    again = predict_in_a_fresh_process(vae.VAE_MODEL, options, DIGITS, dump_state(), 200)
    np.testing.assert_allclose(again.sites["reconstruction"][1], sites["reconstruction"], atol=1e-6)
    np.testing.assert_allclose(again.sites["samples"][1], sites["samples"], atol=1e-6)

    plot_reconstructions(
        sites["__x__"][0, :32], sites["reconstruction"][0, :32], [8, 8],
        tmp_path / "vae_reconstructions.png", title="vae: test digits (top) and reconstructions",
    )  # fmt: skip
    plot_reconstructions(
        sites["samples"][0, :16], sites["samples"][0, 16:32], [8, 8],
        tmp_path / "vae_samples.png", title="vae: digits decoded from z ~ N(0, I)",
        row_labels=("", ""),
    )  # fmt: skip
    assert (tmp_path / "vae_reconstructions.png").stat().st_size > 5_000


def test_vae_samples_are_capped_by_num_samples() -> None:
    options = parse_options(VAE, ["epochs=1", "hidden=16", "latent=2"])
    problem = vae.VAE_MODEL.prepare(options, DIGITS, seed=SEED, device="cpu")
    fit(problem, options["lr"])
    prediction = vae.VAE_MODEL.predict(problem, num_samples=5, seed=0)
    assert prediction.sites["samples"][1].shape == (1, 5, 64)


def test_vae_evaluates_every_test_every_epochs_and_after_the_last() -> None:
    options = parse_options(VAE, ["epochs=5", "test_every=2", "hidden=16", "latent=2"])
    problem = vae.VAE_MODEL.prepare(options, DIGITS, seed=SEED, device="cpu")
    assert problem.evaluate is not None
    with torch.no_grad():
        seen = [sorted(problem.evaluate()) for _ in range(5)]
    assert seen == [[], ["test_elbo"], [], ["test_elbo"], ["test_elbo"]]


# --- mini-batches -------------------------------------------------------------------------


@pytest.mark.parametrize("model", [bnn.BNN_CLASSIFIER, vae.VAE_MODEL], ids=["bnn", "vae"])
def test_batches_are_a_function_of_the_step_and_an_epoch_covers_each_image_once(
    model: Any,
) -> None:
    card = BNN_CLASSIFIER if model is bnn.BNN_CLASSIFIER else VAE
    options = parse_options(card, ["batch_size=100"])
    problem = model.prepare(options, DIGITS, seed=SEED, device="cpu")
    assert problem.steps_per_epoch == 15  # 1437 images: 14 of 100 and one of 37
    x_train = torch.as_tensor(load_images(DIGITS, SEED)[0])

    def epoch(number: int) -> torch.Tensor:
        first = number * problem.steps_per_epoch
        rows = [problem.batch(step)[0][-1] for step in range(first, first + 15)]
        return torch.cat(rows)

    first, second = epoch(0), epoch(1)
    assert sorted(first.tolist()) == list(range(1437))
    assert sorted(second.tolist()) == list(range(1437))
    assert not torch.equal(first, second)
    (x, *_, idx), kwargs = problem.batch(20)
    assert kwargs == {} and len(idx) == 100
    torch.testing.assert_close(x, x_train[idx])

    # A resumed fit, in a fresh process with the same seed, draws the same batches.
    resumed = model.prepare(options, DIGITS, seed=SEED, device="cpu")
    for step in (0, 17, 44):
        for a, b in zip(problem.batch(step)[0], resumed.batch(step)[0], strict=True):
            torch.testing.assert_close(a, b)
    other = model.prepare(options, DIGITS, seed=SEED + 1, device="cpu")
    assert not torch.equal(other.batch(0)[0][-1], problem.batch(0)[0][-1])


def test_digits_split_is_80_20_stratified_and_follows_the_seed() -> None:
    x_train, y_train, x_test, y_test, facts = load_images(DIGITS, seed=3)
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.bincount(y_test).min() >= 35  # every class in the test set, about 36 each
    assert facts["image_shape"] == [8, 8] and facts["classes"] == 10
    np.testing.assert_array_equal(load_images(DIGITS, seed=3)[3], y_test)
    assert not np.array_equal(load_images(DIGITS, seed=4)[3], y_test)


# --- cards: options and data ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card", "given", "named"),
    [
        (BNN_CLASSIFIER, ["hidden=0"], "hidden"),
        (BNN_CLASSIFIER, ["batch_size=-5"], "batch_size"),
        (BNN_CLASSIFIER, ["lr=0"], "lr"),
        (BNN_CLASSIFIER, ["threshold=3"], "threshold"),
        (VAE, ["latent=0"], "latent"),
        (VAE, ["test_every=0"], "test_every"),
        (VAE, ["epochs=-1"], "epochs"),
    ],
)
def test_a_bad_option_is_a_spec_error_naming_it(card: Any, given: list[str], named: str) -> None:
    options = parse_options(card, given)
    with pytest.raises(SpecError, match=named) as raised:
        card.check(options, DIGITS)
    assert raised.value.field == "options"


def test_an_unknown_option_is_a_spec_error_listing_the_options() -> None:
    with pytest.raises(SpecError, match="no option `hiden`.*hidden"):
        parse_options(BNN_CLASSIFIER, ["hiden=3"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (DataRef("csv", "rugged.csv", b"a,b\n1,2\n"), "takes --data digits or an MNIST folder"),
        (DataRef("builtin", "iris"), "takes --data digits"),
        (DataRef("npz", "junk", b"not a zip file"), "not an .npz"),
        (DataRef("npz", "empty", None), "no content"),
    ],
)
def test_data_that_is_not_images_is_a_data_error(data: DataRef, message: str) -> None:
    for card in (BNN_CLASSIFIER, VAE):
        with pytest.raises(DataError, match=message):
            card.check(dict(card.defaults), data)


def test_an_npz_without_test_labels_is_a_data_error_naming_the_array() -> None:
    buffer = io.BytesIO()
    x = np.zeros((3, 4, 4), np.uint8)
    np.savez(buffer, x_train=x, y_train=np.zeros(3, np.uint8), x_test=x)
    with pytest.raises(DataError, match="no array `y_test`") as raised:
        BNN_CLASSIFIER.check(dict(BNN_CLASSIFIER.defaults), DataRef("npz", "d", buffer.getvalue()))
    assert raised.value.column == "y_test"


# --- MNIST's IDX files --------------------------------------------------------------------


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _arrays(train: int, test: int, rows: int, cols: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (train, rows, cols), dtype=np.uint8),
        "y_train": rng.integers(0, 10, train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (test, rows, cols), dtype=np.uint8),
        "y_test": rng.integers(0, 10, test, dtype=np.uint8),
    }


def _write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in MNIST_FILES.items():
        content = _idx(arrays[key], IMAGES_MAGIC if key.startswith("x") else LABELS_MAGIC)
        if key in gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
    return folder


def _npz(train: int, test: int, rows: int, cols: int) -> bytes:
    buffer = io.BytesIO()
    # allow_pickle at its default, named so that mypy does not match the arrays to it
    np.savez(buffer, allow_pickle=True, **_arrays(train, test, rows, cols))
    return buffer.getvalue()


def test_an_mnist_folder_round_trips_through_the_npz(tmp_path: Path) -> None:
    arrays = _arrays(train=50, test=20, rows=6, cols=5)
    folder = _write_mnist(tmp_path / "mnist", arrays, gz=("x_train", "y_test"))
    packed = read_mnist_dir(folder)
    with np.load(io.BytesIO(packed)) as npz:
        for key, value in arrays.items():
            np.testing.assert_array_equal(npz[key], value)
            assert npz[key].dtype == np.uint8

    data = DataRef("npz", folder.name, packed)
    x_train, y_train, x_test, y_test, facts = load_images(data, seed=0)
    np.testing.assert_allclose(x_train, arrays["x_train"].reshape(50, 30) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert x_test.shape == (20, 30) and y_train.dtype == np.int64
    assert facts["image_shape"] == [6, 5] and facts["inputs"] == 30

    facts = BNN_CLASSIFIER.check(parse_options(BNN_CLASSIFIER, ["batch_size=16"]), data)
    assert (facts["train"], facts["test"], facts["steps_per_epoch"]) == (50, 20, 4)
    assert facts["steps"] == 4 * BNN_CLASSIFIER.defaults["epochs"]


def test_torchvisions_layout_is_read_too(tmp_path: Path) -> None:
    arrays = _arrays(train=4, test=3, rows=2, cols=2)
    _write_mnist(tmp_path / "root" / "MNIST" / "raw", arrays)
    with np.load(io.BytesIO(read_mnist_dir(tmp_path / "root"))) as npz:
        np.testing.assert_array_equal(npz["y_train"], arrays["y_train"])


def test_a_missing_idx_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path / "m", _arrays(4, 3, 2, 2))
    (folder / MNIST_FILES["y_test"]).unlink()
    with pytest.raises(DataError, match="no `t10k-labels-idx1-ubyte`"):
        read_mnist_dir(folder)


def test_a_bad_magic_number_is_a_data_error(tmp_path: Path) -> None:
    arrays = _arrays(4, 3, 2, 2)
    folder = _write_mnist(tmp_path / "m", arrays)
    # Labels where the training images should be.
    (folder / MNIST_FILES["x_train"]).write_bytes(_idx(arrays["y_train"], LABELS_MAGIC))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*magic number 0x00000801"):
        read_mnist_dir(folder)


def test_mismatched_counts_are_a_data_error(tmp_path: Path) -> None:
    arrays = _arrays(4, 3, 2, 2)
    arrays["y_train"] = arrays["y_train"][:3]
    folder = _write_mnist(tmp_path / "m", arrays)
    with pytest.raises(DataError, match="3 labels for 4 images"):
        read_mnist_dir(folder)


def test_a_file_cut_short_is_a_data_error(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path / "m", _arrays(4, 3, 2, 2))
    path = folder / MNIST_FILES["x_test"]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="cut short"):
        read_mnist_dir(folder)


# --- layers -------------------------------------------------------------------------------


def test_cards_and_plots_import_no_torch_and_models_no_service() -> None:
    code = (
        "import sys, kiln.library.digits, kiln.library.plots\n"
        "bad = [m for m in ('torch', 'pyro') if m in sys.modules]\n"
        "import inference.models.bnn, inference.models.vae\n"
        "bad += [m for m in ('celery', 'sqlalchemy', 'redis', 'db', 'worker', 'scheduler')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
