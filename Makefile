# pesa: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint types pytest bench soak screenshots clean install

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
test: lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/ruff format --check src tests $(wildcard benchmarks)

types: $(STAMP)
	$(BIN)/mypy --strict src

# Most tests wait on sockets, subprocesses and databases rather than the CPU: four workers
# keep the whole suite well under ten minutes on two cores. PYTEST_WORKERS=0 runs serially.
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

## Benchmarks: figures written to BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## Full-size reliability suite: figures written to RELIABILITY.md.
soak: $(STAMP)
	PESA_SOAK=1 $(BIN)/pytest tests/reliability $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
