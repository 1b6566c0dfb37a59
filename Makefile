# The two commands a newcomer runs: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= $(shell command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The live demo: ampflow serve --demo, simulated OCPP stations of a Caltech day at x60, a DR event
# a minute in, and a live view of site power against its limit (API on :8000). Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/ampflow demo-live

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.allocator --json
	$(BIN)/python -m benchmarks.scheduler --json
	$(BIN)/python -m benchmarks.replay_speed --json
	$(BIN)/python -m benchmarks.quality --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
