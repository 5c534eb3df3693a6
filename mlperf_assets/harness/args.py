"""The typed arguments of the harness subcommands. Each ``*Args`` dataclass owns its flags (``add_cli_args``) and
its construction from a parsed command line (``from_cli_args``); ``cli.py`` only lists them, and the code that runs
a subcommand receives the dataclass, never an ``argparse.Namespace``.

:class:`RunSpec` is the orchestrator's side of ``run``: it renders the argv that :class:`RunArgs` parses, so the
codec has one home.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .backends import BACKENDS, add_backend_cli_args, backend_class
from .backends.base import BackendArgs, format_key_value
from .benchmarks import BENCHMARKS, DEFAULT_BENCHMARK, LOADGEN_MODELS, MODES, SCENARIOS
from .compliance import COMPLIANCE_TESTS
from .dataset import SOURCES
from .errors import HarnessError
from .settings import add_settings_cli_args, settings_argv, settings_from_cli, validate_settings

HARNESS_MODULE = "mlperf_assets.harness"  # python -m HARNESS_MODULE run ...


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {v})")
    return v


# The most GPUs one node (one host) holds, with room to spare: NVLink servers hold 8 or 16, PCIe hosts about 20.
# Data-parallel replicas (one process and GPU group each) and a node's `gpus` are bounded by it.
MAX_NODE_GPUS = 64


def _replica_count(text: str) -> int:
    v = _positive_int(text)
    if v > MAX_NODE_GPUS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_NODE_GPUS} (one replica per GPU group, and a node "
                                         f"holds at most {MAX_NODE_GPUS} GPUs), got {v}")
    return v


def _positive_float(text: str) -> float:
    v = float(text)
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return v


def _non_negative_float(text: str) -> float:
    v = float(text)
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {text})")
    return v


@dataclass(frozen=True)
class PrepareArgs:
    source: str
    path: str | None
    out: str
    benchmark: str = DEFAULT_BENCHMARK
    tokenizer: str = "byte"
    max_samples: int | None = None
    seed: int | None = None

    @staticmethod
    def add_cli_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", required=True, choices=SOURCES,
                       help="huggingface: abisee/cnn_dailymail 3.0.0 validation via `datasets`; mlcommons-json: an "
                       "MLCommons cnn_eval.json; stories: a folder of CNN .story files; jsonl: {id, article, "
                       "highlights} lines")
        p.add_argument("--path", default=None,
                       help="input file or folder (huggingface: optional local copy: save_to_disk folder, parquet/"
                       "JSON/arrow file of the same columns, or a cache folder)")
        p.add_argument("--out", required=True, help="prepared JSON file to write (atomically)")
        p.add_argument("--benchmark", default=DEFAULT_BENCHMARK, choices=list(BENCHMARKS),
                       help="selects the prompt template and truncation (harness/benchmarks.py)")
        p.add_argument("--tokenizer", default="byte",
                       help="'byte' (built in, for extractive/replay) or a Hugging Face model name or local folder "
                       "(needs transformers); the model tokenizer's encode adds BOS like the reference")
        p.add_argument("--max-samples", type=_positive_int, default=None, metavar="N",
                       help="keep N samples: the first N, or a seeded random choice with --seed (default: all)")
        p.add_argument("--seed", type=int, default=None, help="random subset seed for --max-samples")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "PrepareArgs":
        return cls(ns.source, ns.path, ns.out, ns.benchmark, ns.tokenizer, ns.max_samples, ns.seed)


@dataclass(frozen=True)
class RunArgs:
    scenario: str
    mode: str
    backend: str
    dataset: str
    output_dir: str
    backend_args: BackendArgs = field(default_factory=BackendArgs)
    # LoadGen scenario settings, either spelling (harness/settings.py); held validated, by LoadGen key
    settings: Mapping[str, Any] = field(default_factory=dict)
    user_conf: str | None = None
    benchmark: str | None = None
    lg_model_name: str | None = None
    max_samples: int | None = None
    run_id: str | None = None
    node: str | None = None
    progress_interval_s: float = 2.0
    batch_size: int | None = None
    offline_workers: int = 1
    overwrite: bool = False
    compliance: str | None = None  # a harness/compliance.py test name ("TEST06")
    audit_config: str | None = None  # its audit.config file (from an MLCommons checkout) ...
    audit_config_text: str | None = None  # ... or that file's text
    data_parallel_size: int = 1  # engine replicas behind one SUT (backends/replicas.py), one GPU group each
    telemetry_interval_s: float = 1.0  # telemetry.jsonl sampling period (harness/telemetry.py); 0: off

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", validate_settings(self.settings))
        if self.data_parallel_size > 1:
            from .backends.replicas import tensor_parallel_size

            tp = tensor_parallel_size(self.backend_args)
            if self.data_parallel_size * tp > MAX_NODE_GPUS:
                raise HarnessError(f"--data-parallel-size {self.data_parallel_size} x tensor_parallel_size {tp} "
                                   f"needs {self.data_parallel_size * tp} GPUs; a node holds at most {MAX_NODE_GPUS}")

    @staticmethod
    def add_cli_args(r: argparse.ArgumentParser) -> None:
        g = r.add_argument_group("test")
        g.add_argument("--scenario", required=True, choices=SCENARIOS)
        g.add_argument("--mode", required=True, choices=MODES,
                       help="performance (PerformanceOnly) or accuracy (AccuracyOnly: every sample once, logged)")
        g.add_argument("--backend", required=True, choices=list(BACKENDS),
                       help="vllm / openai: a model; extractive: lead-3 baseline; replay: reference tokens (harness "
                       "ceiling)")
        g.add_argument("--dataset", required=True, help="prepared file (prepare-dataset) or an MLCommons cnn_eval.json")
        g.add_argument("--output-dir", required=True, help="run folder (created; must not hold an earlier run)")
        g.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in --output-dir")
        g.add_argument("--benchmark", default=None, choices=list(BENCHMARKS), help="default: the dataset file's")
        g.add_argument("--lg-model-name", default=None, choices=list(LOADGEN_MODELS),
                       help="LoadGen model name for mlperf.conf (default: the benchmark's; a variant such as "
                       "llama3_1-8b-interactive runs Server under its own latency limits)")
        g.add_argument("--max-samples", type=_positive_int, default=None, metavar="N",
                       help="use the first N dataset samples (QSL size)")
        g.add_argument("--run-id", default=None, help="recorded in run_manifest.json (default: a new UUID)")
        g.add_argument("--node", default=None, help="node name recorded in run_manifest.json (default: the hostname)")
        c = r.add_argument_group("compliance test")
        c.add_argument("--compliance", default=None, choices=list(COMPLIANCE_TESTS),
                       help="run this MLPerf compliance test (harness/compliance.py): its audit.config sits in "
                       "LoadGen's working directory (--output-dir) only while LoadGen reads it; the folder gets "
                       "verify_accuracy.txt")
        a = c.add_mutually_exclusive_group()
        a.add_argument("--audit-config", default=None, metavar="FILE",
                       help="the test's audit.config from your MLCommons inference checkout "
                       "(compliance/TEST06/audit.config)")
        a.add_argument("--audit-config-text", default=None, metavar="TEXT", help="the same file's text")
        add_settings_cli_args(r)
        h = r.add_argument_group("harness")
        h.add_argument("--engine-arg", dest="engine_args", action="append", default=[], metavar="KEY=VALUE",
                       help="engine option for any backend (repeatable; VALUE parsed as JSON if it parses, else a "
                       "string); how the orchestrator passes a config's engine: mapping")
        h.add_argument("--batch-size", type=_positive_int, default=None,
                       help="Offline: samples per backend.generate call (default: the backend's preference)")
        h.add_argument("--offline-workers", type=_positive_int, default=1,
                       help="Offline: threads calling backend.generate concurrently")
        h.add_argument("--progress-interval-s", type=_positive_float, default=2.0,
                       help="seconds between progress.jsonl lines")
        h.add_argument("--data-parallel-size", type=_replica_count, default=1, metavar="N",
                       help="data parallelism: N replicas of the backend behind one SUT, each on its own GPU group "
                       "(tensor_parallel_size GPUs each, in order of CUDA_VISIBLE_DEVICES)")
        h.add_argument("--telemetry-interval-s", type=_non_negative_float, default=1.0, metavar="S",
                       help="seconds between telemetry.jsonl samples (GPU via NVML, engine stats); 0 turns it off")
        add_backend_cli_args(r)

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "RunArgs":
        return cls(
            scenario=ns.scenario, mode=ns.mode, backend=ns.backend, dataset=ns.dataset, output_dir=ns.output_dir,
            backend_args=BackendArgs.from_cli_args(ns, backend_class(ns.backend)),
            settings=settings_from_cli(ns),
            user_conf=ns.user_conf, benchmark=ns.benchmark, lg_model_name=ns.lg_model_name,
            max_samples=ns.max_samples, run_id=ns.run_id, node=ns.node, progress_interval_s=ns.progress_interval_s,
            batch_size=ns.batch_size, offline_workers=ns.offline_workers, overwrite=ns.overwrite,
            compliance=ns.compliance, audit_config=ns.audit_config, audit_config_text=ns.audit_config_text,
            data_parallel_size=ns.data_parallel_size, telemetry_interval_s=ns.telemetry_interval_s,
        )


@dataclass(frozen=True)
class RunSpec:
    """Everything one harness process needs, as the orchestrator plans it (``plan.py``); renders the ``run``
    argv that :meth:`RunArgs.from_cli_args` reads back on the node (the two halves of one codec: a flag added to
    one is added to the other, and ``tests/harness/test_run_spec_codec.py`` checks the round trip)."""

    run_id: str
    node: str
    scenario: str  # Offline | Server | SingleStream
    mode: str  # performance | accuracy
    benchmark: str  # a harness/benchmarks.py name
    backend: str  # a harness/backends registry name
    dataset_path: str  # the prepared dataset on the orchestrator; a remote runner maps it to its copy
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    # LoadGen scenario settings (harness/settings.py: LoadGen keys or their config spelling; None values dropped),
    # held validated, by LoadGen key
    settings: Mapping[str, Any] = field(default_factory=dict)
    max_samples: int | None = None
    lg_model_name: str | None = None
    progress_interval_s: float = 2.0
    # engine replicas behind the run's one SUT (data parallelism: --data-parallel-size), tensor_parallel_size GPUs
    # each; plan.build_spec sets it from the config's parallelism and the node's GPUs
    data_parallel_size: int = 1
    extra_args: tuple[str, ...] = ()  # appended verbatim (backend-specific flags), each one argv element
    # A compliance test (harness/compliance.py: "TEST06") and the TEXT of its audit.config, taken from the user's
    # MLCommons checkout; the harness writes it into LoadGen's working directory for the run only.
    compliance: str | None = None
    audit_config: str | None = None
    # An MLPerf Endpoints point (endpoints/client.py: the point's job as JSON): the process is then
    # ``endpoint-point`` (harness/endpoints_point.py, MLCommons' reference client inside the same run-folder
    # protocol), not ``run``; scenario/mode/backend only label it (Server or Offline, performance, openai).
    endpoint_point: str | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, not {self.scenario!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        object.__setattr__(self, "settings", validate_settings(self.settings))  # SettingsError is a ValueError
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.run_id):
            raise ValueError(f"run_id must be letters, digits, '.', '_' or '-', not {self.run_id!r}")

    def harness_args(self, output_dir: str, *, dataset_path: str | None = None) -> list[str]:
        """Arguments after ``python -m mlperf_assets.harness``: ``["run", "--scenario", ...]`` (an Endpoints point:
        ``["endpoint-point", "--job", ...]``)."""
        if self.endpoint_point is not None:
            return [
                "endpoint-point",
                "--job", self.endpoint_point,
                "--dataset", dataset_path or self.dataset_path,
                "--output-dir", output_dir,
                "--run-id", self.run_id,
                "--node", self.node,
                "--progress-interval-s", repr(float(self.progress_interval_s)),
            ]  # fmt: skip
        args = [
            "run",
            "--scenario", self.scenario,
            "--mode", self.mode,
            "--backend", self.backend,
            "--benchmark", self.benchmark,
            "--dataset", dataset_path or self.dataset_path,
            "--output-dir", output_dir,
            "--run-id", self.run_id,
            "--node", self.node,
            "--progress-interval-s", repr(float(self.progress_interval_s)),
        ]  # fmt: skip
        if self.lg_model_name:
            args += ["--lg-model-name", self.lg_model_name]
        if self.max_samples is not None:
            args += ["--max-samples", str(int(self.max_samples))]
        args += settings_argv(self.settings)
        if self.compliance:
            args += ["--compliance", self.compliance]
        if self.audit_config is not None:
            args += ["--audit-config-text", self.audit_config]
        for key, value in self.engine_args.items():
            args += ["--engine-arg", format_key_value(key, value)]
        if self.data_parallel_size > 1:
            args += ["--data-parallel-size", str(int(self.data_parallel_size))]
        args += list(self.extra_args)
        return args

    def identity(self) -> dict[str, Any]:
        """What makes two specs of one run id the same run (a runner adopting a launched run compares these)."""
        return {
            "scenario": self.scenario, "mode": self.mode, "benchmark": self.benchmark, "backend": self.backend,
            "max_samples": self.max_samples, "settings": dict(self.settings), "engine_args": dict(self.engine_args),
            "compliance": self.compliance, "data_parallel_size": self.data_parallel_size,
            "extra_args": list(self.extra_args), "endpoint_point": self.endpoint_point,
        }  # fmt: skip

    def harness_argv(self, python: str, output_dir: str, *, dataset_path: str | None = None) -> list[str]:
        """The full argv: ``[python, "-m", "mlperf_assets.harness", "run", ...]``."""
        return [python, "-m", HARNESS_MODULE, *self.harness_args(output_dir, dataset_path=dataset_path)]

    def to_json(self) -> str:
        data = asdict(self)
        data["engine_args"] = dict(self.engine_args)
        data["settings"] = dict(self.settings)
        data["extra_args"] = list(self.extra_args)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        data = json.loads(text)
        data["extra_args"] = tuple(data.get("extra_args", ()))
        return cls(**data)


@dataclass(frozen=True)
class EndpointPointArgs:
    """``endpoint-point``: one MLPerf Endpoints point with MLCommons' reference client (harness/endpoints_point.py)."""

    job: str  # the point's job as JSON (endpoints/client.py writes it)
    dataset: str  # the CNN/DM parquet the client reads as its cnn_dailymail dataset
    output_dir: str
    run_id: str | None = None
    node: str | None = None
    progress_interval_s: float = 2.0

    @staticmethod
    def add_cli_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--job", required=True, help="the point's job as JSON (the orchestrator writes it)")
        p.add_argument("--dataset", required=True, help="CNN/DM parquet (columns article, highlights)")
        p.add_argument("--output-dir", required=True, help="the point's run folder")
        p.add_argument("--run-id", default=None)
        p.add_argument("--node", default=None)
        p.add_argument("--progress-interval-s", type=_positive_float, default=2.0,
                       help="seconds between progress.jsonl lines")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "EndpointPointArgs":
        return cls(ns.job, ns.dataset, ns.output_dir, ns.run_id, ns.node, ns.progress_interval_s)


