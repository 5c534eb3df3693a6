"""What the pipeline runs and where its files go, from a config: pure (no Dagster), so the assets, the commands and
``benchmarks/`` share one answer.

- partitions: one per node x scenario (:data:`NODE_DIM`, :data:`SCENARIO_DIM`, :func:`partition_keys`);
- run ids: :func:`new_run_id` (``<UTC stamp>-<node>-<scenario>-<first 8 of the Dagster run id>``; one run id covers
  the performance and the accuracy run of a partition);
- paths: the prepared dataset (:func:`prepared_dataset_path`), a run's artifact folder and its staging folder;
- run specs: :func:`build_spec` (what one harness process gets, with the node's GPU parallelism:
  :func:`node_parallelism`), and :class:`PartitionPlan`, all of it for one partition.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlperf_assets.config import DATASET_ENV, MlperfConfig, Parallelism, resolve_parallelism
from resources.runners.base import RunSpec

NODE_DIM, SCENARIO_DIM = "node", "scenario"  # the two partition dimensions; time is never one
PERFORMANCE, ACCURACY = "performance", "accuracy"

# How the checkpoint reaches a backend: as this engine argument (vLLM's `model`, the OpenAI server's `api_model`).
CHECKPOINT_ENGINE_ARG = {"vllm": "model", "openai": "api_model"}


def partition_keys(config: MlperfConfig) -> list[tuple[str, str]]:
    """(node, scenario) of every partition, nodes in config order, scenarios in MLPerf order."""
    return [(node, scenario) for node in config.node_names for scenario in config.scenario_names]


def modes(config: MlperfConfig) -> tuple[str, ...]:
    """The harness runs of one partition, in order: performance, then accuracy unless the config turns it off."""
    return (PERFORMANCE, ACCURACY) if config.benchmark.accuracy else (PERFORMANCE,)


def new_run_id(node: str, scenario: str, dagster_run_id: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{node}-{scenario}-{dagster_run_id[:8]}"


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


def how_to_supply_dataset() -> str:
    return (
        f"To use a local copy instead, set {DATASET_ENV} to a folder of .story files, an MLCommons cnn_eval.json "
        f"or a .jsonl file of {{id, article, highlights}}, e.g. "
        f"`{DATASET_ENV}=../shared/testdata/cnn_dailymail/stories make demo`; or set dataset.source and "
        "dataset.path in the config."
    )


def run_folder(config: MlperfConfig, node: str, scenario: str, run_id: str) -> Path:
    """A collected run: ``<artifact_root>/<node>/<scenario>/<run_id>/{performance,accuracy}``."""
    return config.storage.artifact_root / node / scenario / run_id


def staging_folder(config: MlperfConfig, node: str, scenario: str, run_id: str) -> Path:
    """Where a run's modes are collected before the whole run folder is renamed into place."""
    return config.storage.artifact_root / node / scenario / f".staging-{run_id}"


# benchmark.profile: submission runs with MLPerf's durations and counts: these overrides are dropped so
# mlperf.conf's values apply (the expected speed and latency targets stay: they size the run, not its rules)
SUBMISSION_DROPPED_SETTINGS = ("min_duration", "max_duration", "min_query_count", "max_query_count",
                               "performance_sample_count_override", "accuracy_sample_count_override")
COMPLIANCE_DIR = "compliance"  # a partition's compliance runs: <run folder>/compliance/<TEST>


def profile_settings(config: MlperfConfig, settings: dict) -> dict:
    if config.benchmark.profile != "submission":
        return settings
    return {k: v for k, v in settings.items() if k not in SUBMISSION_DROPPED_SETTINGS}


def audit_config_text(config: MlperfConfig, test: str) -> str:
    """The official audit.config of a compliance test, from the user's MLCommons checkout."""
    from mlperf_assets.errors import UserError

    if config.mlcommons_inference is None:
        raise UserError(f"mlcommons_inference: is required for {test} (its compliance/{test}/audit.config)")
    path = config.mlcommons_inference / "compliance" / test / "audit.config"
    try:
        return path.read_text()
    except OSError as exc:
        raise UserError(f"mlcommons_inference: cannot read {path}: {exc.strerror or exc}") from None


