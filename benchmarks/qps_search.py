"""Capacity search on the simulated server: how close does it get to the true maximum VALID QPS, in how many
probes, and is the simulator itself fast enough not to be the bottleneck?

    .venv/bin/python benchmarks/qps_search.py [--probe-s 3] [--confirm-s 5] [--no-sweep]

1. Simulator overhead: real LoadGen Server runs on the ``sim`` backend at about 10,000 and 30,000 modelled tokens/s;
   the achieved tokens/s and per-sample TPOT against the capacity model replayed on the very same arrivals, the
   scheduler's lag behind its timeline, and the harness's CPU time.
2. The search (``mlperf_assets.search.search_node``, local runner, real LoadGen and DuckDB) on a sim of known
   capacity, LoadGen model llama3_1-8b-interactive (p99 TTFT 500 ms, TPOT 30 ms), margin 0: it must end at the
   highest rate whose full-length (``--confirm-s``) run is VALID.
3. The truth, twice: from the capacity model (virtual time, on LoadGen's own arrival schedule, which is drawn from
   fixed seeds and scales as 1/rate) and from an exhaustive sweep of real runs of the confirmation's length in 1.5%
   steps (the highest rate below the first one LoadGen calls INVALID or whose p99 breaks a limit).

The last line is ``search error: X% (found Q, true max T) in N probes``, T being the sweep's (the model's when
``--no-sweep``).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from mlperf_assets.harness.backends.sim import (  # noqa: E402
    CapacityModel,
    SimulatedRun,
    modelled_max_qps,
    simulate,
    unit_schedule,
)
from mlperf_assets.harness.dataset import load_prepared, prepare_dataset  # noqa: E402
from mlperf_assets.loadgen_logs import parse_detail_log  # noqa: E402

STORIES = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail" / "stories"
LG_MODEL = "llama3_1-8b-interactive"
TTFT_S, TPOT_S = 0.5, 0.030
CAPACITY = {"max_num_seqs": 512, "prefill_tokens_per_s": 2e7, "decode_step_ms": 10, "decode_ms_per_seq": 0.05,
            "output_tokens": 16}
# for the overhead runs: long answers, a cheap step (the load is in tokens, not in requests)
HEAVY = {"max_num_seqs": 2048, "prefill_tokens_per_s": 1e8, "decode_step_ms": 8, "decode_ms_per_seq": 0.004,
         "output_tokens": 128}


def harness(out: Path, dataset: Path, engine: dict, *flags: str) -> tuple[subprocess.CompletedProcess, float]:
    argv = [sys.executable, "-m", "mlperf_assets.harness", "run", "--mode", "performance", "--backend", "sim",
            "--dataset", str(dataset), "--output-dir", str(out), "--overwrite", "--progress-interval-s", "1",
            *flags, *[x for k, v in engine.items() for x in ("--engine-arg", f"{k}={v}")]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"harness failed:\n{proc.stderr[-3000:]}")
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def samples(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    return sorted((r for r in rows if r["first_token_ns"] is not None), key=lambda r: r["issue_ns"])


def overhead(tmp: Path, dataset: Path, ds) -> None:
    print("\n1. simulator overhead: real Server runs vs the model replayed on the same arrivals")
    print(f"{'modelled tok/s':>14} | {'achieved tok/s':>14} | {'vs model':>8} | {'TPOT p50 real/model':>20} | "
          f"{'TPOT p99 real/model':>20} | {'lag mean/max':>14} | harness CPU")
    model = CapacityModel(**HEAVY)
    for qps in (80, 240):
        out = tmp / f"overhead{qps}"
        _, cpu = harness(out, dataset, HEAVY, "--scenario", "Server", "--lg-model-name", "llama3_1-8b",
                         "--target-qps", str(qps), "--min-duration-ms", "8000", "--min-query-count", "100")
        rows = samples(out)
        arrivals = np.array([r["issue_ns"] for r in rows]) / 1e9
        replay = simulate(model, arrivals - arrivals[0], [len(ds.prompt_token_ids(r["qsl_idx"])) for r in rows],
                          [r["output_tokens"] for r in rows])
        first = np.array([r["first_token_ns"] for r in rows]) / 1e9
        done = np.array([r["complete_ns"] for r in rows]) / 1e9
        n = np.array([r["output_tokens"] for r in rows], dtype=float)
        tpot = (done - first) / (n - 1)
        span_real = done.max() - arrivals.min()
        span_model = replay.done.max()
        tokens = n.sum()
        timing = json.loads((out / "run_manifest.json").read_text())["backend"]["sim_timing"]
        pct = SimulatedRun.percentile
        print(f"{tokens / span_model:>14,.0f} | {tokens / span_real:>14,.0f} | {span_model / span_real:>8.1%} | "
              f"{np.median(tpot) * 1e3:>8.2f} / {np.median(replay.tpot) * 1e3:<6.2f} ms | "
              f"{pct(tpot, .99) * 1e3:>8.2f} / {pct(replay.tpot, .99) * 1e3:<6.2f} ms | "
              f"{timing['mean_lag_ms']:>5.2f} / {timing['max_lag_ms']:<5.1f} ms | {cpu:.1f} s for "
              f"{span_real:.1f} s ({len(rows)} samples, {timing['steps']} steps)")


def loadgen_schedule(tmp: Path, dataset: Path, seconds: float):
    out = tmp / "schedule"
    argv = [sys.executable, "-m", "mlperf_assets.harness", "run", "--mode", "performance", "--backend", "replay",
            "--scenario", "Server", "--dataset", str(dataset), "--output-dir", str(out), "--target-qps", "2000",
            "--min-duration-ms", str(int(seconds * 1000)), "--lg-model-name", LG_MODEL]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT)
    if proc.returncode != 0:
        raise SystemExit(f"replay run failed:\n{proc.stderr[-3000:]}")
    rows = samples(out)
    return unit_schedule([r["issue_ns"] for r in rows], [r["qsl_idx"] for r in rows], 2000.0)


def sweep(tmp: Path, dataset: Path, center: float, confirm_s: float, min_queries: int) -> tuple[float, list]:
    """Real runs of the confirmation's length from 8% under ``center`` upwards in 1.5% steps, until two fail."""
    results = []
    failures = 0
    for k in range(-5, 8):
        rate = center * (1 + 0.015 * k)
        out = tmp / f"sweep{k}"
        harness(out, dataset, CAPACITY, "--scenario", "Server", "--lg-model-name", LG_MODEL, "--target-qps",
                f"{rate:.3f}", "--min-duration-ms", str(int(confirm_s * 1000)), "--min-query-count", str(min_queries))
        d = parse_detail_log(out / "mlperf_log_detail.txt").values
        ok = (d.get("result_validity") == "VALID" and d["result_first_token_99.00_percentile_latency_ns"] <= TTFT_S * 1e9
              and d["result_time_per_output_token_99.00_percentile_ns"] <= TPOT_S * 1e9)
        results.append((rate, ok, d["result_time_per_output_token_99.00_percentile_ns"] / 1e6))
        failures += not ok
        if failures >= 2:
            break
    best = None
    for rate, ok, _ in results:
        if not ok:
            break
        best = rate
    return (best if best is not None else float("nan")), results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe-s", type=float, default=3.0, help="probe duration (default 3 s)")
    ap.add_argument("--confirm-s", type=float, default=5.0, help="confirmation duration (default 5 s)")
    ap.add_argument("--min-queries", type=int, default=600)
    ap.add_argument("--no-sweep", action="store_true", help="skip the sweep of real runs (truth from the model)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from mlperf_assets.config import load_config
    from mlperf_assets.search import search_node
    from resources.runners import LocalRunner

    with tempfile.TemporaryDirectory(prefix="qps-search-") as tmp:
        tmp = Path(tmp)
        if STORIES.is_dir():
            dataset = prepare_dataset("stories", STORIES, tmp / "ds.json", benchmark="llama3.1-8b", tokenizer="byte",
                                      max_samples=20)
            source = f"{STORIES} (20 CNN/DM stories, byte tokens)"
        else:
            sys.path.insert(0, str(PROJECT / "benchmarks"))
            from _common import write_synthetic_dataset

            dataset = write_synthetic_dataset(tmp / "ds.json", 200, output_tokens=128, prompt_tokens=800)
            source = "synthetic (200 samples)"
        ds = load_prepared(dataset)
        print(f"dataset: {source}")
        overhead(tmp, dataset, ds)

        print(f"\n2. the search: sim {CAPACITY}, {LG_MODEL} (TTFT {TTFT_S * 1e3:g} ms, TPOT {TPOT_S * 1e3:g} ms), "
              f"probes {a.probe_s:g} s, confirmation {a.confirm_s:g} s, margin 0")
        config_path = tmp / "config.yaml"
        config_path.write_text(yaml.safe_dump({
            "storage": {"artifact_root": str(tmp / "artifacts"), "duckdb_path": str(tmp / "mlperf.duckdb"),
                        "report_dir": str(tmp / "report")},
            "dataset": {"source": "local", "path": str(dataset)},
            "benchmark": {"model": "llama3.1-8b", "checkpoint": None, "backend": "sim", "engine": CAPACITY,
                          "scenarios": {"Server": {}}, "accuracy": False, "progress_interval_s": 0.5},
            "nodes": [{"name": "local", "runner": "local"}],
            "search": {"probe_duration_s": a.probe_s, "confirm_duration_s": a.confirm_s, "min_queries": a.min_queries,
                       "margin_pct": 0, "tolerance_pct": 3, "max_probes": 8},
        }))
        config = load_config(config_path)
        started = time.monotonic()
        result = search_node(config, "local", "Interactive", LocalRunner(config.node("local"), poll_interval_s=0.2),
                             dataset, dagster_run_id="benchmark", log=logging.getLogger("search"),
                             on_step=lambda s, r: print(f"  [{time.monotonic() - started:6.1f} s] {s.describe()}"))
        out = result.outcome
        if out.qps is None:
            print(f"search error: n/a ({out.status}) in {out.probes} probes")
            return 1

        print("\n3. the truth")
        schedule = loadgen_schedule(tmp, dataset, max(a.confirm_s, a.probe_s) * 1.6)
        prompts = [len(ds.prompt_token_ids(i)) for i in range(len(ds))]
        refs = [len(ds.reference_token_ids(i)) for i in range(len(ds))]
        common = dict(ttft_limit_s=TTFT_S, tpot_limit_s=TPOT_S, min_queries=a.min_queries, prompt_tokens=prompts,
                      reference_tokens=refs)
        model_truth = modelled_max_qps(CapacityModel(**CAPACITY), duration_s=a.confirm_s, schedules=[schedule],
                                       **common)
        probe_truth = modelled_max_qps(CapacityModel(**CAPACITY), duration_s=a.probe_s, schedules=[schedule], **common)
        poisson = modelled_max_qps(CapacityModel(**CAPACITY), duration_s=a.confirm_s, **common)
        print(f"  model, LoadGen's schedule: {model_truth:,.1f} QPS for {a.confirm_s:g} s runs "
              f"({probe_truth:,.1f} for {a.probe_s:g} s probes); Poisson median of 8 seeds: {poisson:,.1f}")
        truth = model_truth
        if not a.no_sweep:
            measured, results = sweep(tmp, dataset, model_truth, a.confirm_s, a.min_queries)
            print("  sweep of real runs: " + ", ".join(f"{r:,.1f} {'VALID' if ok else 'fail'} ({t:.1f} ms)"
                                                      for r, ok, t in results))
            print(f"  sweep: highest VALID rate {measured:,.1f} QPS")
            truth = measured if np.isfinite(measured) else model_truth
        error = (out.qps - truth) / truth
        print(f"\nfound {out.qps:,.2f} QPS in {out.probes} probes and {sum(s.kind == 'confirm' for s in out.steps)} "
              f"confirmation run(s), {time.monotonic() - started:,.0f} s in all; model truth {model_truth:,.1f}")
        print(f"search error: {abs(error) * 100:.1f}% (found {out.qps:.1f}, true max {truth:.1f}) in {out.probes} probes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
