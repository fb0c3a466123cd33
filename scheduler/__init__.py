"""From "a user wants this" to "a worker has it": spec validation, datasets, routing, sending."""

from scheduler.enqueue import submit_fit
from scheduler.spec import FitSpec, parse_spec

__all__ = ["FitSpec", "parse_spec", "submit_fit"]
