# edgeguard: `make demo` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8080
BIN    := $(VENV)/bin

# The real OpenFaaS runtime (optional; see local/components.py). Functions run under of-watchdog
# when it, faas-cli and the python3-http template are found: by default in ../shared/tools next to
# the repository, or ./template/python3-http for the template. Otherwise local/runtime.py stands in.
#   make up TOOLS=/path/to/tools            make test WATCHDOG=... TEMPLATE=... FAAS_CLI=...
#   make demo RUNTIME=local                 (auto | watchdog | local)
ifneq ($(TOOLS),)
export EDGEGUARD_TOOLS := $(TOOLS)
endif
ifneq ($(WATCHDOG),)
export EDGEGUARD_WATCHDOG := $(WATCHDOG)
endif
ifneq ($(TEMPLATE),)
export EDGEGUARD_TEMPLATE := $(TEMPLATE)
endif
ifneq ($(FAAS_CLI),)
export EDGEGUARD_FAAS_CLI := $(FAAS_CLI)
endif
ifneq ($(RUNTIME),)
export EDGEGUARD_RUNTIME := $(RUNTIME)
endif

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
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) build .pytest_cache
