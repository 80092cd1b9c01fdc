# Two commands do everything on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Reinstall when the dependency list or the pinned versions change.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: help install sandbox lock up test lint bench contracts clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) sandbox  ## create .venv, install the package and the sandbox (idempotent)

sandbox:  ## install the OS packages that sandbox tenant workloads (bubblewrap, passt; idempotent)
	@sh deploy/install-sandbox.sh

lock: | $(BIN)/python  ## re-resolve the newest allowed versions and pin them in constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade -e '.[test]'
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

up: install  ## migrate the embedded database and start API + controllers on :8080
	$(BIN)/aicloud db upgrade
	$(BIN)/aicloud serve

test: install  ## install what tests need and run the whole suite
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install  ## ruff + the architecture contracts (import-linter)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports src/aicloud/architecture.ini --no-cache

bench: install  ## run the benchmarks; prints ratios against each baseline
	@sh bench/install-wrk.sh
	$(BIN)/python -m bench

contracts: install  ## regenerate contracts/openapi.json from the app
	$(BIN)/python -m aicloud.api.contract contracts/openapi.json

clean:  ## remove the venv and local state
	rm -rf $(VENV) var .pytest_cache .ruff_cache .import_linter_cache
