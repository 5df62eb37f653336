# edgeguard: `make demo` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8080
BIN    := $(VENV)/bin

.PHONY: venv test demo up bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "edgeguard needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
	@touch $@

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/python -m local.demo --port $(PORT)

up: venv
	$(BIN)/python -m local.gateway --port $(PORT)

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build .pytest_cache
