# The two quick-start commands: `make run` and `make test`. Each creates .venv if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/conductor serve

test: $(STAMP)
	$(BIN)/ruff check conductor tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/decision_time.py
	$(BIN)/python benchmarks/starvation.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
