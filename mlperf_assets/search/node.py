"""One capacity search of one node x label, end to end: find (or resume) it in the store, run it through the node's
runner, store every step and write the suggestion file. What the ``max_qps_search`` asset and the benchmarks call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlperf_assets.config import MlperfConfig
from mlperf_assets.harness.files import write_atomic
from mlperf_assets.search.algorithm import Outcome, Step, run_search
from mlperf_assets.search.probes import RunnerProbes, SearchStore
from mlperf_assets.search.settings import (
    identity_digest,
    search_id_for,
    search_identity,
    suggestion_path,
    suggestion_yaml,
)


@dataclass(frozen=True)
class SearchRun:
    """What :func:`search_node` did: the outcome, the search id, and where the suggestion was written."""

    search_id: str
    outcome: Outcome
    suggestion_file: Path
    lg_model_name: str
    reused: int  # stored steps replayed instead of measured


def search_node(
    config: MlperfConfig,
    node: str,
    label: str,
    runner: Any,
    dataset: Path,
    *,
    dagster_run_id: str,
    log: Any,
    store: SearchStore | None = None,
    fresh: bool = False,
    on_step: Callable[[Step, bool], None] | None = None,
    on_progress: Callable[[str, Any], None] | None = None,
) -> SearchRun:
    """Find (or resume) the search of ``node`` x ``label`` for this config, store every step, write the suggestion.
    ``store``: where steps and probe runs go (default: the results store at ``storage.duckdb_path``)."""
    if store is None:
        from resources.store import ResultsStore

        store = ResultsStore(path=str(config.storage.duckdb_path))
    identity = search_identity(config, node, label, dataset)
    store.migrate()  # creates or migrates: the qps_search table exists from here on
    digest = identity_digest(identity)
    search_id = search_id_for(digest, store.search_ids(digest), fresh)
    stored = [Step.from_row(r) for r in store.search_steps(search_id)]
    probes = RunnerProbes(config, node, label, runner, dataset, store=store, search_id=search_id,
                          dagster_run_id=dagster_run_id, log=log, on_progress=on_progress)
    reused = [0]

    def saw(step: Step, was_stored: bool) -> None:
        reused[0] += was_stored
        if on_step is not None:
            on_step(step, was_stored)

    outcome = run_search(
        config.search, search_id=search_id, estimate=probes.estimate,
        probe=lambda step, kind, qps: probes.run(step, kind, qps), stored=stored,
        save=lambda step: store.save_search_step(step.row()), on_step=saw,
        labels={"node": node, "scenario": label, "lg_model_name": probes.lg_model_name,
                "benchmark": config.benchmark.model, "backend": config.benchmark.backend,
                "dagster_run_id": dagster_run_id, "settings_json": json.dumps(identity, sort_keys=True, default=str)},
        on_note=log.warning,
    )
    path = suggestion_path(config, node, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, suggestion_yaml(node, label, probes.lg_model_name, outcome, search_id))
    return SearchRun(search_id, outcome, path, probes.lg_model_name, reused[0])
