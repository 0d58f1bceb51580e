# Two entry points do all the setup on a fresh machine (see README.md):
#   make demo   the main job: couplednoise demo (built-in lab model unless MODEL= names a checkpoint)
#   make test   lint, format check and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= couplednoise-demo
MODEL ?=

.PHONY: setup demo test lint format bench clean

$(BIN)/couplednoise: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet -c constraints.txt --no-deps k-diffusion==0.1.1.post1 dctorch==0.1.2
	touch $@

setup: $(BIN)/couplednoise

demo: setup
	$(BIN)/couplednoise demo --out $(OUT) $(if $(MODEL),--model $(MODEL))

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	bash .ci/browser-deps
	$(BIN)/python -m pytest -q

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
