"""Build hook: stage the data sets the demo and the library's examples read into the wheel.

The project keeps data sets out of the repository (they live in ../shared/data beside the
checkout), so a wheel would lack them. This build_py copies DATA_FILES from KILN_SHARED_DATA
(default ../shared/data) into the built package as kiln/data/, with a NOTICE naming where each
came from, at build time only: nothing is written into the source tree, and an editable
install (`pip install -e .`) reads ../shared/data as before. `make wheel` runs it.
Everything else about the project is in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# The demo's rugged data, and the forecast and HMM models' example data (kiln.packaged_data).
DATA_FILES = ("rugged_data.csv", "ethusd_tweets.csv")
SOURCES = "README.md"  # where each file came from, written by whoever added it to shared/data


class build_py_with_data(build_py):  # noqa: N801  (setuptools' command naming)
    """build_py, then kiln/data/: DATA_FILES, their README and a generated NOTICE."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads ../shared/data where it is
        shared = Path(os.environ.get("KILN_SHARED_DATA") or HERE.parent / "shared" / "data")
        missing = [n for n in (*DATA_FILES, SOURCES) if not (shared / n).is_file()]
        if missing:
            raise SystemExit(
                f"kiln wheel: {', '.join(missing)} not found in {shared}; build beside the"
                " shared data folder, or point KILN_SHARED_DATA at a folder that has them"
            )
        target = Path(self.build_lib) / "kiln" / "data"
        target.mkdir(parents=True, exist_ok=True)
        lines = [
            "Data sets shipped with Kiln (copied at build time from the project's shared data",
            "folder; they are not part of Kiln's source). Where each came from, and its",
            "licence notes, are in README.md beside this file.",
            "",
        ]
        for name in (*DATA_FILES, SOURCES):
            shutil.copyfile(shared / name, target / name)
            digest = hashlib.sha256((target / name).read_bytes()).hexdigest()
            lines.append(f"{name}  sha256 {digest}")
        (target / "NOTICE").write_text("\n".join(lines) + "\n", encoding="utf-8")


setup(cmdclass={"build_py": build_py_with_data})
