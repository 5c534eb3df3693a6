"""What the pipeline runs and where its files go, from a config: pure (no Dagster, no runner), so the assets, the
search, the commands and ``benchmarks/`` share one answer. The one place that decides what a harness process gets.

- partitions: one per node x scenario (:data:`NODE_DIM`, :data:`SCENARIO_DIM`, :func:`partition_keys`);
- run ids: :func:`new_run_id` (``<UTC stamp>-<node>-<scenario>-<first 8 of the Dagster run id>``; one run id covers
  the performance, accuracy and compliance runs of a partition);
- paths: the prepared dataset (:func:`prepared_dataset_path`), a run's folder and its staging folder, and a
  capacity-search probe's folder (:func:`probe_folder`, outside every ``<node>/<scenario>/``);
- parallelism: ``benchmark.parallelism`` on a node's GPUs (:func:`parallelism`, :func:`resolve_parallelism`), and
  the check a runner makes of a spec against the GPUs it hands out (:func:`check_node_gpus`);
- the submission profile: the config it loads (:func:`apply_profile`), the settings it drops
  (:func:`profile_settings`) and the compliance tests it adds (:func:`compliance_tests`);
- run specs: :func:`run_spec` (what one harness process gets), :func:`build_spec` (one mode of a partition), and
  :class:`PartitionPlan`, every harness run of one partition as :class:`PlannedRun` records; it implements
  :class:`RunPlan`, what ``resources.runners.ledger.PartitionRun`` takes (the search's probe plan does too).

Imports: ``config.loader`` and ``config.checks`` import this module (the load applies the profile, the cross-checks
ask :func:`resolve_parallelism`); this module imports ``config.models`` for type hints only (the models import
nothing of it) and reads every config as a plain object; it imports no runner module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol

from mlperf_assets.errors import UserError
from mlperf_assets.harness.args import MAX_NODE_GPUS, RunSpec
from mlperf_assets.harness.backends import BACKENDS
from mlperf_assets.harness.benchmarks import BENCHMARKS, LOADGEN_MODELS, LoadGenModel
from mlperf_assets.harness.compliance import required_tests
from mlperf_assets.harness.settings import LOADGEN_SETTINGS

if TYPE_CHECKING:
    from mlperf_assets.config.models import BenchmarkConfig, MlperfConfig

NODE_DIM, SCENARIO_DIM = "node", "scenario"  # the two partition dimensions; time is never one
PERFORMANCE, ACCURACY = "performance", "accuracy"
COMPLIANCE_DIR = "compliance"  # a partition's compliance runs: <run folder>/compliance/<TEST>
SEARCH_DIR = ".search"  # capacity-search probes: <artifact_root>/.search/<node>/<label>/<run_id>


def partition_keys(config: MlperfConfig) -> list[tuple[str, str]]:
    """(node, scenario) of every partition, nodes in config order, scenarios in MLPerf order."""
    return [(node, scenario) for node in config.node_names for scenario in config.scenario_names]


def new_run_id(node: str, scenario: str, dagster_run_id: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{node}-{scenario}-{dagster_run_id[:8]}"


# ------------------------------------------------------------------------------------------------------ paths


def prepared_dataset_path(config: MlperfConfig) -> Path:
    """Where the prepared file for this config lives: one name per (source, path, benchmark, tokenizer, size, seed),
    so changing any of them prepares a new file instead of silently reusing an old one."""
    ds = config.dataset
    if ds.source == "local":
        return Path(ds.path)
    ident = "|".join(
        str(x) for x in (ds.source, ds.path, config.benchmark.model, config.tokenizer, ds.max_samples, ds.seed)
    )
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    tok = re.sub(r"[^A-Za-z0-9.]+", "-", config.tokenizer).strip("-")
    size = ds.max_samples if ds.max_samples is not None else "all"
    return config.dataset_dir / f"cnndm-{config.benchmark.model}-{tok}-{size}-{digest}.json"


def run_folder(config: MlperfConfig, node: str, scenario: str, run_id: str) -> Path:
    """A collected run: ``<artifact_root>/<node>/<scenario>/<run_id>/{performance,accuracy,compliance/<TEST>}``."""
    return config.storage.artifact_root / node / scenario / run_id


def staging_folder(config: MlperfConfig, node: str, scenario: str, run_id: str) -> Path:
    """Where a run's harness runs are collected before the whole run folder is renamed into place."""
    return config.storage.artifact_root / node / scenario / f".staging-{run_id}"


