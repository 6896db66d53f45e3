# Two entry points for a fresh machine: `make demo` and `make test`. Both install what they
# need into .venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.retouch-installed
# basicsr builds from source against the installed torch, so torch goes in first.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= retouch-output/demo

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/retouch run samples --preset quick --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check lib tasks flows deployments cli tests training web bench
	$(BIN)/ruff format --check lib tasks flows deployments cli tests training web bench
	$(BIN)/mypy -p retouch

clean:
	rm -rf $(VENV) retouch-output .pytest_cache
