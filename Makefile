# Every target creates or refreshes .venv first, so each works as the first
# command on a fresh clone. Pins live in constraints.txt (torch==2.13.0 above all).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/python -m valuegym.demo

# The web app's browser tests drive Debian's Chromium (never a browser downloaded at run time);
# installed from the Debian packages only when it is missing (CI runs as root on a fresh machine).
CHROMIUM := /usr/bin/chromium

test: venv $(CHROMIUM)
	$(BIN)/python -m pytest -q

$(CHROMIUM):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

bench: venv
	@for script in bench/[a-z]*.py; do name=$$(basename $$script .py); echo "== bench/$$name"; $(BIN)/python -m bench.$$name || exit 1; done

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
