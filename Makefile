# PTSBench. Quick start: `make demo` (embedded benchmark) and `make test` (test suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= outputs/demo

.PHONY: help install demo test bench zoo clean

help:  ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install ptsbench with all extras (idempotent)

zoo: $(STAMP)  ## (re)train missing embedded zoo checkpoints deterministically
	$(PY) scripts/train_zoo.py

demo: $(STAMP)  ## run the embedded benchmark sweep and print its tables
	$(PY) scripts/demo.py --out $(OUT)

test: $(STAMP)  ## run the test suite (CPU only)
	$(PY) -m pytest -q

bench: $(STAMP)  ## performance benchmarks (ratios against naive baselines)
	@for b in scripts/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove generated outputs (keeps .venv)
	rm -rf outputs/demo outputs/runs outputs/multirun outputs/records outputs/cache
