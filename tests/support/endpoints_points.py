"""Recorded MLPerf Endpoints point run folders at full size, for the results, bundle and chart tests.

The layout is the reference client's own (seen by running ``inference-endpoint benchmark from-config --mode both``
against its echo server: ``report/{config.yaml, report.txt, events.jsonl, sample_idx_map.json,
performance/result_summary.json, metrics/final_snapshot.json}``; percentile keys as ``"90.0"`` strings, times in ns),
around the platform's files (``point_manifest.json``, ``client.yaml``, ``steady_state.json``). The figures are
scaled to a full llama3.1-8b curve: every point issues a whole number of 13,368-query passes and runs past its §6.2
minimum, TPOT grows with concurrency, the Offline point (r13368) sits above the C_max point.

    write_point(folder, concurrency=64, role="free")        # one point
    full_curve(root)                                         # the 8-point curve {1,4,16,32,64,128,256} + Offline
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

DATASET = 13368
SEEDS = {"scheduler_rng_seed": 10487924139932647040, "sample_index_rng_seed": 586478644936801402,
         "model_seed": 9315206023656308754}
OSL_MEAN = 118.0  # output tokens per summary
TPOT_1_MS = 6.5  # one user's time per output token
C_MAX = 256
# concurrency -> (role, region, accuracy point)
CURVE: dict[int | None, tuple[str, str | None, bool]] = {
    1: ("mandatory_ultra_low", "low_latency", True),
    4: ("mandatory_low", "low_concurrency", True),
    16: ("mandatory_medium", "med_concurrency", True),
    32: ("free", None, False),
    64: ("free", None, False),
    128: ("free", None, False),
    256: ("mandatory_high", "high_concurrency", True),
    None: ("offline", None, True),
}
ACCURACY_SCORES = {"rouge1": 38.8123, "rouge2": 15.9561, "rougeL": 24.5212, "rougeLsum": 35.8763,
                   "gen_len": 8167622}


def tpot_ms(concurrency: int) -> float:
    return TPOT_1_MS * (1 + concurrency / 48)


def _stats(p50: float, p90: float, p99: float, n: int) -> dict[str, Any]:
    pct = {"99.9": p99 * 1.05, "99.0": p99, "97.0": p99 * 0.95, "95.0": p90 * 1.05, "90.0": p90,
           "80.0": (p50 + p90) / 2, "75.0": p50 * 1.1, "50.0": p50, "25.0": p50 * 0.8, "10.0": p50 * 0.6,
           "5.0": p50 * 0.5, "1.0": p50 * 0.3}
    return {"total": p50 * n, "min": p50 * 0.2, "max": p99 * 1.2, "median": p50, "avg": p50 * 1.05,
            "std_dev": p50 * 0.2, "percentiles": pct,
            "early_stopping_percentiles": {k: v * 1.02 for k, v in pct.items() if float(k) >= 50},
            "histogram": {"buckets": [], "counts": []}}


def result_summary(concurrency: int, *, offline: bool = False, passes: int | None = None,
                   min_duration_s: float = 1300.0, completed: int | None = None) -> dict[str, Any]:
    """A ``result_summary.json`` as the client writes it, sized for ``concurrency``."""
    tpot = tpot_ms(concurrency)
    latency_s = OSL_MEAN * tpot / 1000 + 0.05
    per_pass_s = DATASET * latency_s / concurrency
    passes = passes or max(1, math.ceil(min_duration_s / per_pass_s))
    issued = passes * DATASET
    done = issued if completed is None else completed
    duration_ns = int(issued * latency_s / concurrency * 1e9)
    tokens = int(done * OSL_MEAN)
    ttft_p50 = 25e6 + concurrency * 0.4e6
    return {
        "version": "0.1.0", "git_sha": None, "test_started_at": 0,
        "n_samples_issued": issued, "n_samples_completed": done, "n_samples_failed": issued - done,
        "duration_ns": duration_ns, "state": "complete", "complete": True,
        "ttft": _stats(ttft_p50, ttft_p50 * 2.2, ttft_p50 * 4, done),
        "tpot": _stats(tpot * 0.92e6, tpot * 1e6, tpot * 1.2e6, done),
        "latency": _stats(latency_s * 1e9, latency_s * 1.3e9, latency_s * 1.8e9, done),
        "output_sequence_lengths": {**_stats(OSL_MEAN, OSL_MEAN * 1.2, OSL_MEAN * 1.6, done), "total": tokens},
        "input_sequence_lengths": {**_stats(870, 1400, 2300, done), "total": 870 * done},
        "legacy_loadgen_window_duration_ns": None,
        "qps": done / (duration_ns / 1e9), "tps": tokens / (duration_ns / 1e9),
        "finish_reason_counts": {"stop": done, "length": 0, "tool_calls": 0, "content_filter": 0,
                                 "function_call": 0, "other": 0},
        "run_config": {"load_pattern": {"type": "max_throughput" if offline else "concurrency", "target_qps": None,
                                        "target_concurrency": None if offline else concurrency},
                       "warmup": {"enabled": False, "n_requests": None, "salt": False, "drain": False,
                                  "warmup_random_seed": 42},
                       "scheduler_random_seed": SEEDS["scheduler_rng_seed"],
                       "dataloader_random_seed": SEEDS["sample_index_rng_seed"]},
    }


def client_config(concurrency: int, *, offline: bool, accuracy: bool, n_samples: int) -> dict[str, Any]:
    datasets = [{"name": "cnn_dailymail::llama3_8b", "type": "performance", "parser": {"input": "prompt"}}]
    if accuracy:
        datasets.append({"name": "cnn_dailymail::llama3_8b", "type": "accuracy", "parser": {"input": "prompt"},
                         "accuracy_config": {"eval_method": "rouge", "ground_truth": "highlights",
                                             "extractor": "identity_extractor", "num_repeats": 1}})
    pattern = {"type": "max_throughput"} if offline else {"type": "concurrency", "target_concurrency": concurrency}
    return {"name": f"point-{'offline' if offline else f'c{concurrency}'}", "version": "1.0",
            "type": "offline" if offline else "online",
            "model_params": {"name": "meta-llama/Llama-3.1-8B-Instruct", "temperature": 0.0, "max_new_tokens": 128,
                             "streaming": "on"},
            "datasets": datasets,
            "settings": {"runtime": {"min_duration_ms": 600000 if concurrency <= 32 and not offline else 1200000,
                                     "max_duration_ms": 0, "n_samples_to_issue": n_samples,
                                     "scheduler_random_seed": SEEDS["scheduler_rng_seed"],
                                     "dataloader_random_seed": SEEDS["sample_index_rng_seed"]},
                         "load_pattern": pattern, "client": {"num_workers": 4}},
            "endpoint_config": {"endpoints": ["http://gpu-node-1:8000"], "api_type": "openai"},
            "report_dir": "report"}


def accuracy_results(scores: dict[str, float] | None = None, samples: int = DATASET) -> dict[str, Any]:
    score = {k: str(v) if k != "gen_len" else str(int(v)) for k, v in (scores or ACCURACY_SCORES).items()}
    return {"osl_tokenization_s": 12.5, "accuracy_scores": [{
        "dataset_name": "cnn_dailymail::llama3_8b", "extractor": "identity_extractor",
        "ground_truth_column": "highlights", "score": {**score, "gen_num": samples}, "unit_samples": samples,
        "num_repeats": 1, "total_samples": samples, "duration_s": 95.2, "complete": True,
        "dataset_type": "accuracy"}]}


def manifest(concurrency: int | None, role: str, region: str | None, accuracy: bool, *, node: str = "gpu-node-1",
             n_samples: int = DATASET) -> dict[str, Any]:
    label = "offline" if concurrency is None else f"c{concurrency}"
    return {"label": label, "node": node, "concurrency": concurrency,
            "load_pattern": "max_throughput" if concurrency is None else "concurrency", "region": region,
            "role": role, "accuracy": accuracy, "n_samples_to_issue": n_samples, "seed_set": "A",
            "seeds": dict(SEEDS),
            "client": {"commit": "ea3327530376fef63d706f4105612e17c2c80a8d", "version": "0.1.0", "python": "3.12.1"},
            "server": {"url": "http://gpu-node-1:8000", "launch": "vllm", "model": "meta-llama/Llama-3.1-8B-Instruct",
                       "args": ["serve", "meta-llama/Llama-3.1-8B-Instruct", "--trust-request-chat-template"],
                       "launch_recipe": "vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000 "
                                        "--trust-request-chat-template --max-num-seqs 256"},
            "benchmark": "llama3_1-8b", "dataset_samples": DATASET}


def write_point(folder: Path, concurrency: int | None, *, role: str = "free", region: str | None = None,
                accuracy: bool = False, summary: dict[str, Any] | None = None,
                scores: dict[str, float] | None = None, steady: dict[str, Any] | None = None,
                run_manifest: dict[str, Any] | None = None, node: str = "gpu-node-1", **summary_args: Any) -> Path:
    """One point's run folder as the platform leaves it after the client finished."""
    offline = concurrency is None
    c = DATASET if offline else concurrency
    if summary is None:
        summary = result_summary(C_MAX if offline else c, offline=offline, **summary_args)
        if offline:  # the dedicated Offline run: everything at once, a little above the C_max point
            summary["duration_ns"] = int(summary["duration_ns"] / 1.05)
    n = summary["n_samples_issued"]
    report = folder / "report"
    (report / "performance").mkdir(parents=True, exist_ok=True)
    (report / "metrics").mkdir(exist_ok=True)
    (report / "performance" / "result_summary.json").write_text(json.dumps(summary, indent=2))
    config = client_config(c, offline=offline, accuracy=accuracy, n_samples=n)
    (report / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "client.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (report / "report.txt").write_text("----------------- Summary -----------------\n")
    (report / "metrics" / "final_snapshot.json").write_text("{}")
    (folder / "point_manifest.json").write_text(json.dumps(manifest(concurrency, role, region, accuracy, node=node,
                                                                    n_samples=n)))
    if accuracy:
        acc = folder / "report_accuracy" / "accuracy"
        acc.mkdir(parents=True, exist_ok=True)
        (acc / "accuracy_results.json").write_text(json.dumps(accuracy_results(scores)))
    if steady is not None:
        (folder / "steady_state.json").write_text(json.dumps(steady))
    if run_manifest is not None:
        (folder / "run_manifest.json").write_text(json.dumps(run_manifest))
    (folder / "exit_code").write_text("0\n")
    return folder


def steady_block(summary: dict[str, Any]) -> dict[str, Any]:
    """A windowable steady-state verdict spanning the run's passes (at least 4 for a window)."""
    passes = summary["n_samples_issued"] // DATASET
    return {"status": "windowable" if passes >= 4 else "insufficient_passes",
            "verdict": "STEADY STATE" if passes >= 4 else "not found",
            "window": {"super_pass_start": 1, "super_pass_end": passes, "super_pass_size": DATASET,
                       "n_samples": passes * DATASET, "duration_s": round(summary["duration_ns"] / 1e9 * 0.97, 1)},
            "state": {"tpot_p50": "Plateau", "tpot_p90": "Plateau"}}


def run_manifest(label: str, node: str, *, energy_j: float | None = None) -> dict[str, Any]:
    """The provenance the harness records beside a point: the host, its GPU (nvidia-smi) and NVML energy."""
    return {"run_id": f"run-{label}", "node": node,
            "host": {"hostname": node, "platform": "Linux-6.8.0-x86_64-with-glibc2.39", "python": "3.12.3",
                     "cpu_count": 32},
            "gpus": [{"index": "0", "name": "NVIDIA H200", "uuid": "GPU-0", "memory.total": "143771 MiB",
                      "driver_version": "580.159.04"}],
            "telemetry": {"enabled": True, "nvml": True, "energy_j": energy_j, "energy_source": "nvml_energy_counter"}
            if energy_j else {"enabled": False}}


def full_curve(root: Path, *, node: str = "gpu-node-1", **overrides: Any) -> list[Path]:
    """The 8 points of a full-size curve under ``root/<node>/<label>/run-<label>``."""
    folders = []
    for c, (role, region, acc) in CURVE.items():
        label = "offline" if c is None else f"c{c}"
        args = dict(overrides.get(label, {}))
        folder = root / node / label / f"run-{label}"
        args.setdefault("run_manifest", run_manifest(label, node))
        folders.append(write_point(folder, c, role=role, region=region, accuracy=acc, node=node, **args))
    return folders
