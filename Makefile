# Both entry points build .venv from nothing: torch (CPU wheel) first, then the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DEPS_STAMP := $(VENV)/.deps-installed
PYTEST_ARGS ?=
comma := ,

.PHONY: demo test venv install bench matrix behaviour clean

$(DEPS_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt $(TORCH) ".[test]"
	touch $@

venv: $(DEPS_STAMP)

# Reinstall the package itself (not editable) so tests run against what the wheel ships.
install: venv
	$(BIN)/python -m pip install -q --no-deps --force-reinstall .

demo: install
	$(BIN)/python demo/run_demo.py

test: install
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/guard_overhead.py
	$(BIN)/python benchmarks/static_checks.py
	$(BIN)/python benchmarks/suite_time.py

# The transformers version matrix (tox.ini); MATRIX_ENVS picks some, e.g. make matrix MATRIX_ENVS=tf446,tf50
MATRIX_ENVS ?= tf446,tf453,tf457,tf50,tf517,latest
matrix: venv
	$(BIN)/python -m pip install -q -c constraints.txt tox
	$(BIN)/python -m tox -e $(MATRIX_ENVS)

# docs/transformers-behaviour.md from real runs in each matrix environment (one command)
behaviour: venv
	$(BIN)/python -m pip install -q -c constraints.txt tox
	for env in $(subst $(comma), ,$(MATRIX_ENVS)); do \
		$(BIN)/python -m tox exec -e $$env -- python scripts/transformers_behaviour.py collect --out .matrix/$$env.json || exit 1; \
	done
	mkdir -p docs
	$(BIN)/python scripts/transformers_behaviour.py render .matrix/*.json > docs/transformers-behaviour.md

clean:
	rm -rf $(VENV) build dist .pytest_cache
