"""Kiln: distributed batch inference for Pyro models (shared base: settings, errors, catalog)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
