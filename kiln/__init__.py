"""Kiln: distributed batch inference for Pyro models (shared base: settings, errors, catalog).

`from kiln import Client` gives the Python API (kiln.client); it is imported on first use so
that `import kiln` stays light. It also imports kiln.remote, so that `Client()` is a
RemoteClient (the HTTP API) when KILN_API_URL is set.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from kiln.client import Client
        from kiln.remote import RemoteClient

        assert Client.over_api is RemoteClient  # kiln.remote registered itself
        return Client
    raise AttributeError(name)
