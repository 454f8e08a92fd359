# Set-up and everyday commands. `make demo` and `make test` are the README's
# two commands: each installs what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.phiquant-installed

# OpenMP threads that spin while idle cost llama.cpp ~10x decode speed on a
# busy machine; passive waiting avoids it.
export OMP_WAIT_POLICY ?= PASSIVE
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: demo test test-fast install lint format freeze clean

demo: install  ## Install everything, then build, run and tabulate the demo model
	$(BIN)/phiquant quantize --force

test: install  ## Run the whole test suite, slow end-to-end tests included
	$(BIN)/python -m pytest

test-fast: install  ## Only the quick tests
	$(BIN)/python -m pytest -m "not slow"

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -c requirements/constraints.txt -e '.[all,test]'
	@# optimum-intel declares torchvision, but PyPI's torchvision does not
	@# import beside the CPU torch build and breaks optimum.intel and the
	@# ONNX builder; nothing in phiquant needs it.
	$(BIN)/python -m pip uninstall --yes torchvision
	touch $@

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

freeze: install  ## Re-pin requirements/constraints.txt from the working venv
	{ echo '# The tested environment, written by `make freeze`; used by `make install`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torchvision=='; \
	} > requirements/constraints.txt

clean:
	rm -rf $(VENV) phiquant-out .pytest_cache
