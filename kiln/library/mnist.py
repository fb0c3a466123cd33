"""MNIST's IDX files (a folder of four, gzipped or not) packed into one .npz, each header
checked against the data set cap before its data is read or unpacked; and what a stored .npz
takes unpacked, from its zip directory. Torch-free: the submitter and scheduler use it."""

from __future__ import annotations

import gzip
import io
import math
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kiln.errors import DataError

CLASSES = 10
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
    check_arrays(arrays, f"MNIST folder {folder}")
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


def check_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """The four arrays of an image set: images of one size, one label 0..9 per image."""
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