def probe_folder(config: MlperfConfig, node: str, label: str, run_id: str) -> Path:
    """A collected capacity-search probe: ``<artifact_root>/.search/<node>/<label>/<run_id>``. A dot folder at the
    top, so no walk of ``<node>/<scenario>/<run_id>`` (the submission tree, the report) takes a probe for a run."""
    return config.storage.artifact_root / SEARCH_DIR / node / label / run_id


# ------------------------------------------------------------------------------------------------ parallelism


@dataclass(frozen=True)
class Parallelism:
    """How one node runs one test on its GPUs (``benchmark.parallelism`` resolved for the node's ``gpus``)."""

    mode: Literal["none", "data", "tensor"]  # none: a single engine as configured (0 or 1 GPU, or a backend without)
    data_parallel_size: int = 1  # engine replicas behind one SUT (the harness's --data-parallel-size)
    tensor_parallel_size: int | None = None  # vLLM's engine argument, set explicitly; None: the engine mapping's

    def engine_args(self, engine: Mapping[str, Any]) -> dict[str, Any]:
        """``engine`` with ``tensor_parallel_size`` set where this decided it."""
        out = dict(engine)
        if self.tensor_parallel_size is not None:
            out["tensor_parallel_size"] = self.tensor_parallel_size
        return out


def node_gpu_count(node: Any) -> int | None:
    """GPUs a node gives each run: its ``gpus`` count, or the number of device ids listed (docker); None for
    docker's ``all`` (not known before the container runs)."""
    gpus = getattr(node, "gpus", 0)
    if isinstance(gpus, list):
        return len(gpus)
    return None if gpus == "all" else int(gpus)


def _engine_tp(engine: Mapping[str, Any], node: str) -> int | None:
    raw = engine.get("tensor_parallel_size")
    try:
        tp = None if raw is None else int(raw)
        if tp is not None and (isinstance(raw, bool) or tp != float(raw) or tp < 1):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"node {node!r}: benchmark.engine tensor_parallel_size must be a positive integer, "
                         f"got {raw!r}") from None
    return tp


