# Two commands do all the set-up on a fresh machine:
#   make demo   installs into .venv and runs the end-to-end demo on built-in data
#   make test   installs into .venv (with test extras) and runs the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch, pinned so pip never pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test lint vtest clean

$(BIN)/stmil: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/stmil

install: $(BIN)/stmil

demo: install
	$(BIN)/stmil demo --out demo-out

vtest:
	scripts/fetch_vtest.sh

test: install vtest
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-out
