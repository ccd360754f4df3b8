# pg-extras: `make demo` runs the main job, `make test` runs the test suite. Both create .venv if missing.
# CPU machines get the CPU torch wheel pinned below; GPU users: see README ("Installing with CUDA").
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=

.PHONY: setup demo test lint benchmark benchmark-quick clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(PIP_TORCH_ARGS)
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m sb3_pg_extras.zoo demo

test: setup
	$(PY) -m pytest -n 2 -q tests

lint: setup
	$(VENV)/bin/ruff check pg_extras sb3_pg_extras torchrl_pg_extras torchrl_configs tests benchmarks examples
	$(VENV)/bin/ruff format --check pg_extras sb3_pg_extras torchrl_pg_extras torchrl_configs tests benchmarks examples

benchmark: setup
	$(PY) -m benchmarks.run

benchmark-quick: setup
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
