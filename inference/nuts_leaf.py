"""One NUTS leaf for every chain of a unit: a leapfrog step with its energy, multinomial
weight, progressive sample and the U-turn checks that end at it (leaf_core), and the
checkpoint slots those checks use. Tensor operations only: inference.potential compiles the
leaf with the potential inside; inference.nuts builds the trees from it."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from inference.nuts_state import GradFn

MAX_DELTA_H = 1000.0  # a leapfrog step whose energy error exceeds this diverges
_INF = math.inf


def log_weight(h0: Tensor, h: Tensor) -> Tensor:
    """H0 - H, the log multinomial weight of a state; -inf for a non-finite energy."""
    return torch.nan_to_num(h0 - h, nan=-_INF, posinf=-_INF, neginf=-_INF)


# One leaf of a subtree for every chain: (edge z, r, half-step kick; step * M^-1, half step,
# M^-1, H0, building mask, the subtree's sample z/pe/grad, its log weight, log u, NaN, the
# subtree's momentum sum, the checkpoints (base sums, M^-1 p), the store and check masks) ->
# (edge z, r, grad, pe, M^-1 r, log weight, ok, new subtree log weight, sample z/pe/grad,
# kick, momentum sum, checkpoints, which chains go on building).
LeafFn = Callable[..., tuple[Tensor, ...]]


def leaf_core(
    grad_fn: GradFn, ez: Tensor, er: Tensor, kick: Tensor, step_im: Tensor, half: Tensor,
    im: Tensor, h0: Tensor, b: Tensor, sz: Tensor, spe: Tensor, sg: Tensor, sub_lw: Tensor,
    log_u: Tensor, not_built: Tensor, sub_sum: Tensor, ck_base: Tensor, ck_v: Tensor,
    store: Tensor, check: Tensor,
) -> tuple[Tensor, ...]:  # fmt: skip
    """A leapfrog step from the subtree's edge, its energy and multinomial weight, the
    subtree's progressive sample, and the U-turn checks that end at this leaf. Tensor
    operations only, so a caller may compile it with the potential inside
    (inference.potential.Potential.leaf); the first leaf of a subtree is the general case with
    sub_lw = -inf.

    The checks (see checkpoint_slots): an even leaf stores its checkpoint where `store`
    (slots, 1, 1) is set; an odd leaf checks the slots where `check` is set. The last output
    says which chains go on building."""
    r_half = er - kick
    zn = torch.where(b, ez + step_im * r_half, ez)
    pen, gn = grad_fn(zn)
    kick = half * gn
    rn = r_half - kick
    vn = rn * im  # M^-1 p: the kinetic energy and the U-turn checks
    pe1 = pen.unsqueeze(1)
    h = torch.add(pe1, (rn * vn).sum(-1, keepdim=True), alpha=0.5)  # as hamiltonian()
    lw = torch.where(b, log_weight(h0, h), not_built)
    ok = lw >= -MAX_DELTA_H
    new_lw = torch.logaddexp(sub_lw, lw)
    take = ok & (log_u < lw - new_lw)
    ck_base = torch.where(store, sub_sum, ck_base)
    ck_v = torch.where(store, vn, ck_v)
    sub_sum = sub_sum + rn
    rho = sub_sum - ck_base
    ends = torch.minimum((rho * vn).sum(-1, keepdim=True), (rho * ck_v).sum(-1, keepdim=True))
    going = ok & ((ends > 0.0) | ~check).all(0)
    # A chain that stops here keeps its last good position as its edge: the leaves its batch
    # still builds evaluate it there, not at a point where the model fails (a Cholesky of a
    # matrix that is not positive definite raises, and every such leaf would take the slow
    # plain step). Its sample is left as the leaf made it.
    edge = torch.where(going, zn, ez)
    return (edge, rn, gn, pe1, vn, lw, ok, new_lw, torch.where(take, zn, sz),
            torch.where(take, pe1, spe), torch.where(take, gn, sg), kick, sub_sum, ck_base,
            ck_v, going)  # fmt: skip


def checkpoint_count(max_depth: int) -> int:
    """How many checkpoint slots a tree of at most `max_depth` doublings uses."""
    return max(max_depth - 1, 1)


@lru_cache(maxsize=4096)
def slot_masks(slots: int, n: int) -> tuple[Tensor, Tensor]:
    """(store, check) for leaf n, each (slots, 1, 1) bool: the slot an even leaf stores its
    checkpoint in, the slots an odd leaf checks (leaf_core). Shared: never written to."""
    lo, hi = checkpoint_slots(n)
    store = torch.zeros((slots, 1, 1), dtype=torch.bool)
    check = torch.zeros((slots, 1, 1), dtype=torch.bool)
    if n % 2 == 0:
        store[hi] = True
    else:
        check[lo:hi] = True
    return store, check


def checkpoint_slots(n: int) -> tuple[int, int]:
    """Leaf n of a subtree (0-based, in build order) and the checkpoint slots it uses.

    Even n: (0, slot), its own slot popcount(n), where it stores its checkpoint. Odd n: the
    aligned sub-subtrees that end at n (sizes 2, 4, .., 2**trailing_ones(n)) start at even
    leaves whose slots are lo .. hi - 1, (lo, hi) = (popcount(n) - trailing_ones(n),
    popcount(n)); no leaf in between overwrites them (its popcount is larger).
    """
    if n % 2 == 0:
        return 0, n.bit_count()
    hi = n.bit_count()
    return hi - ((n ^ (n + 1)).bit_length() - 1), hi
