"""The ``sim`` backend: its capacity model, its scheduler in virtual time, and real LoadGen runs on a real clock whose
per-sample TTFT/TPOT match the model's replay of the very same arrivals."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets.harness.backends import backend_class
from mlperf_assets.harness.backends.base import BackendArgs
from mlperf_assets.harness.backends.sim import (
    CapacityModel,
    SimBackend,
    SimulatedRun,
    modelled_max_qps,
    poisson_arrivals,
    simulate,
    unit_schedule,
)
from mlperf_assets.harness.dataset import load_prepared
from mlperf_assets.harness.errors import HarnessError

from support.simruns import SIM_ENGINE, engine_flags

PROJECT = Path(__file__).resolve().parents[2]
ENGINE = SIM_ENGINE


@pytest.fixture(scope="module")
def dataset(sim_dataset) -> Path:
    return sim_dataset


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "run", *args], capture_output=True,
                          text=True, cwd=PROJECT, timeout=timeout)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ the model


def test_engine_args_are_typed_and_checked():
    assert backend_class("sim") is SimBackend and SimBackend.kind == "simulation"
    b = SimBackend.from_args(BackendArgs({"max_num_seqs": "64", "decode_step_ms": 2, "output_tokens": 8}))
    assert (b.model.max_num_seqs, b.model.decode_step_ms, b.model.output_tokens) == (64, 2.0, 8)
    with pytest.raises(HarnessError, match="unknown --engine-arg key.*max_num_seq"):
        SimBackend.from_args(BackendArgs({"max_num_seq": 4}))
    with pytest.raises(HarnessError, match="max_num_seqs must be an integer"):
        SimBackend.from_args(BackendArgs({"max_num_seqs": 2.5}))
    with pytest.raises(HarnessError, match="output_tokens must be an integer between 2 and .*, or 0 for the reference length"):
        SimBackend.from_args(BackendArgs({"output_tokens": 1}))
    with pytest.raises(HarnessError, match="no --sampling-arg"):
        SimBackend.from_args(BackendArgs({}, {"temperature": 0.5}))
    # the backend's own flags (EngineFlag rows) win over --engine-arg of the same key
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine-arg", dest="engine_args", action="append", default=[])
    SimBackend.add_cli_args(parser)
    ns = parser.parse_args(["--engine-arg", "max_num_seqs=8", "--sim-max-num-seqs", "32", "--sim-decode-step-ms", "3"])
    args = BackendArgs.from_cli_args(ns, SimBackend)
    assert args.engine_args == {"max_num_seqs": 32, "decode_step_ms": 3.0}


def test_scheduler_in_virtual_time_is_continuous_batching():
    """Two slots, 10 ms steps: two requests run together, the third waits for a slot; first token at the end of the
    admission step, one token per step after, TPOT = the step time."""
    model = CapacityModel(max_num_seqs=2, decode_step_ms=10, decode_ms_per_seq=0, prefill_tokens_per_s=1e12,
                          output_tokens=3)
    run = simulate(model, [0.0, 0.0, 0.0], [100, 100, 100], [3, 3, 3])
    assert np.allclose(run.first, [0.010, 0.010, 0.040])
    assert np.allclose(run.done, [0.030, 0.030, 0.060])
    assert np.allclose(run.ttft, [0.010, 0.010, 0.040]) and np.allclose(run.tpot, 0.010)
    # the batch and the admitted prompts make a step longer
    model = CapacityModel(max_num_seqs=8, decode_step_ms=1, decode_ms_per_seq=1, prefill_tokens_per_s=1000)
    assert model.step_s(4, 500) == pytest.approx(0.001 + 0.004 + 0.5)
    assert model.answer_length(300) == 128 and model.answer_length(1) == 2  # the reference, capped, >= 2


def test_load_raises_tpot_and_capacity_caps_the_rate():
    model = CapacityModel(**ENGINE)
    p99 = []
    for rate in (200, 400, 600):
        run = simulate(model, poisson_arrivals(rate, 2000, seed=1), [4000] * 2000, [16] * 2000)
        p99.append(SimulatedRun.percentile(run.tpot, 0.99))
    assert p99[0] < p99[1] < p99[2]  # TPOT grows with the batch
    slow = CapacityModel(**{**ENGINE, "decode_ms_per_seq": 0.1})
    kw = dict(ttft_limit_s=0.45, tpot_limit_s=0.027, duration_s=3, min_queries=600, prompt_tokens=[4000] * 20,
              reference_tokens=[200] * 20, seeds=(0, 1, 2))
    fast_max, slow_max = modelled_max_qps(model, **kw), modelled_max_qps(slow, **kw)
    assert 1.6 < fast_max / slow_max < 2.3  # twice the per-sequence cost: about half the rate
    assert fast_max < model.offline_samples_per_s(16, 4000)  # the latency limit binds before the full batch


# ------------------------------------------------------------------------------------------------ real runs


def test_server_run_streams_on_a_real_clock_like_the_model(dataset, tmp_path):
    """A real LoadGen Server run: VALID, labelled a simulation, 16 tokens per answer, and each sample's TTFT/TPOT
    as the model computes them for the same arrivals (the simulator is not the bottleneck)."""
    out = tmp_path / "server"
    r = harness("--scenario", "Server", "--mode", "performance", "--backend", "sim", "--dataset", str(dataset),
                "--output-dir", str(out), "--lg-model-name", "llama3_1-8b-interactive", "--target-qps", "300",
                "--min-duration-ms", "2000", "--min-query-count", "600", *engine_flags(ENGINE))
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "run_manifest.json").read_text())
    backend = manifest["backend"]
    assert backend["kind"] == "simulation" and backend["simulation"] is True
    assert backend["engine_args"]["max_num_seqs"] == 512 and backend["engine_args"]["output_tokens"] == 16
    timing = backend["sim_timing"]
    assert timing["steps"] > 50 and timing["reanchors"] == 0, timing
    summary = (out / "mlperf_log_summary.txt").read_text()
    assert "Result is : VALID" in summary
    samples = [s for s in rows(out / "samples.jsonl") if s["first_token_ns"] is not None]
    assert len(samples) >= 600 and {s["output_tokens"] for s in samples} == {16}
    samples.sort(key=lambda s: s["issue_ns"])
    ds = load_prepared(dataset)
    arrivals = np.array([s["issue_ns"] for s in samples]) / 1e9
    model_run = simulate(CapacityModel(**ENGINE), arrivals - arrivals[0],
                         [len(ds.prompt_token_ids(s["qsl_idx"])) for s in samples], [16] * len(samples))
    first = np.array([s["first_token_ns"] for s in samples]) / 1e9
    done = np.array([s["complete_ns"] for s in samples]) / 1e9
    tpot, ttft = (done - first) / 15, first - arrivals
    pct = SimulatedRun.percentile
    assert abs(pct(tpot, 0.99) - pct(model_run.tpot, 0.99)) < 0.001  # within 1 ms of the model at p99
    assert abs(np.median(tpot) - np.median(model_run.tpot)) < 0.001
    assert abs(pct(ttft, 0.99) - pct(model_run.ttft, 0.99)) < 0.010


def test_a_server_run_knows_its_total_from_the_schedule_loadgen_generated(dataset, tmp_path):
    """Server issues queries one at a time, so the SUT never learns how many will come; the progress line's total is
    read from LoadGen's detail log. llama3_1-8b has sample_concatenate_permutation on (mlperf.conf): LoadGen pads
    ~250 scheduled queries to whole multiples of the 20 loaded samples, and the log line says why the run is longer
    than target_qps x min_duration."""
    from mlperf_assets.loadgen_logs import parse_detail_log

    out = tmp_path / "server"
    r = harness("--scenario", "Server", "--mode", "performance", "--backend", "sim", "--dataset", str(dataset),
                "--output-dir", str(out), "--lg-model-name", "llama3_1-8b", "--target-qps", "250",
                "--min-duration-ms", "1000", "--min-query-count", "10", "--progress-interval-s", "0.2",
                *engine_flags(ENGINE))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    detail = parse_detail_log(out / "mlperf_log_detail.txt")
    generated = detail.get("generated_query_count")
    assert detail.get("effective_sample_concatenate_permutation") is True
    assert generated % 20 == 0 and generated >= 240, generated
    progress = rows(out / "progress.jsonl")
    assert {p["total"] for p in progress if not p["final"] and p["issued"] > 0} == {generated}  # known mid-run
    assert progress[-1]["total"] == progress[-1]["completed"] == generated
    said = (out / "harness.log").read_text()
    assert f"LoadGen scheduled {generated:,} queries over" in said
    assert f"({generated // 20} x the 20 loaded samples: sample_concatenate_permutation pads" in said


def test_offline_run_fills_the_batch(dataset, tmp_path):
    out = tmp_path / "offline"
    engine = {**ENGINE, "max_num_seqs": 256}
    r = harness("--scenario", "Offline", "--mode", "performance", "--backend", "sim", "--dataset", str(dataset),
                "--output-dir", str(out), "--target-qps", "1", "--min-duration-ms", "100", "--min-query-count", "1024",
                *engine_flags(engine))
    assert r.returncode == 0, r.stderr[-3000:]
    samples = rows(out / "samples.jsonl")
    assert len(samples) >= 1024 and {s["output_tokens"] for s in samples} == {16}
    rate = next(float(line.split(":")[1]) for line in (out / "mlperf_log_summary.txt").read_text().splitlines()
                if line.startswith("Samples per second"))
    modelled = CapacityModel(**engine).offline_samples_per_s(16, 3977)  # 3977: the stories' mean prompt (bytes)
    assert 0.8 * modelled < rate < 1.05 * modelled, (rate, modelled)


def test_unit_schedule_recovers_a_scaled_schedule():
    issue = np.array([0, 2_000_000, 3_000_000, 7_000_000])  # ns at rate 500
    gaps, idx = unit_schedule(issue[::-1], [4, 3, 2, 1], 500.0)
    assert np.allclose(gaps, [0, 1.0, 0.5, 2.0]) and list(idx) == [1, 2, 3, 4]
