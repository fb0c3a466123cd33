"""Packing a sweep's members into vectorised batches: which may share one, and how."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kiln.errors import SpecError
from kiln.specs import FitSpec
from kiln.sweepspec import PACKABLE_KEYS, SweepSpec

VECTOR_GUIDES = ("AutoNormal",)  # a guide whose parameters are per member (inference.vectorized)
VECTOR_OPTIMS = ("Adam",)


@dataclass(frozen=True, slots=True)
class Member:
    """One fit of a sweep: its position, what sets it apart (for `jobs sweep show`), its spec."""

    index: int
    settings: dict[str, Any]
    spec: FitSpec


@dataclass(frozen=True, slots=True)
class Plan:
    """Members packed into batches (lists of member indices) and those run one by one, with
    the reason each of those could not be packed."""

    batches: list[list[int]]
    single: list[int]
    why_single: dict[int, str]


def unpackable(spec: FitSpec) -> str | None:
    """Why a member cannot share a vectorised batch (None: it can)."""
    if spec.guide not in VECTOR_GUIDES:
        return f"guide {spec.guide} couples a fit's sites (one covariance per fit)"
    if spec.optim not in VECTOR_OPTIMS:
        return f"optim {spec.optim} (vectorised batches use Adam)"
    return None


def pack_key(spec: FitSpec, terms: tuple[str, ...]) -> str:
    """Members with equal keys may share a batch: they differ only in seed, resample, group or
    the options in PACKABLE_KEYS (a tensor per member)."""
    shared = spec.model_dump(
        mode="json", exclude={"seed", "group", "bootstrap", "bootstrap_seed", *PACKABLE_KEYS}
    )
    return json.dumps([shared, list(terms)], sort_keys=True)


def member_bytes(rows: int, terms: int, num_samples: int, steps: int) -> int:
    """A memory model of one member of a batch (float32): its data, weights and per-row
    intermediates kept for the gradient, its posterior draws, its loss curve."""
    per_row = 4 * (terms + 3) * 4  # X, y, weights, mean and log-densities, ~4 live copies
    return rows * per_row + num_samples * (terms + 1) * 4 * 3 + steps * 8 * 2


def plan(
    spec: SweepSpec, members: list[Member], terms: dict[str | None, tuple[str, ...]], size: int
) -> Plan:
    """Pack members into batches of at most `size` (same pack key, in member order)."""
    if spec.vectorize == "off":
        return Plan([], [m.index for m in members], {m.index: "--vectorize off" for m in members})
    groups: dict[str, list[int]] = {}
    why: dict[int, str] = {}
    for m in members:
        reason = unpackable(m.spec)
        if reason is not None:
            if spec.vectorize == "on":
                raise SpecError(
                    f"--vectorize on: member {m.index} ({_label(m.settings)}) cannot be packed:"
                    f" {reason}; use --vectorize auto to run such members as ordinary jobs",
                    field="vectorize",
                )
            why[m.index] = reason
            continue
        groups.setdefault(pack_key(m.spec, terms[m.spec.group]), []).append(m.index)
    batches: list[list[int]] = []
    single = sorted(why)
    for indices in groups.values():
        if len(indices) == 1 and spec.vectorize == "auto":
            single.append(indices[0])
            why[indices[0]] = "no other member shares its settings"
            continue
        batches.extend(indices[i : i + size] for i in range(0, len(indices), size))
    return Plan(batches, sorted(single), why)


def _label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())
