"""Data sets shipped with Kiln: the installed package's kiln/data/ first, then ../shared/data.

A wheel (`make wheel`, setup.py) carries rugged_data.csv and ethusd_tweets.csv in kiln/data/,
with a NOTICE and README naming their sources. A checkout has no kiln/data/ (data sets are not
committed) and reads ../shared/data beside it, or beside the working directory, as before.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "data"
SHIPPED = ("rugged_data.csv", "ethusd_tweets.csv")


def data_file(name: str) -> Path | None:
    """The shipped data set `name` (a file name in SHIPPED), or None where there is none."""
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not a data set Kiln ships (those are: {SHIPPED})")
    checkout = Path(__file__).resolve().parents[1]
    beside = [root.parent / "shared" / "data" for root in (checkout, Path.cwd())]
    for folder in (PACKAGED, *beside):
        if (folder / name).is_file():
            return folder / name
    return None


def missing_message(name: str) -> str:
    """What to tell a user when data_file(name) found nothing."""
    return (
        f"{name} is neither in this installation ({PACKAGED}) nor in ../shared/data; give"
        " --data PATH to a copy (a wheel built with `make wheel` carries it)"
    )
