# The two commands a newcomer runs: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Two workers fit the 2-core CI machine; override with `make test PYTEST_ARGS=...`.
PYTEST_ARGS ?= -n 2

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,export]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --workdir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs/demo
