"""Submit-time check of a library model's fit: its options and data, by its model card."""

from __future__ import annotations

from typing import Any

from kiln.errors import DataError
from kiln.jobinfo import SviInfo
from kiln.library import DataRef, get_card, parse_options
from kiln.library.cards import check_option_bounds
from kiln.library.mnist import unpacked_bytes
from kiln.specs import LibraryFitSpec
from scheduler.kinds.base import CheckContext, Checked, NewDataset, Upload, device_fits_queue


def plain(value: Any) -> Any:
    """Facts made JSON-safe (numpy numbers and tuples to Python)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


def check_library_fit(spec: LibraryFitSpec, upload: Upload, ctx: CheckContext) -> Checked:
    """The card checks options and data (`digits` by name, a CSV, an MNIST folder packed as
    .npz); the options stored are the card's defaults updated by the user's."""
    card = get_card(spec.model)
    options = parse_options(card, dict(spec.options))
    check_option_bounds(card, options)  # before the card's check reads data with them
    if spec.data_kind == "npz" and upload.data is not None:
        # the arrays' unpacked size, from the zip directory, before the check unpacks them
        size, cap = unpacked_bytes(upload.data, spec.data), ctx.limits.max_dataset_bytes
        if size > cap:
            raise DataError(
                f"data `{spec.data}`: its arrays take {size} bytes unpacked; the limit is {cap}"
                " (KILN_MAX_DATASET_BYTES)"
            )
    ref = DataRef(spec.data_kind, spec.data, upload.data)
    facts = card.check(options, ref)
    device_fits_queue(spec)
    steps = int(facts.get("steps", 0) or 0)
    ctx.limits.check_steps(steps, "steps (epochs x batches per epoch)")
    dataset = None
    if upload.data is not None:
        dataset = NewDataset(
            upload.data, spec.data, spec.data_kind,
            [str(c) for c in facts.get("columns", [])], int(facts.get("rows", 0) or 0),
        )  # fmt: skip
    return Checked(
        spec=spec.model_copy(update={"options": options}),
        model=spec.model,
        info=SviInfo(data=plain(facts)),
        total_steps=steps,
        dataset=dataset,
        predict_rows=1,
    )
