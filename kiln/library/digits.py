"""Image data of the library (scikit-learn's 8x8 digits, MNIST's IDX files) and the cards of the
models fitted to it: `bnn-classifier` and `vae`. Torch-free: the scheduler checks with it.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import DataError, SpecError
from kiln.library.cards import DataRef, ModelCard, register

__all__ = [
    "BNN_CLASSIFIER",
    "VAE",
    "batch_indices",
    "load_images",
    "read_mnist_dir",
    "steps_per_epoch",
]

CLASSES = 10
TEST_FRACTION = 0.2  # of the 1,797 digits: 360 test and 1,437 training images
# What each array of the packed .npz is read from, in an MNIST folder.
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# The IDX magic number: two zero bytes, the type (0x08: unsigned byte), the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IDX_HEADER = 4
# What a folder's arrays may take unpacked when no cap is given (KILN_MAX_DATASET_BYTES's
# default), and the most a worker unpacks from a stored .npz whatever was stored.
MAX_IMAGE_BYTES = 512 * 1024 * 1024
WORKER_MAX_IMAGE_BYTES = 2 * 1024 * 1024 * 1024

Images = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


# --- MNIST's IDX files, read by the submitter -----------------------------------------------


def _find_idx_file(folder: Path, name: str) -> Path:
    # torchvision keeps them in <root>/MNIST/raw; some mirrors write `train-images.idx3-ubyte`.
    places = (folder, folder / "raw", folder / "MNIST" / "raw")
    names = (name, f"{name}.gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz")
    for place in places:
        for candidate in names:
            if (place / candidate).is_file():
                return place / candidate
    raise DataError(
        f"MNIST folder {folder}: no `{name}` (or `{name}.gz`) in it, in raw/ or in MNIST/raw/;"
        " it needs the four IDX files: " + ", ".join(MNIST_FILES.values()),
        column=name,
    )


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_idx(path: Path, magic: int, ndim: int, budget: int) -> np.ndarray:
    """One IDX file of unsigned bytes with `ndim` dimensions, as a uint8 array.

    A .gz file is unpacked as a stream: the header's shape is read first and checked against
    `budget` (bytes left of the data set cap), and never more than the header's size plus one
    byte is unpacked, so a small file that unpacks to gigabytes is refused without unpacking it.
    """
    header = IDX_HEADER * (1 + ndim)
    try:
        with _open(path) as stream:
            head = stream.read(header)
            found = int.from_bytes(head[:IDX_HEADER], "big")
            if len(head) >= IDX_HEADER and found != magic:
                what = "images (3 dimensions)" if magic == IMAGES_MAGIC else "labels (1 dimension)"
                raise DataError(
                    f"`{path.name}`: magic number {found:#010x}, want {magic:#010x} for"
                    f" unsigned-byte {what}; is it the right MNIST file?",
                    column=path.name,
                )
            if len(head) < header:
                raise DataError(
                    f"`{path.name}`: {len(head)} bytes, shorter than an IDX header; is it an"
                    " MNIST file?",
                    column=path.name,
                )
            shape = tuple(
                int.from_bytes(head[IDX_HEADER * (1 + i) : IDX_HEADER * (2 + i)], "big")
                for i in range(ndim)
            )
            want = math.prod(shape)
            if header + want > budget:
                raise DataError(
                    f"`{path.name}`: its header says {shape} ({want} bytes unpacked), more than"
                    f" the {max(budget, 0)} bytes left of the data set cap"
                    " (KILN_MAX_DATASET_BYTES)",
                    column=path.name,
                )
            body = stream.read(want + 1)  # one byte more than the header says: trailing data
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"`{path.name}`: cannot read it ({e})", column=path.name) from e
    if len(body) != want:
        size = f"{len(body)} bytes" if len(body) < want else "more bytes"
        raise DataError(
            f"`{path.name}`: {size} of data, the header says {shape} ({want} bytes); is the"
            f" file {'cut short' if len(body) < want else 'damaged'}?",
            column=path.name,
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_mnist_dir(path: str | Path, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """Pack an MNIST folder (the four IDX files, plain or .gz) into .npz bytes: uint8 arrays
    x_train (N, rows, cols), y_train (N,), x_test, y_test. The submitter calls this; the bytes
    are the job's data set (DataRef("npz", folder name, bytes)).

    `max_bytes` caps the four files unpacked (KILN_MAX_DATASET_BYTES): each header's shape is
    checked against what is left before the file's data is read or unpacked.

    Raises DataError naming the file: missing, a bad magic number, cut short, over the cap,
    or counts that do not match.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder}: not a directory")
    arrays: dict[str, np.ndarray] = {}
    budget = max_bytes
    for key, name in MNIST_FILES.items():
        found = _find_idx_file(folder, name)
        if key.startswith("x"):
            arrays[key] = _read_idx(found, IMAGES_MAGIC, 3, budget)
        else:
            arrays[key] = _read_idx(found, LABELS_MAGIC, 1, budget)
        budget -= arrays[key].nbytes
    for part in ("train", "test"):
        images, labels = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if len(images) != len(labels):
            raise DataError(
                f"`{MNIST_FILES[f'y_{part}']}`: {len(labels)} labels for {len(images)} images"
                f" in `{MNIST_FILES[f'x_{part}']}`",
                column=MNIST_FILES[f"y_{part}"],
            )
    _check_arrays(arrays, f"MNIST folder {folder}")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x_train=arrays["x_train"],
        y_train=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
    )
    return buffer.getvalue()


def unpacked_bytes(content: bytes, name: str = "data") -> int:
    """What an .npz's arrays take unpacked, from its zip directory (nothing is unpacked): the
    sizes a reader will get, since zipfile stops at each member's declared size."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"data `{name}`: not an .npz of MNIST arrays ({e})") from e


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


def _check_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    shapes = {key: arrays[key].shape for key in ("x_train", "x_test")}
    for key, shape in shapes.items():
        if len(shape) not in (2, 3) or shape[0] == 0:
            raise DataError(
                f"{where}: `{key}` has shape {shape}; want (images, rows, cols) or"
                " (images, pixels), with at least one image",
                column=key,
            )
    if shapes["x_train"][1:] != shapes["x_test"][1:]:
        raise DataError(
            f"{where}: training images are {shapes['x_train'][1:]}, test images"
            f" {shapes['x_test'][1:]}; they must be the same size",
            column="x_test",
        )
    for key in ("y_train", "y_test"):
        labels = arrays[key]
        if labels.ndim != 1 or len(labels) != len(arrays["x" + key[1:]]):
            raise DataError(
                f"{where}: `{key}` has shape {labels.shape} for {len(arrays['x' + key[1:]])}"
                " images; want one label per image",
                column=key,
            )
        if not np.issubdtype(labels.dtype, np.integer) or (
            len(labels) and (labels.min() < 0 or labels.max() >= CLASSES)
        ):
            raise DataError(
                f"{where}: `{key}` must hold the classes 0..{CLASSES - 1}"
                f" (got {labels.dtype}, {labels.min()}..{labels.max()})",
                column=key,
            )


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
    _check_arrays(arrays, where)
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
