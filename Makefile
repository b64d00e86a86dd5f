# Two entry points, each from a fresh virtual environment:
#   make test   install everything and run the test suite (what CI runs)
#   make demo   install everything and run the pipeline on the built-in defaults
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo-output

.PHONY: test demo venv lint clean

# torch first, pinned: 2.13.0 is the CPU build available locally; any other spec would
# pull gigabytes of CUDA packages
venv:
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"

test: venv
	$(PY) -m ruff check avatarcli tests bench
	$(PY) -m pytest -q

demo: venv
	AVATAR="$(VENV)/bin/avatar" OUT="$(DEMO)" bash examples/demo.sh

lint:
	$(PY) -m ruff check avatarcli tests bench
	$(PY) -m ruff format --check avatarcli tests bench

clean:
	rm -rf $(VENV) $(DEMO) .cache .pytest_cache
