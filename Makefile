# pesa: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint types pytest test-django test-django6 test-djangos bench soak screenshots clean install

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Run a payment for every emulator scenario end to end (emulator + SQLite, no credentials).
demo: $(STAMP)
	$(BIN)/pesa demo

## Lint, type-check and run the whole test suite (what CI runs).
# All at once: mypy and ruff use one core for a minute, the Django sessions mostly wait on
# sockets and subprocesses (and the second venv installs meanwhile), and the main suite fills
# what is left of the two cores. Each one's output is printed when it ends; any failure
# fails `make test`.
test: $(STAMP)
	$(MAKE) -j5 --output-sync=target lint types pytest test-django test-django6

test-djangos:
	$(MAKE) -j2 --output-sync=target test-django test-django6

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/ruff format --check src tests $(wildcard benchmarks)

types: $(STAMP)
	$(BIN)/mypy --strict src

# Most tests wait on sockets, subprocesses, sleeps and databases rather than the CPU: four
# workers on two cores (six were slower: contention). PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 4

# --dist loadgroup: tests marked xdist_group("x") share one worker (one browser, one
# gateway per dashboard test module); the rest are spread as usual.
pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## The inner loop: lint, types and every test not marked slow (no subprocess scenarios).
test-fast: lint types
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

## Screenshots of every dashboard page (the browser tests), written to docs/screenshots.
screenshots: $(STAMP)
	PESA_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/dashboard/test_browser.py -q $(PYTEST_ARGS)

## The Django app's tests (pytest-django, loaded only for them) under Django 5.2 LTS, the
## newest Django that runs on the main venv's Python 3.11.
test-django: $(STAMP)
	$(BIN)/pytest -p django tests/pesa_django $(DJANGO_PYTEST_ARGS)

## The same tests under the current Django 6.x, which needs Python 3.12+: a small second
## venv with only what they use (DJANGO6_PYTHON=/path/to/python3.12 to choose the Python).
DJANGO6_VENV := .venv-django6
DJANGO6_STAMP := $(DJANGO6_VENV)/.installed

$(DJANGO6_STAMP): pyproject.toml
	@py="$(DJANGO6_PYTHON)"; \
	if [ -z "$$py" ]; then \
	  for candidate in python3.13 python3.12 $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3; do \
	    if "$$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then \
	      py="$$candidate"; break; \
	    fi; \
	  done; \
	fi; \
	if [ -z "$$py" ]; then \
	  echo "Django 6 needs Python 3.12 or newer and none was found: set DJANGO6_PYTHON"; exit 1; \
	fi; \
	test -x $(DJANGO6_VENV)/bin/python || "$$py" -m venv $(DJANGO6_VENV)
	$(DJANGO6_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DJANGO6_VENV)/bin/python -m pip install --quiet -e '.[server,django]' 'django>=6,<7' \
	    pytest pytest-django pytest-asyncio pytest-timeout
	@touch $@

# The example shop and the two-process reconcile test do not depend on Django's version;
# the walk-through (Django 6's own startproject template) does, and runs here too.
test-django6: $(DJANGO6_STAMP)
	$(DJANGO6_VENV)/bin/pytest -p django tests/pesa_django \
	    -k "not example_shop and not reconcile_loops" $(DJANGO_PYTEST_ARGS)

## Benchmarks: figures written to BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## Full-size reliability suite: figures written to RELIABILITY.md.
soak: $(STAMP)
	PESA_SOAK=1 $(BIN)/pytest tests/reliability $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DJANGO6_VENV) .mypy_cache .ruff_cache .pytest_cache
