# The two commands a newcomer runs: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Two workers fit the 2-core CI machine; override with `make test PYTEST_ARGS=...`.
# Under CI (CI=true) the slow tests are left out except those also marked `ci` (at least one end-to-end
# training run), which keeps CI under 15 minutes on 2 cores; locally everything runs.
PYTEST_ARGS ?= -n 2 $(if $(CI),-m "not slow or ci",)

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
