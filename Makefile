# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv and install the project with the pinned dependency set
# (constraints.txt) once; later runs reuse it until pyproject.toml or
# constraints.txt change. `make test-alibi` (the last step of `make test`)
# does the same for .venv-alibi: the optional alibi-detect backend, whose
# pinned set (constraints-alibi.txt) has numpy 1.26 and pyarrow 21.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ALIBI_VENV ?= .venv-alibi
ALIBI_PY := $(ALIBI_VENV)/bin/python
ALIBI_STAMP := $(ALIBI_VENV)/.installed

.PHONY: install install-alibi demo test test-alibi test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install-alibi: $(ALIBI_STAMP)

$(ALIBI_STAMP): pyproject.toml constraints-alibi.txt
	$(PYTHON) -m venv $(ALIBI_VENV)
	$(ALIBI_PY) -m pip install --quiet --upgrade pip
	$(ALIBI_PY) -m pip install --quiet -c constraints-alibi.txt -e '.[alibi,dev]'
	touch $(ALIBI_STAMP)

demo: install
	$(VENV)/bin/mape demo

test: install
	.ci/services
	$(VENV)/bin/lint-imports
	$(PY) -m pytest
	$(MAKE) test-alibi

# The alibi-detect backend's tests and doctests, and the Monitor stage's and the data sources' whole suites
# on that older stack (numpy 1.26, pandas 2.3, pyarrow 21).
test-alibi: install-alibi
	$(ALIBI_PY) -m pytest tests/monitor tests/data mape/monitor mape/data

test-fast: install
	$(PY) -m pytest -m "not slow and not postgres"

lint: install
	$(VENV)/bin/lint-imports

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(ALIBI_VENV) .mape-demo .pytest_cache
