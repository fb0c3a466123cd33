"""Pure Pyro + torch: models, guides, the SVI runner, posterior summaries and fitted state.

Imports neither celery nor the database; takes plain values and yields events.
"""

from inference.events import Event, Finished, Started, Step

__all__ = ["Event", "Finished", "Started", "Step"]
