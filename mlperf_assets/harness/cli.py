"""``python -m mlperf_assets.harness {prepare-dataset,run}``: the node-side command line.

Exit codes: 0 done (for ``run``: LoadGen finished), 1 failed (backend or harness error, see harness.log), 2 bad input
(one line on stderr), 130 interrupted by Ctrl-C (143 by SIGTERM); an interrupted run folder is marked so in
run_manifest.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import HarnessError

BENCHMARK_CHOICES = ("llama3.1-8b", "llama3.1-8b-edge", "gptj")
SOURCE_CHOICES = ("huggingface", "mlcommons-json", "stories", "jsonl")
SCENARIO_CHOICES = ("Offline", "Server", "SingleStream")
MODE_CHOICES = ("performance", "accuracy")
BACKEND_CHOICES = ("vllm", "openai", "extractive", "replay")
LG_MODEL_CHOICES = ("llama3_1-8b", "llama3_1-8b-edge", "llama3_1-8b-interactive", "gptj")


@dataclass(frozen=True)
class PrepareArgs:
    source: str
    path: str | None
    out: str
    benchmark: str = "llama3.1-8b"
    tokenizer: str = "byte"
    max_samples: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class RunArgs:
    scenario: str
    mode: str
    backend: str
    dataset: str
    output_dir: str
    user_conf: str | None = None
    benchmark: str | None = None
    lg_model_name: str | None = None
    max_samples: int | None = None
    target_qps: float | None = None
    target_latency_ms: float | None = None
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None
    min_query_count: int | None = None
    max_query_count: int | None = None
    ttft_latency_ms: float | None = None
    tpot_latency_ms: float | None = None
    run_id: str | None = None
    node: str | None = None
    progress_interval_s: float = 2.0
    engine_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    offline_workers: int = 1
    overwrite: bool = False


def parse_engine_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is JSON when it parses (``4``, ``0.9``, ``true``, ``{"a": 1}``), else a plain string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--engine-arg expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {v})")
    return v


def _nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {v})")
    return v


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return v


PREPARE_EPILOG = textwrap.dedent("""\
    The output is one JSON file in the MLCommons cnn_eval.json shape (input = article, output = highlights,
    tok_input = prompt token ids, plus id, prompt and tok_output), wrapped with the benchmark and tokenizer names.

    Examples:
      # full validation split through Hugging Face datasets (or a local copy: --path saved_dir | file.parquet)
      python -m mlperf_assets.harness prepare-dataset --source huggingface --out cnn_eval.json \\
          --tokenizer meta-llama/Llama-3.1-8B-Instruct
      # 20 CNN .story files, built-in byte tokenizer (for the extractive/replay backends; labelled "byte")
      python -m mlperf_assets.harness prepare-dataset --source stories --path stories/ --out smoke.json
      # 500 random samples of an MLCommons file, reproducibly
      python -m mlperf_assets.harness prepare-dataset --source mlcommons-json --path cnn_eval.json \\
          --out subset.json --max-samples 500 --seed 1 --tokenizer /models/llama3.1-8b
    """)

RUN_EPILOG = textwrap.dedent("""\
    Writes into --output-dir: mlperf_log_{summary,detail}.txt, mlperf_log_accuracy.json (LoadGen's), user.conf (the
    --user-conf copy followed by the lines generated from the flags above; later lines win), progress.jsonl,
    samples.jsonl (per-sample issue / first-token / completion times in ns), run_manifest.json (provenance and
    exit status) and harness.log. LoadGen runs inside --output-dir with tracing off.

    Settings use LoadGen config units (ms, QPS). Without them mlperf.conf applies (600 s minimum duration, 13,368
    queries Offline): give small values for smoke runs. A dataset smaller than the benchmark's performance sample
    count lowers performance_sample_count_override to the dataset size and the manifest says so.

    Examples:
      python -m mlperf_assets.harness run --scenario Offline --mode performance --backend extractive \\
          --dataset smoke.json --output-dir runs/offline-perf --min-duration-ms 1000 --min-query-count 100
      python -m mlperf_assets.harness run --scenario Server --mode performance --backend vllm \\
          --dataset cnn_eval.json --output-dir runs/server --target-qps 5 \\
          --engine-arg tensor_parallel_size=1 --engine-arg gpu_memory_utilization=0.9

    Exit codes: 0 LoadGen finished; 1 failed (see harness.log); 2 bad input; 130 Ctrl-C (143 SIGTERM).
    """)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlperf_assets.harness",
        description="Node-side MLPerf Inference harness for CNN/DailyMail summarization (llama3.1-8b, gpt-j): "
        "prepare the dataset, then run one LoadGen test per process.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prepare-dataset", help="read CNN/DM, template prompts, tokenize, write a prepared file",
                       description="Read CNN/DailyMail validation samples, apply the benchmark's exact prompt "
                       "template and tokenize with the model's tokenizer.",
                       epilog=PREPARE_EPILOG, formatter_class=_Formatter)
    p.add_argument("--source", required=True, choices=SOURCE_CHOICES,
                   help="huggingface: abisee/cnn_dailymail 3.0.0 validation via `datasets`; mlcommons-json: an "
                   "MLCommons cnn_eval.json; stories: a folder of CNN .story files; jsonl: {id, article, highlights} lines")
    p.add_argument("--path", default=None,
                   help="input file or folder (huggingface: optional local copy: save_to_disk folder, parquet/JSON/"
                   "arrow file of the same columns, or a cache folder)")
    p.add_argument("--out", required=True, help="prepared JSON file to write (atomically)")
    p.add_argument("--benchmark", default="llama3.1-8b", choices=BENCHMARK_CHOICES,
                   help="selects the prompt template (llama3.1-8b and -edge share one; gptj uses the Alpaca template, "
                   "prompt cut to 1919 tokens)")
    p.add_argument("--tokenizer", default="byte",
                   help="'byte' (built in, for extractive/replay) or a Hugging Face model name or local folder "
                   "(needs transformers); llama's encode adds BOS like the reference")
    p.add_argument("--max-samples", type=_positive_int, default=None, metavar="N",
                   help="keep N samples: the first N, or a seeded random choice with --seed (default: all)")
    p.add_argument("--seed", type=int, default=None, help="random subset seed for --max-samples")
    p.set_defaults(func=cmd_prepare)

    r = sub.add_parser("run", help="run one LoadGen test (scenario x mode) with a backend",
                       description="Run one MLPerf LoadGen test: FromConfig(user.conf, model, scenario) once, "
                       "then StartTest with the chosen backend behind the SUT.",
                       epilog=RUN_EPILOG, formatter_class=_Formatter)
    g = r.add_argument_group("test")
    g.add_argument("--scenario", required=True, choices=SCENARIO_CHOICES)
    g.add_argument("--mode", required=True, choices=MODE_CHOICES,
                   help="performance (PerformanceOnly) or accuracy (AccuracyOnly: every sample once, logged)")
    g.add_argument("--backend", required=True, choices=BACKEND_CHOICES,
                   help="vllm / openai: a model; extractive: lead-3 baseline; replay: reference tokens (harness ceiling)")
    g.add_argument("--dataset", required=True, help="prepared file (prepare-dataset) or an MLCommons cnn_eval.json")
    g.add_argument("--output-dir", required=True, help="run folder (created; must not hold an earlier run)")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in --output-dir")
    g.add_argument("--benchmark", default=None, choices=BENCHMARK_CHOICES, help="default: the dataset file's")
    g.add_argument("--lg-model-name", default=None, choices=LG_MODEL_CHOICES,
                   help="LoadGen model name for mlperf.conf (default from the benchmark; llama3_1-8b-interactive "
                   "runs Server with the interactive TTFT/TPOT limits)")
    g.add_argument("--max-samples", type=_positive_int, default=None, metavar="N",
                   help="use the first N dataset samples (QSL size)")
    g.add_argument("--run-id", default=None, help="recorded in run_manifest.json (default: a new UUID)")
    g.add_argument("--node", default=None, help="node name recorded in run_manifest.json (default: the hostname)")
    s = r.add_argument_group("LoadGen settings (written to user.conf; config units)")
    s.add_argument("--user-conf", default=None, help="a user.conf to copy first; the flags below override it")
    s.add_argument("--target-qps", type=_positive_float, default=None,
                   help="Server: Poisson arrival rate; Offline: expected QPS (sizes the single query)")
    s.add_argument("--target-latency-ms", type=_positive_float, default=None,
                   help="Server: end-to-end latency bound (gpt-j); SingleStream: expected latency (keep it small "
                   "for a fast backend, or LoadGen runs out of queries)")
    s.add_argument("--min-duration-ms", type=_nonneg_int, default=None)
    s.add_argument("--max-duration-ms", type=_nonneg_int, default=None)
    s.add_argument("--min-query-count", type=_nonneg_int, default=None)
    s.add_argument("--max-query-count", type=_nonneg_int, default=None)
    s.add_argument("--ttft-latency-ms", type=_positive_float, default=None, help="Server TTFT p99 limit")
    s.add_argument("--tpot-latency-ms", type=_positive_float, default=None, help="Server TPOT p99 limit")
    h = r.add_argument_group("harness")
    h.add_argument("--engine-arg", dest="engine_arg", action="append", type=parse_engine_arg, default=[],
                   metavar="KEY=VALUE", help="engine option for any backend (repeatable; VALUE parsed as JSON if it "
                   "parses, else a string); how the orchestrator passes a config's engine: mapping")
    h.add_argument("--batch-size", type=_positive_int, default=None,
                   help="Offline: samples per backend.generate call (default: the backend's preference)")
    h.add_argument("--offline-workers", type=_positive_int, default=1,
                   help="Offline: threads calling backend.generate concurrently")
    h.add_argument("--progress-interval-s", type=_positive_float, default=2.0,
                   help="seconds between progress.jsonl lines")
    from .backends import add_backend_cli_args

    add_backend_cli_args(r)
    r.set_defaults(func=cmd_run)
    return parser


def prepare_args(ns: argparse.Namespace) -> PrepareArgs:
    return PrepareArgs(ns.source, ns.path, ns.out, ns.benchmark, ns.tokenizer, ns.max_samples, ns.seed)


def run_args(ns: argparse.Namespace) -> RunArgs:
    engine: dict[str, Any] = {}
    for key, value in ns.engine_arg:
        engine[key] = value
    ns.engine_args = engine  # what backends read in from_cli_args
    return RunArgs(
        scenario=ns.scenario, mode=ns.mode, backend=ns.backend, dataset=ns.dataset, output_dir=ns.output_dir,
        user_conf=ns.user_conf, benchmark=ns.benchmark, lg_model_name=ns.lg_model_name, max_samples=ns.max_samples,
        target_qps=ns.target_qps, target_latency_ms=ns.target_latency_ms, min_duration_ms=ns.min_duration_ms,
        max_duration_ms=ns.max_duration_ms, min_query_count=ns.min_query_count, max_query_count=ns.max_query_count,
        ttft_latency_ms=ns.ttft_latency_ms, tpot_latency_ms=ns.tpot_latency_ms, run_id=ns.run_id, node=ns.node,
        progress_interval_s=ns.progress_interval_s, engine_args=engine, batch_size=ns.batch_size,
        offline_workers=ns.offline_workers, overwrite=ns.overwrite,
    )


def cmd_prepare(ns: argparse.Namespace) -> int:
    from .dataset import prepare_dataset

    a = prepare_args(ns)
    out = prepare_dataset(a.source, a.path, a.out, benchmark=a.benchmark, tokenizer=a.tokenizer,
                          max_samples=a.max_samples, seed=a.seed)
    print(f"wrote {out}")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from .run import run

    return run(run_args(ns), ns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    try:
        return ns.func(ns)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
