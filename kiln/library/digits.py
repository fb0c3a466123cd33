"""Image data of the library (scikit-learn's 8x8 digits, MNIST's IDX files) and the cards of the
models fitted to it: `bnn-classifier` and `vae`. Torch-free: the scheduler checks with it.
"""

from __future__ import annotations

import functools
import io
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.errors import DataError, SpecError
from kiln.library.cards import DataRef, ModelCard, register
from kiln.library.mnist import (
    CLASSES,
    MNIST_FILES,
    WORKER_MAX_IMAGE_BYTES,
    check_arrays,
    read_mnist_dir,
    unpacked_bytes,
)

__all__ = [
    "BNN_CLASSIFIER",
    "VAE",
    "batch_indices",
    "load_images",
    "read_mnist_dir",
    "steps_per_epoch",
]

TEST_FRACTION = 0.2  # of the 1,797 digits: 360 test and 1,437 training images
Images = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


# --- Loading for a fit -------------------------------------------------------------------------


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # imported here: sklearn takes a second to import

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # 0..16 -> [0, 1]
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _split_digits(seed: int) -> Images:
    from sklearn.model_selection import train_test_split

    images, labels = _digits()
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed % 2**32
    )
    return x_train, y_train, x_test, y_test, {"source": "digits"}


def _scaled(images: np.ndarray, key: str, where: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if np.issubdtype(images.dtype, np.floating) and images.min() >= 0.0 and images.max() <= 1.0:
        return images.astype(np.float32)
    raise DataError(
        f"{where}: `{key}` must be uint8 (0..255) or floats in [0, 1] (got {images.dtype})",
        column=key,
    )


def _read_npz(data: DataRef) -> Images:
    where = f"data `{data.name}`"
    if not data.content:
        raise DataError(f"{where}: no content; pack an MNIST folder with read_mnist_dir()")
    unpacked = unpacked_bytes(data.content, data.name)
    if unpacked > WORKER_MAX_IMAGE_BYTES:
        raise DataError(
            f"{where}: its arrays take {unpacked} bytes unpacked; at most {WORKER_MAX_IMAGE_BYTES}"
        )
    try:
        with np.load(io.BytesIO(data.content), allow_pickle=False) as npz:
            missing = [key for key in MNIST_FILES if key not in npz.files]
            if missing:
                raise DataError(
                    f"{where}: no array `{missing[0]}` (have: {', '.join(npz.files) or 'none'})",
                    column=missing[0],
                )
            arrays = {key: npz[key] for key in MNIST_FILES}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{where}: not an .npz of MNIST arrays ({e})") from e
    check_arrays(arrays, where)
    facts = {"source": data.name}
    return (
        _scaled(arrays["x_train"], "x_train", where),
        arrays["y_train"].astype(np.int64),
        _scaled(arrays["x_test"], "x_test", where),
        arrays["y_test"].astype(np.int64),
        facts,
    )


def load_images(data: DataRef, seed: int) -> Images:
    """The images a job names, ready for a fit: (x_train (N, D) float32 in [0, 1], y_train (N,)
    int64, x_test, y_test, facts). `digits` is split 80/20 (stratified) by `seed`; an .npz of
    MNIST arrays comes split already. facts: source, train, test, inputs, classes,
    image_shape, rows.

    Raises DataError for a data kind other than the digits or an .npz, or for bad arrays.
    """
    if data.kind == "builtin" and data.name == "digits":
        x_train, y_train, x_test, y_test, facts = _split_digits(seed)
    elif data.kind == "npz":
        x_train, y_train, x_test, y_test, facts = _read_npz(data)
    else:
        raise DataError(
            f"data {data.kind} `{data.name}`: image models take --data digits or an MNIST"
            " folder (the four IDX files)"
        )
    image_shape = list(x_train.shape[1:])
    if len(image_shape) == 1:  # flat pixels: square when the count is a square
        side = math.isqrt(image_shape[0])
        image_shape = [side, side] if side * side == image_shape[0] else [1, image_shape[0]]
    x_train = np.ascontiguousarray(x_train.reshape(len(x_train), -1))
    x_test = np.ascontiguousarray(x_test.reshape(len(x_test), -1))
    facts.update(
        train=len(x_train),
        test=len(x_test),
        rows=len(x_train) + len(x_test),
        inputs=x_train.shape[1],
        classes=CLASSES,
        image_shape=image_shape,
    )
    return x_train, y_train, x_test, y_test, facts


# --- Mini-batches: a pure function of (seed, step) -------------------------------------------


def steps_per_epoch(items: int, batch_size: int) -> int:
    """Mini-batches per epoch; the last may be smaller, so an epoch covers every item once."""
    return max(1, math.ceil(items / batch_size))


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, items: int) -> np.ndarray:
    # SeedSequence takes non-negative integers: a negative seed maps to its 64-bit pattern.
    order = np.random.default_rng([seed & (2**64 - 1), epoch]).permutation(items)
    order.setflags(write=False)
    return order


