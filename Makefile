# The two commands of the README: `make demo` and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-avx2 bench-deps clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	touch $@

$(VENV)/.installed-test: $(VENV)/.torch pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) -m contrastkit demo --out runs/demo

test: $(VENV)/.installed-test
	$(PY) -m pytest

# The suite as a CPU without AVX-512 or AMX runs it (kernels of another instruction set round differently).
test-avx2: $(VENV)/.installed-test
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(PY) -m pytest

# Peers used by benchmarks/ only (optional extra, never a runtime dependency).
bench-deps: $(VENV)/.installed-test
	$(PY) -m pip install -q -e '.[bench]'

clean:
	rm -rf $(VENV) runs
