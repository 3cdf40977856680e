# Both entry points build .venv from nothing: torch (CPU wheel) first, then the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DEPS_STAMP := $(VENV)/.deps-installed
PYTEST_ARGS ?=
comma := ,

.PHONY: demo test test-distributed lint venv install bench matrix behaviour baseline-roundtrip clean

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
	$(BIN)/python -m pytest -n 2 -m "not distributed" $(PYTEST_ARGS)

# torchrun / accelerate launch stories (two CPU ranks each, about a minute): .ci/run runs them after make test
test-distributed: install
	$(BIN)/python -m pytest -m distributed -p no:cacheprovider $(PYTEST_ARGS)

# ruff check, ruff format --check, mypy strict over the package and the tests (pyproject.toml)
LINT_STAMP := $(VENV)/.lint-installed
$(LINT_STAMP): $(DEPS_STAMP) constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt ruff mypy
	touch $@

lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/guard_overhead.py
	$(BIN)/python benchmarks/static_checks.py
	$(BIN)/python benchmarks/suite_time.py

# The transformers version matrix (tox.ini); MATRIX_ENVS picks some, e.g. make matrix MATRIX_ENVS=tf446,tf50
MATRIX_ENVS ?= tf446,tf453,tf457,tf50,tf517,latest
matrix: venv
	$(BIN)/python -m pip install -q -c constraints.txt tox
	$(BIN)/python -m tox -e $(MATRIX_ENVS)

# Record a baseline of the bundled suite (Qwen3 layout) under transformers 4.57, compare it under the
# latest: the run must fail with the diff (4.57 writes None over bos; 5.18+ keeps it).
ROUNDTRIP_ARGS := --tokenguard --pyargs pytest_tokenguard.suite -p no:cacheprovider -q -k "qwen3-0.6b and not base"
baseline-roundtrip: venv
	$(BIN)/python -m pip install -q -c constraints.txt tox
	mkdir -p .matrix && rm -f .matrix/baseline-4.57.json
	$(BIN)/python -m tox run -e tf457,latest --notest
	$(BIN)/python -m tox exec -e tf457 -- python -m pytest $(ROUNDTRIP_ARGS) --tokenguard-baseline .matrix/baseline-4.57.json
	$(BIN)/python -m tox exec -e latest -- python -m pytest $(ROUNDTRIP_ARGS) --tokenguard-baseline .matrix/baseline-4.57.json; \
		status=$$?; test $$status -eq 1 && echo "baseline round trip: the upgrade shows as failures with a diff (exit 1)"

# docs/transformers-behaviour.md from real runs in each matrix environment (one command)
behaviour: venv
	$(BIN)/python -m pip install -q -c constraints.txt tox
	$(BIN)/python -m tox run -e $(MATRIX_ENVS) --notest
	for env in $(subst $(comma), ,$(MATRIX_ENVS)); do \
		$(BIN)/python -m tox exec -e $$env -- python scripts/transformers_behaviour.py collect --out .matrix/$$env.json || exit 1; \
	done
	mkdir -p docs
	$(BIN)/python scripts/transformers_behaviour.py render .matrix/*.json > docs/transformers-behaviour.md

clean:
	rm -rf $(VENV) build dist .pytest_cache
