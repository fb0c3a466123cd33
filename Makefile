# One command for the demo, one for the tests; both build the virtual environment first.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The dashboard's browser tests (tests/web) drive Debian's chromium through Playwright, which
# cannot download browsers of its own here: `make test` installs the package when it is missing.
CHROMIUM := /usr/bin/chromium

.PHONY: install demo test test-slow bench bench-sweep bench-startup wheel lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: the CPU build; anything looser pulls several GB of CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

demo: $(STAMP)
	$(VENV)/bin/kiln demo

# Two test processes (pytest-xdist, a file each at a time): most end-to-end time is waiting on
# worker processes, so two overlap well on two cores.
test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -m "not slow" -q --durations=15 -n 2 --dist loadfile

# The PostgreSQL outage test stops the one server every other test uses: it runs alone, last.
test-slow: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -m "slow and not outage" -q -n 2 --dist loadfile
	$(PY) -m pytest -m outage -q

bench: $(STAMP)
	$(PY) bench/bench_fit_overhead.py
	$(PY) bench/bench_predict.py

bench-sweep: $(STAMP)
	$(PY) bench/bench_sweep.py

bench-startup: $(STAMP)
	$(PY) bench/bench_startup.py

# The wheel, built from a copy of the sources in dist/stage (so no build/ or *.egg-info lands
# in the checkout); setup.py stages ../shared/data's demo and example data into it as
# kiln/data/ (the data sets are never committed). Output: dist/kiln-*.whl.
WHEEL_SOURCES := pyproject.toml setup.py README.md kiln db inference scheduler worker
wheel: $(STAMP)
	rm -rf dist/stage && mkdir -p dist/stage
	cp -r $(WHEEL_SOURCES) dist/stage/
	KILN_SHARED_DATA=$(CURDIR)/../shared/data $(PY) -m pip wheel --quiet --no-deps \
		--no-build-isolation -w dist dist/stage
	rm -rf dist/stage

# mypy reads its files and strictness from pyproject.toml's [tool.mypy].
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache
