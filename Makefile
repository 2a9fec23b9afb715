# Every target creates or refreshes .venv first, so each works as the first
# command on a fresh clone. Pins live in constraints.txt (torch==2.13.0 above all).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1

# llama-cpp-python builds llama.cpp from source, by default for this CPU (-march=native). On
# CPUs with AMX (e.g. Sapphire Rapids) that build includes an AMX matrix kernel that crashes
# on the first decode (SIGSEGV in ggml_backend_amx_mul_mat), so we build a portable AVX2 wheel
# once (about 5 minutes; measured as fast as the native build) and keep it outside the tree.
LLAMA_VERSION    := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
WHEELS           ?= $(HOME)/.cache/valuegym/wheels
LLAMA_WHEELS     := $(WHEELS)/llama-cpp-python-$(LLAMA_VERSION)-avx2

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --no-deps --no-cache-dir \
		-w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/python -m pip install -c constraints.txt --find-links $(LLAMA_WHEELS) -e '.[dev]'
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
