# The README's two commands: `make demo` and `make test`. Each makes its own environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/vwwfast: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

.PHONY: install demo test test-fast
install: $(BIN)/vwwfast

demo: install
	bash tools/demo.sh

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"