def batch_indices(seed: int, step: int, items: int, batch_size: int) -> np.ndarray:
    """The training items of 0-based `step`: a slice of that epoch's permutation, drawn from a
    generator seeded by (seed, epoch), so a resumed fit draws the same batches."""
    per_epoch = steps_per_epoch(items, batch_size)
    epoch, within = divmod(step, per_epoch)
    return _epoch_order(seed, epoch, items)[within * batch_size : (within + 1) * batch_size]


# --- Cards ------------------------------------------------------------------------------------


def _check_options(model: str, options: Mapping[str, Any], positive: tuple[str, ...]) -> None:
    for key in positive:
        value = options[key]
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            kind = type(value).__name__
            raise SpecError(
                f"--set {key}={value}: `{model}` wants a positive {kind} for `{key}`",
                field="options",
            )


def _check_data(model: str, data: DataRef) -> dict[str, Any]:
    if not (data.kind == "builtin" and data.name == "digits") and data.kind != "npz":
        raise DataError(
            f"`{model}` takes --data digits or an MNIST folder (the four IDX files);"
            f" got {data.kind} `{data.name}`"
        )
    *_, facts = load_images(data, seed=0)
    return facts


def _facts(facts: dict[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    per_epoch = steps_per_epoch(facts["train"], options["batch_size"])
    return {**facts, "steps_per_epoch": per_epoch, "steps": per_epoch * options["epochs"]}


def check_bnn_classifier(options: Mapping[str, Any], data: DataRef) -> dict[str, Any]:
    """Positive sizes and rates, a threshold below the entropy of a uniform guess, image data."""
    name = BNN_CLASSIFIER.name
    _check_options(name, options, ("hidden", "epochs", "batch_size", "lr", "threshold"))
    if options["threshold"] > math.log(CLASSES):
        raise SpecError(
            f"--set threshold={options['threshold']}: `{name}` abstains when the predictive"
            f" entropy (nats) is above it; the most it can be is log {CLASSES} ="
            f" {math.log(CLASSES):.3f}",
            field="options",
        )
    return _facts(_check_data(name, data), options)


def check_vae(options: Mapping[str, Any], data: DataRef) -> dict[str, Any]:
    """Positive sizes and rates, image data."""
    name = VAE.name
    _check_options(name, options, ("latent", "hidden", "epochs", "batch_size", "lr", "test_every"))
    if options.get("likelihood") not in LIKELIHOODS:
        raise SpecError(
            f"--set likelihood={options.get('likelihood')}: `{name}` takes one of"
            f" {', '.join(LIKELIHOODS)}",
            field="options",
        )
    return _facts(_check_data(name, data), options)


# bernoulli: the Pyro example's (pixels as coin flips; grey levels enter as cross-entropy);
# continuous_bernoulli: a proper density on [0, 1] for grey pixels, sharper reconstructions.
LIKELIHOODS = ("bernoulli", "continuous_bernoulli")


BNN_CLASSIFIER = register(
    ModelCard(
        name="bnn-classifier",
        summary="Bayesian neural network classifier of images (one hidden ReLU layer, Normal(0, 1)"
        " priors, mean-field guide) that can say `I don't know` (predictive entropy)",
        defaults={"hidden": 32, "epochs": 100, "batch_size": 128, "lr": 0.01, "threshold": 0.8},
        data=("digits", "mnist"),
        check=check_bnn_classifier,
    )
)

VAE = register(
    ModelCard(
        name="vae",
        summary="Variational autoencoder of images (Bernoulli or continuous Bernoulli pixels,"
        " Normal(0, I) latent code)",
        defaults={
            "latent": 10,
            "hidden": 128,
            "epochs": 100,
            "batch_size": 32,
            "lr": 1e-3,
            "test_every": 1,
            "likelihood": "bernoulli",
        },
        data=("digits", "mnist"),
        check=check_vae,
    )
)
