"""Progress events that runners yield: Started, Step, Checkpoint, Finished (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Started:
    """The runner is about to take its first step; says what it chose (ELBO, device)."""

    elbo: str
    device: str
    total: int
    note: str = ""
    first_step: int = 0  # above 0 when resumed from a checkpoint


@dataclass(frozen=True, slots=True)
class Step:
    """One optimisation step done: 0-based step index, the total, and that step's loss."""

    step: int
    total: int
    loss: float


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Resumable state after `step` steps (the next step to take is `step`), as bytes."""

    step: int
    content: bytes

    def __repr__(self) -> str:
        return f"Checkpoint(step={self.step}, {len(self.content)} bytes)"


@dataclass(frozen=True, slots=True)
class Finished:
    """The last step is done."""

    steps: int
    final_loss: float


Event = Started | Step | Checkpoint | Finished