def parallelism(node: str, gpus: int | None, backend: str, engine: Mapping[str, Any], choice: str,
                *, fits_one_gpu: bool) -> Parallelism:
    """``choice`` (auto | data | tensor) for ``backend`` on the node ``node`` with ``gpus`` GPUs (None: unknown).

    Only a node with more than one GPU (a known count) gets any. A backend that runs on the node's GPUs (its registry
    row's ``uses_node_gpus``: vllm): tensor = ``tensor_parallel_size`` = all its GPUs; data = replicas of
    ``tensor_parallel_size`` GPUs each (``engine``'s value, default 1), which must divide the GPU count (ValueError
    naming the node); auto = data when the model fits one GPU (``fits_one_gpu``), else tensor. A model backend that
    does not (openai: its server owns its GPUs) is never replicated. The baselines (extractive, replay, sim) use no
    GPU: auto and tensor leave them alone, while an explicit ``data`` runs them as that many replicas (harmless; it
    exercises the replica path on CPU nodes, and a sim replica per GPU simulates the node)."""
    entry = BACKENDS[backend]
    if gpus is not None and gpus > MAX_NODE_GPUS:
        raise ValueError(f"node {node!r} has {gpus:,} GPUs; a node holds at most {MAX_NODE_GPUS} (data parallelism "
                         "starts one engine process per GPU group)")
    if gpus is None or gpus <= 1:
        return Parallelism("none")
    if not entry.uses_node_gpus:
        replicable = entry.kind != "model"
        return Parallelism("data", gpus) if choice == "data" and replicable else Parallelism("none")
    picked = ("data" if fits_one_gpu else "tensor") if choice == "auto" else choice
    tp = _engine_tp(engine, node)
    if picked == "tensor":
        if tp is not None and tp != gpus:
            how = "tensor" if choice == "tensor" else f"{choice} -> tensor"
            raise ValueError(f"node {node!r} has {gpus} GPUs but benchmark.engine sets tensor_parallel_size={tp}"
                             f" (parallelism {how}: one engine over all {gpus}); make them equal or remove it")
        return Parallelism("tensor", 1, gpus)
    tp = tp or 1
    if gpus % tp:
        raise ValueError(f"node {node!r} has {gpus} GPUs, not a multiple of benchmark.engine tensor_parallel_size"
                         f" {tp} (parallelism {choice}: replicas of {tp} GPUs each)")
    if gpus == tp:
        return Parallelism("tensor", 1, tp)
    return Parallelism("data", gpus // tp, tp)


def resolve_parallelism(benchmark: BenchmarkConfig, node: Any) -> Parallelism:
    """``benchmark.parallelism`` on ``node`` (a node model): :func:`parallelism` with the node's GPU count and the
    benchmark's model facts."""
    return parallelism(node.name, node_gpu_count(node), benchmark.backend, benchmark.engine, benchmark.parallelism,
                       fits_one_gpu=BENCHMARKS[benchmark.model].fits_one_gpu)


def node_parallelism(config: MlperfConfig, node: str) -> Parallelism:
    """``benchmark.parallelism`` resolved for the node called ``node`` (none for a name the config does not have)."""
    try:
        node_config = config.node(node)
    except KeyError:
        return Parallelism("none")
    return resolve_parallelism(config.benchmark, node_config)


def check_node_gpus(spec: RunSpec, gpus: int | None) -> None:
    """What a runner that hands ``gpus`` GPUs to the harness (a pod's ``nvidia.com/gpu``, a container's devices)
    checks of a spec before it starts it: a backend that runs on the node's GPUs gets them all, as
    ``data_parallel_size`` engine replicas of ``tensor_parallel_size`` GPUs each (the plan sets both; an engine
    without ``tensor_parallel_size`` uses one GPU). ValueError when they do not add up; nothing for 0 or an unknown
    count (docker's ``all``)."""
    if not gpus or not BACKENDS[spec.backend].uses_node_gpus:
        return
    replicas = spec.data_parallel_size
    current = spec.engine_args.get("tensor_parallel_size")
    if int(current or 1) * replicas != gpus:
        layout = f"{replicas} replicas x " if replicas > 1 else ""
        set_to = f"={current}" if current is not None else " unset (1 GPU)"
        raise ValueError(f"engine {layout}tensor_parallel_size{set_to} but node {spec.node} requests {gpus} GPU(s); "
                         "make them equal")


# ------------------------------------------------------------------------------------- the submission profile

# benchmark.profile: submission runs with MLPerf's durations and counts: these overrides are dropped so
# mlperf.conf's values apply (the expected speed and latency targets stay: they size the run, not its rules)
SUBMISSION_DROPPED_SETTINGS = ("min_duration", "max_duration", "min_query_count", "max_query_count",
                               "performance_sample_count_override", "accuracy_sample_count_override")


# The percentile mlperf.conf judges latency at (*.Server / *.SingleStream.target_latency_percentile: the spec's
# section 6); a lower one is a looser rule.
SUBMISSION_LATENCY_PERCENTILE = {"Server": 99.0, "SingleStream": 90.0}
# LoadGen switches mlperf.conf sets per model (gpt-j's token counts are inferred from token_latency_scaling_factor)
# or that only compliance audits set (TEST04's issue patterns): a submission run leaves them to mlperf.conf.
SUBMISSION_MLPERF_CONF_ONLY = ("infer_token_latencies", "token_latency_scaling_factor", "performance_issue_unique",
                               "performance_issue_same", "performance_issue_same_index")


def profile_lg_model(config: MlperfConfig) -> LoadGenModel:
    """The LoadGen model the config's runs use: ``benchmark.lg_model_name``, else the benchmark's default."""
    b = config.benchmark
    return LOADGEN_MODELS[b.lg_model_name or BENCHMARKS[b.model].default_lg_model_name]


def _rule_break(model: LoadGenModel, scenario: str, key: str, value: Any) -> str | None:
    """Why the LoadGen setting ``key`` = ``value`` of ``scenario`` breaks MLPerf's rules for ``model`` (mlperf.conf's
    values, the checker's limits), or None when a submission run may keep it (it sizes the run, or is harmless)."""
    if key == "sample_concatenate_permutation" and not value:
        return "turns equal issue off (mlperf.conf sets sample_concatenate_permutation = 1)"
    if key == "use_token_latencies" and value != model.uses_token_latencies:
        return (f"differs from mlperf.conf's use_token_latencies = {int(model.uses_token_latencies)} for "
                f"{model.name}")
    limits = {"ttft_latency": model.ttft_latency_ms, "tpot_latency": model.tpot_latency_ms}
    if scenario == "Server":
        limits["target_latency"] = model.server_target_latency_ms
    if limits.get(key) is not None and value > limits[key]:
        return f"is looser than {model.name}'s {key} limit, {limits[key]:g} ms"
    floor = SUBMISSION_LATENCY_PERCENTILE.get(scenario)
    if key == "target_latency_percentile" and floor is not None and value < floor:
        return f"is looser than mlperf.conf's {scenario} percentile, {floor:g}"
    if key in SUBMISSION_MLPERF_CONF_ONLY:
        return "is mlperf.conf's (or a compliance audit's) to set, not a submission run's"
    return None


def _shown(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else f"{value:g}"


def submission_rule_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """Under ``profile: submission``, every scenario setting that would change what the run measures or how it is
    judged (equal issue off, token latencies off, TTFT/TPOT or latency limits or percentiles looser than the
    benchmark's, mlperf.conf-only switches): (config field, message). The duration and count overrides are not
    among them: the profile drops those (:data:`SUBMISSION_DROPPED_SETTINGS`)."""
    if config.benchmark.profile != "submission":
        return []
    model = profile_lg_model(config)
    problems = []
    for scenario, settings in config.benchmark.scenarios.enabled().items():
        for key, value in settings.as_settings().items():
            why = _rule_break(model, scenario, key, value)
            if why is not None:
                name = LOADGEN_SETTINGS[key].name
                problems.append((f"benchmark.scenarios.{scenario}.{name}",
                                 f"{_shown(value)} {why}: profile: submission keeps MLPerf's rules; remove it "
                                 "(or use profile: smoke)"))
    return problems


def apply_profile(config: MlperfConfig) -> None:
    """What ``benchmark.profile: submission`` changes in a loaded config: the full dataset and accuracy on (called
    by the config's load, so every reader sees them). Its durations: :func:`profile_settings`; its compliance
    tests: :func:`compliance_tests`."""
    if config.benchmark.profile == "submission":
        config.dataset.max_samples = None
        config.benchmark.accuracy = True


def profile_settings(config: MlperfConfig, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario's LoadGen settings under the profile: as written (smoke), or without the duration and count
    overrides (submission)."""
    if config.benchmark.profile != "submission":
        return dict(settings)
    return {k: v for k, v in settings.items() if k not in SUBMISSION_DROPPED_SETTINGS}


def compliance_tests(config: MlperfConfig) -> list[str]:
    """The compliance tests each partition runs: benchmark.compliance, plus under the submission profile the tests
    a submission of the benchmark requires (TEST06 for llama3.1-8b: its LoadGen model row in the registry)."""
    tests = list(config.benchmark.compliance)
    if config.benchmark.profile == "submission":
        tests += [t for t in required_tests(config.benchmark.model) if t not in tests]
    return tests


def modes(config: MlperfConfig) -> tuple[str, ...]:
    """The LoadGen modes of one partition, in order: performance, then accuracy unless the config turns it off."""
    return (PERFORMANCE, ACCURACY) if config.benchmark.accuracy else (PERFORMANCE,)


def audit_config_text(config: MlperfConfig, test: str) -> str:
    """The official audit.config of a compliance test, from the user's MLCommons checkout."""
    if config.mlcommons_inference is None:
        raise UserError(f"mlcommons_inference: is required for {test} (its compliance/{test}/audit.config)")
    path = config.mlcommons_inference / "compliance" / test / "audit.config"
    try:
        return path.read_text()
    except OSError as exc:
        raise UserError(f"mlcommons_inference: cannot read {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------------- specs


def engine_args(config: MlperfConfig, node: str) -> dict[str, Any]:
    """The engine arguments a harness run on ``node`` gets: the config's ``engine`` mapping, the checkpoint as the
    backend's own argument (its registry row's ``checkpoint_arg``: vLLM's ``model``, the OpenAI server's
    ``api_model``) unless the mapping names it, and ``tensor_parallel_size`` from the node's parallelism."""
    b = config.benchmark
    engine = dict(b.engine)
    checkpoint_arg = BACKENDS[b.backend].checkpoint_arg
    if checkpoint_arg and b.checkpoint and checkpoint_arg not in engine:
        engine[checkpoint_arg] = b.checkpoint
    return node_parallelism(config, node).engine_args(engine)


def run_spec(config: MlperfConfig, *, run_id: str, node: str, scenario: str, mode: str, dataset: Path,
             settings: Mapping[str, Any], lg_model_name: str | None) -> RunSpec:
    """One harness process on ``node``: the config's benchmark, backend and engine arguments (:func:`engine_args`),
    its data parallelism (:func:`node_parallelism`), and the LoadGen ``settings`` and model given."""
    b = config.benchmark
    return RunSpec(
        run_id=run_id,
        node=node,
        scenario=scenario,
        mode=mode,
        benchmark=b.model,
        backend=b.backend,
        dataset_path=str(dataset),
        engine_args=engine_args(config, node),
        settings=settings,
        lg_model_name=lg_model_name,
        progress_interval_s=b.progress_interval_s,
        data_parallel_size=node_parallelism(config, node).data_parallel_size,
    )


def build_spec(config: MlperfConfig, *, run_id: str, node: str, scenario: str, mode: str, dataset: Path) -> RunSpec:
    """The harness run of one mode of a partition: the scenario's settings under the profile. On a node with
    several GPUs the config's ``parallelism`` picks data parallelism (``--data-parallel-size N`` with
    ``tensor_parallel_size`` GPUs per replica) or tensor parallelism (``tensor_parallel_size`` = the node's GPUs):
    :func:`resolve_parallelism`; the spec records the choice (its ``data_parallel_size`` and engine arguments, in
    run_spec.json)."""
    b = config.benchmark
    return run_spec(config, run_id=run_id, node=node, scenario=scenario, mode=mode, dataset=dataset,
                    settings=profile_settings(config, b.scenarios.enabled()[scenario].as_settings()),
                    lg_model_name=b.lg_model_name)


def compliance_spec(config: MlperfConfig, *, run_id: str, node: str, scenario: str, test: str,
                    dataset: Path) -> RunSpec:
    """The compliance run ``test`` of a partition: a performance run with the test's audit.config (the harness
    puts it in LoadGen's working directory), under its own run id ``<run_id>.<test>`` (its folder on the node is
    not the performance run's)."""
    spec = build_spec(config, run_id=f"{run_id}.{test}", node=node, scenario=scenario, mode=PERFORMANCE,
                      dataset=dataset)
    return dataclasses.replace(spec, compliance=test, audit_config=audit_config_text(config, test))


# ----------------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class PlannedRun:
    """One harness process of a partition run."""

    key: str  # its name in the in-flight record: "performance", "accuracy", "TEST06"
    spec: RunSpec
    folder: str  # where it is collected inside the run folder: "performance", "accuracy", "compliance/TEST06"


class RunPlan(Protocol):
    """What ``ledger.PartitionRun`` runs: harness runs collected into one run folder, recorded in flight as
    ``<artifact_root>/.active/<node>/<ledger_key>.json`` (:class:`PartitionPlan`, the search's ``ProbePlan``)."""

    node: str
    scenario: str  # the MLPerf scenario label, for messages
    artifact_root: Path
    dataset: Path  # the prepared dataset the runs read

    @property
    def ledger_key(self) -> str: ...

    @property
    def timeout_s(self) -> float | None: ...  # a harness run still going after this long is cancelled

    def new_run_id(self, dagster_run_id: str) -> str: ...
    def runs(self, run_id: str) -> list[PlannedRun]: ...
    def run_folder(self, run_id: str) -> Path: ...
    def staging_folder(self, run_id: str) -> Path: ...


class ConfigPlan:
    """What every plan of a config shares: where its runs are collected and their time limit."""

    config: MlperfConfig

    @property
    def artifact_root(self) -> Path:
        return self.config.storage.artifact_root

    @property
    def timeout_s(self) -> float | None:
        """A harness run still going after this long is cancelled (None: no limit)."""
        return self.config.benchmark.run_timeout_s


@dataclass(frozen=True)
class PartitionPlan(ConfigPlan):
    """One partition's runs (:meth:`runs`): performance, accuracy unless turned off, then each compliance test;
    where they are collected, the time limit. Recorded in flight under the scenario's name."""

    config: MlperfConfig
    node: str
    scenario: str
    dataset: Path  # the prepared dataset the runs read

    @property
    def ledger_key(self) -> str:
        return self.scenario

    def new_run_id(self, dagster_run_id: str) -> str:
        return new_run_id(self.node, self.scenario, dagster_run_id)

    def spec(self, run_id: str, mode: str) -> RunSpec:
        """The run of LoadGen mode ``mode`` (performance | accuracy)."""
        return build_spec(
            self.config, run_id=run_id, node=self.node, scenario=self.scenario, mode=mode, dataset=self.dataset
        )

    def runs(self, run_id: str) -> list[PlannedRun]:
        out = [PlannedRun(mode, self.spec(run_id, mode), mode) for mode in modes(self.config)]
        for test in compliance_tests(self.config):
            spec = compliance_spec(self.config, run_id=run_id, node=self.node, scenario=self.scenario, test=test,
                                   dataset=self.dataset)
            out.append(PlannedRun(test, spec, f"{COMPLIANCE_DIR}/{test}"))
        return out

    def run_folder(self, run_id: str) -> Path:
        return run_folder(self.config, self.node, self.scenario, run_id)

    def staging_folder(self, run_id: str) -> Path:
        return staging_folder(self.config, self.node, self.scenario, run_id)