def compliance_spec(config: MlperfConfig, *, run_id: str, node: str, scenario: str, test: str,
                    dataset: Path) -> RunSpec:
    """The compliance run ``test`` of a partition: a performance run with the test's audit.config (the harness
    puts it in LoadGen's working directory); collected into ``<run folder>/compliance/<test>``."""
    import dataclasses

    spec = build_spec(config, run_id=run_id, node=node, scenario=scenario, mode=PERFORMANCE, dataset=dataset)
    return dataclasses.replace(spec, compliance=test, audit_config=audit_config_text(config, test))


def node_parallelism(config: MlperfConfig, node: str) -> Parallelism:
    """``benchmark.parallelism`` resolved for the node called ``node`` (none for a name the config does not have)."""
    try:
        node_config = config.node(node)
    except KeyError:
        return Parallelism("none")
    return resolve_parallelism(config.benchmark, node_config)


def build_spec(config: MlperfConfig, *, run_id: str, node: str, scenario: str, mode: str, dataset: Path) -> RunSpec:
    """The harness run of one mode of a partition. On a node with several GPUs the config's ``parallelism`` picks
    data parallelism (``--data-parallel-size N`` with ``tensor_parallel_size`` GPUs per replica) or tensor
    parallelism (``tensor_parallel_size`` = the node's GPUs): :func:`mlperf_assets.config.resolve_parallelism`;
    the spec records the choice (its ``data_parallel_size`` and engine arguments, in run_spec.json)."""
    b = config.benchmark
    engine = dict(b.engine)
    model_key = CHECKPOINT_ENGINE_ARG.get(b.backend)
    if model_key and b.checkpoint and model_key not in engine:
        engine[model_key] = b.checkpoint
    parallelism = node_parallelism(config, node)
    if parallelism.tensor_parallel_size is not None:
        engine["tensor_parallel_size"] = parallelism.tensor_parallel_size
    return RunSpec(
        run_id=run_id,
        node=node,
        scenario=scenario,
        mode=mode,
        benchmark=b.model,
        backend=b.backend,
        dataset_path=str(dataset),
        engine_args=engine,
        settings=profile_settings(config, b.scenarios.enabled()[scenario].as_settings()),
        lg_model_name=b.lg_model_name,
        progress_interval_s=b.progress_interval_s,
        data_parallel_size=parallelism.data_parallel_size,
    )


@dataclass(frozen=True)
class PartitionPlan:
    """One partition's runs: what each mode runs (:meth:`spec`), where the runs are collected, the time limit."""

    config: MlperfConfig
    node: str
    scenario: str
    dataset: Path  # the prepared dataset the runs read

    @property
    def modes(self) -> tuple[str, ...]:
        """performance, accuracy, then each compliance test as ``compliance/<TEST>`` (its folder in the run)."""
        from mlperf_assets.config import compliance_tests

        return modes(self.config) + tuple(f"{COMPLIANCE_DIR}/{t}" for t in compliance_tests(self.config))

    @property
    def artifact_root(self) -> Path:
        return self.config.storage.artifact_root

    @property
    def timeout_s(self) -> float | None:
        """A harness run still going after this long is cancelled (None: no limit)."""
        return self.config.benchmark.run_timeout_s

    def new_run_id(self, dagster_run_id: str) -> str:
        return new_run_id(self.node, self.scenario, dagster_run_id)

    def spec(self, run_id: str, mode: str) -> RunSpec:
        if mode.startswith(f"{COMPLIANCE_DIR}/"):  # its own run id: its folder on the node is not performance's
            test = mode.split("/", 1)[1]
            return compliance_spec(self.config, run_id=f"{run_id}.{test}", node=self.node, scenario=self.scenario,
                                   test=test, dataset=self.dataset)
        return build_spec(
            self.config, run_id=run_id, node=self.node, scenario=self.scenario, mode=mode, dataset=self.dataset
        )

    def run_folder(self, run_id: str) -> Path:
        return run_folder(self.config, self.node, self.scenario, run_id)

    def staging_folder(self, run_id: str) -> Path:
        return staging_folder(self.config, self.node, self.scenario, run_id)
