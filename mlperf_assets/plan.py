"""What the pipeline runs and where its files go, from a config: pure (no Dagster), so the assets, the commands and
``benchmarks/`` share one answer.

- partitions: one per node x scenario (:data:`NODE_DIM`, :data:`SCENARIO_DIM`, :func:`partition_keys`);
- run ids: :func:`new_run_id` (``<UTC stamp>-<node>-<scenario>-<first 8 of the Dagster run id>``; one run id covers
  the performance and the accuracy run of a partition);
- paths: the prepared dataset (:func:`prepared_dataset_path`), a run's artifact folder and its staging folder;
- run specs: :func:`build_spec` (what one harness process gets), and :class:`PartitionPlan`, all of it for one
  partition.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlperf_assets.config import DATASET_ENV, MlperfConfig
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


def build_spec(config: MlperfConfig, *, run_id: str, node: str, scenario: str, mode: str, dataset: Path) -> RunSpec:
    """The harness run of one mode of a partition."""
    b = config.benchmark
    engine = dict(b.engine)
    model_key = CHECKPOINT_ENGINE_ARG.get(b.backend)
    if model_key and b.checkpoint and model_key not in engine:
        engine[model_key] = b.checkpoint
    return RunSpec(
        run_id=run_id,
        node=node,
        scenario=scenario,
        mode=mode,
        benchmark=b.model,
        backend=b.backend,
        dataset_path=str(dataset),
        engine_args=engine,
        settings=b.scenarios.enabled()[scenario].as_settings(),
        lg_model_name=b.lg_model_name,
        progress_interval_s=b.progress_interval_s,
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
        return modes(self.config)

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
        return build_spec(
            self.config, run_id=run_id, node=self.node, scenario=self.scenario, mode=mode, dataset=self.dataset
        )

    def run_folder(self, run_id: str) -> Path:
        return run_folder(self.config, self.node, self.scenario, run_id)

    def staging_folder(self, run_id: str) -> Path:
        return staging_folder(self.config, self.node, self.scenario, run_id)
