"""A capacity search's LoadGen runs through the node's runner, and its figures through the results store.

:class:`ProbePlan` is one probe as ``ledger.PartitionRun`` runs it; :class:`RunnerProbes` runs the estimate and the
probes of one search (runner, ledger, ingest, the run's figures) and gives the algorithm's ``run_search`` plain
``ProbeFigures``. The store is an argument: the ``store`` resource (:class:`resources.store.ResultsStore`), or any
object with the :class:`SearchStore` methods."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from mlperf_assets.config import MlperfConfig
from mlperf_assets.harness.benchmarks import submission_name
from mlperf_assets.plan import PERFORMANCE, ConfigPlan, PlannedRun, engine_args, probe_folder, run_spec
from mlperf_assets.search.algorithm import ESTIMATE, Limits, ProbeFigures, SearchError
from mlperf_assets.search.settings import probe_settings, search_lg_model_name

LEDGER_SUFFIX = "-search"  # ledger entries of probes: <artifact_root>/.active/<node>/<label>-search.json


class SearchStore(Protocol):
    """What the search reads and writes in the results store (:class:`resources.store.ResultsStore` has it all)."""

    def migrate(self) -> None: ...

    def ingest(self, folder: str | Path, *, node: str | None = None, dagster_run_id: str | None = None) -> list[Any]: ...

    def run_figures(self, run_id: str) -> dict[str, Any] | None: ...

    def latest_offline_runs(self, *, node: str, backend: str, benchmark: str) -> list[dict[str, Any]]: ...

    def search_ids(self, digest: str) -> list[str]: ...

    def search_steps(self, search_id: str) -> list[dict[str, Any]]: ...

    def save_search_step(self, row: dict[str, Any]) -> None: ...


class ProbePlan(ConfigPlan):
    """One probe as ``ledger.PartitionRun`` runs it (a :class:`mlperf_assets.plan.RunPlan`): one performance run of
    LoadGen scenario ``scenario`` with the probe's settings and LoadGen model, recorded in the ledger as
    ``<label>-search`` (so it never disturbs, nor is mistaken for, a scenario_run's record), and collected into
    :func:`mlperf_assets.plan.probe_folder` (``<artifact_root>/.search/<node>/<label>/<run_id>``: outside every
    scenario's folder)."""

    def __init__(self, config: MlperfConfig, node: str, label: str, dataset: Path, *, run_id: str, scenario: str,
                 settings: Mapping[str, Any], lg_model_name: str | None) -> None:
        self.config, self.node, self.dataset = config, node, dataset
        self.scenario = label  # the MLPerf label searched, for messages
        self.ledger_key = label + LEDGER_SUFFIX
        self._run_id, self._scenario, self._settings, self._lg = run_id, scenario, dict(settings), lg_model_name

    def new_run_id(self, dagster_run_id: str) -> str:
        return self._run_id

    def runs(self, run_id: str) -> list[PlannedRun]:
        spec = run_spec(self.config, run_id=run_id, node=self.node, scenario=self._scenario, mode=PERFORMANCE,
                        dataset=self.dataset, settings=self._settings, lg_model_name=self._lg)
        return [PlannedRun(PERFORMANCE, spec, PERFORMANCE)]

    def run_folder(self, run_id: str) -> Path:
        return probe_folder(self.config, self.node, self.scenario, run_id)

    def staging_folder(self, run_id: str) -> Path:
        return self.run_folder(run_id).with_name(f".staging-{run_id}")


class RunnerProbes:
    """Estimates and probes of one search through the node's runner and the results store (no Dagster).

    ``log``: where the ledger reports (a Dagster context's log or a ``logging.Logger``); ``on_progress(kind,
    progress)``: every observation of the probe in flight."""

    def __init__(self, config: MlperfConfig, node: str, label: str, runner: Any, dataset: Path, *,
                 store: SearchStore, search_id: str, dagster_run_id: str, log: Any,
                 on_progress: Callable[[str, Any], None] | None = None) -> None:
        self.config, self.node, self.label, self.runner, self.dataset = config, node, label, runner, dataset
        self.store, self.search_id, self.dagster_run_id = store, search_id, dagster_run_id
        self.log, self.on_progress = log, on_progress
        self.lg_model_name = search_lg_model_name(config, label)

    # ---- the estimate
    def estimate(self) -> tuple[float, str, str | None]:
        s = self.config.search
        if s.start_qps:
            return s.start_qps, "search.start_qps in the config", None
        stored = self.latest_offline()
        if stored is not None:
            return stored
        figures = self.run(0, ESTIMATE, 0.0)
        rate = figures.samples_per_second or 0.0
        return rate, f"Offline probe ({s.offline_probe_queries} samples): {rate:,.2f} samples/s", figures.run_id

    def latest_offline(self) -> tuple[float, str, str] | None:
        """The node's latest Offline performance run of this benchmark, backend and engine arguments."""
        b = self.config.benchmark
        wanted = engine_args(self.config, self.node)
        for run in self.store.latest_offline_runs(node=self.node, backend=b.backend,
                                                  benchmark=submission_name(b.model) or b.model):
            if all(_same_value(run["engine_args"].get(k), v) for k, v in wanted.items()):
                rate, run_id = run["samples_per_second"], run["run_id"]
                return rate, f"latest Offline run {run_id} ({run['started_at']}): {rate:,.2f} samples/s", run_id
        return None

    # ---- one LoadGen run
    def run(self, step: int, kind: str, target_qps: float) -> ProbeFigures:
        """Run, collect and ingest one probe (``kind`` estimate: an Offline run); its figures from the store."""
        from resources.runners.ledger import PartitionRun

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}-{self.node}-{self.label}-qps-{self.search_id}-{step:02d}"
        scenario = "Offline" if kind == ESTIMATE else "Server"
        plan = ProbePlan(self.config, self.node, self.label, self.dataset, run_id=run_id, scenario=scenario,
                         settings=probe_settings(self.config, kind, target_qps),
                         lg_model_name=self.lg_model_name if kind != ESTIMATE else None)
        forward = self.on_progress
        session = PartitionRun(self.runner, plan, log=self.log, dagster_run_id=self.dagster_run_id)
        result = session.run((lambda mode, progress: forward(kind, progress)) if forward else None)
        ingested = self.store.ingest(result.folder, node=self.node, dagster_run_id=self.dagster_run_id)
        perf = [r.run_id for r in ingested if r.mode == "performance"]
        row = self.store.run_figures(perf[0]) if perf else None
        if row is None:
            raise SearchError(f"probe {result.run_id}: no performance run was ingested from {result.folder}")
        return figures_of(perf[0], row, self.lg_model_name)


def figures_of(run_id: str, row: dict[str, Any], lg_model_name: str | None) -> ProbeFigures:
    """A probe's figures from its ``runs`` row (``store.RUN_FIGURE_COLUMNS``); the limits are the run's own, else
    the registry's for its LoadGen model (``lg_model_name`` where the row names none)."""
    started, finished = row.get("started_at"), row.get("finished_at")
    duration = (finished - started).total_seconds() if started and finished else None
    return ProbeFigures(
        run_id=run_id, result_validity=row.get("result_validity"),
        limits=Limits.for_run(row, row.get("lg_model_name") or lg_model_name),
        ttft_p99_ns=row.get("ttft_p99_ns"), tpot_p99_ns=row.get("tpot_p99_ns"),
        latency_p99_ns=row.get("latency_p99_ns"),
        completed_samples_per_second=row.get("completed_samples_per_second"),
        samples_per_second=row.get("samples_per_second"), duration_s=duration,
        invalid_reason=row.get("invalid_reason"))


def _same_value(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
