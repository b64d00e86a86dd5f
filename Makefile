# Two entry points, each from a fresh virtual environment:
#   make test   install everything and run the test suite (what CI runs)
#   make demo   install everything and run the pipeline on the built-in defaults
# and one for a GPU machine whose python3 already has CUDA PyTorch:
#   make gpu-test   the CUDA suite (tests/cuda), with the packages that python lacks taken from
#                   wheels in .whl/, or one site.tar.xz of them installed (README.md, Development, says which)
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo-output

.PHONY: test demo venv lint clean gpu-test

# torch first, pinned: 2.13.0 is the CPU build available locally; any other spec would
# pull gigabytes of CUDA packages
venv:
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,track]"

test: venv
	$(PY) -m ruff check avatarcli tests bench
	$(PY) -m pytest -q

demo: venv
	AVATAR="$(VENV)/bin/avatar" OUT="$(DEMO)" bash examples/demo.sh

GPU_PY ?= python3
GPU_SITE ?= /tmp/avatarcli-site
# bench/on_gpu.sh installs the wheels (or the packed site folder) into GPU_SITE once and
# builds gsplat's CUDA kernels (about a minute) before the suite starts
gpu-test:
	PYTHON=$(GPU_PY) AVATARCLI_SITE=$(GPU_SITE) bash bench/on_gpu.sh \
		"$(GPU_PY) -m pytest -p no:cacheprovider -m cuda -n 4 -v --durations=0 tests/cuda"

lint:
	$(PY) -m ruff check avatarcli tests bench
	$(PY) -m ruff format --check avatarcli tests bench

clean:
	rm -rf $(VENV) $(DEMO) .cache .pytest_cache