@dataclass(frozen=True)
class VerifyComplianceArgs:
    folder: str
    scenario: str | None = None
    benchmark: str | None = None
    test: str | None = None
    eos_token_id: int | None = None
    mlcommons_inference: str | None = None
    out: str | None = None

    @staticmethod
    def add_cli_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("folder", help="the compliance run's folder (its --output-dir, e.g. <run>/compliance/TEST06)")
        p.add_argument("--test", default=None, choices=list(COMPLIANCE_TESTS), help="default: the run manifest's")
        p.add_argument("--scenario", default=None, choices=SCENARIOS, help="default: the run manifest's")
        p.add_argument("--benchmark", default=None, help="default: the run manifest's (sets the token dtype)")
        p.add_argument("--eos-token-id", type=int, default=None,
                       help="default: the run manifest's (the dataset tokenizer's EOS; llama3.1-8b: 128009)")
        p.add_argument("--mlcommons-inference", default=None, metavar="PATH",
                       help="your mlcommons/inference checkout: run its compliance/<TEST>/run_verification.py and "
                       "keep its output verbatim")
        p.add_argument("--out", default=None, metavar="DIR",
                       help="where verify_accuracy.txt and accuracy/ go (default: the folder itself)")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "VerifyComplianceArgs":
        return cls(ns.folder, ns.scenario, ns.benchmark, ns.test, ns.eos_token_id, ns.mlcommons_inference, ns.out)
