"""``ResultsStore``: the DuckDB results store (``mlperf_assets.store``) as a Dagster resource.

The one door into DuckDB for assets, asset checks, sensors and the submission: it holds the database path and
lock timeout and forwards to the pure store functions, which open a connection per call (DuckDB allows one writer
process; the store serializes writers with a lock file and raises ``StoreLockedError`` after ``lock_timeout_s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableResource


class ResultsStore(ConfigurableResource):
    """``path``: the DuckDB file (``storage.duckdb_path``); ``lock_timeout_s``: wait for another writer."""

    path: str
    lock_timeout_s: float = 30.0

    def ingest(
        self,
        folder: str | Path,
        *,
        node: str | None = None,
        backend: str | None = None,
        benchmark: str | None = None,
        dagster_run_id: str | None = None,
    ) -> list[Any]:
        """Ingest every LoadGen run folder below ``folder`` in one transaction; re-ingesting a run replaces its
        rows. Returns the store's ``IngestReport``: a list of ``IngestedRun``, with ``.skipped`` (files left
        out, with reasons)."""
        from mlperf_assets import store

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return store.ingest_path(self.path, str(folder), node=node, backend=backend, benchmark=benchmark,
                                 dagster_run_id=dagster_run_id, lock_timeout_s=self.lock_timeout_s)

    def save_accuracy(self, run_id: str, results: dict, checks: dict[str, dict]) -> None:
        from mlperf_assets import store

        store.save_accuracy(self.path, run_id, results, checks)

    def save_submission_checks(self, rows: list[dict[str, Any]]) -> str:
        """Record one checker run over a submission tree (``mlperf_assets.submission.check_records``) in
        ``submission_checks``; returns its ``check_id``."""
        from mlperf_assets import store

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return store.save_submission_checks(self.path, rows, lock_timeout_s=self.lock_timeout_s)

    def read_submission_checks(self, check_id: str | None = None) -> list[dict[str, Any]]:
        """The rows of one checker run (default: the latest); [] before any."""
        from mlperf_assets import store

        return store.read_submission_checks(self.path, check_id)

    def ingest_endpoint_point(self, run_folder: str | Path, *, references: list[str] | None = None) -> dict[str, Any]:
        """Read one MLPerf Endpoints point's run folder (``mlperf_assets.endpoints.results.read_point``: figures as
        the Endpoints checker computes them, accuracy re-scored) and store it in ``endpoint_points`` /
        ``endpoint_accuracy``, replacing an earlier ingest of the same run. Returns the stored point row."""
        from mlperf_assets import store
        from mlperf_assets.endpoints.results import read_point

        point = read_point(run_folder, references=references)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        store.save_endpoint_point(self.path, point.row, point.accuracy, lock_timeout_s=self.lock_timeout_s)
        return point.row

    def endpoint_points(self, where: str = "", params: list | tuple = ()):
        """``endpoint_points`` rows (a DataFrame, by node and concurrency) matching the optional SQL ``where``."""
        from mlperf_assets import store

        return store.read_endpoint_table(self.path, "endpoint_points", where, params)

    def endpoint_accuracy(self, where: str = "", params: list | tuple = ()):
        """``endpoint_accuracy`` rows (client's and our scores) matching the optional SQL ``where``."""
        from mlperf_assets import store

        return store.read_endpoint_table(self.path, "endpoint_accuracy", where, params)

    def save_endpoint_checks(self, bundle: str | Path, findings: list[dict[str, Any]]) -> str:
        """Record one Endpoints checker run (``mlperf_assets.endpoints.bundle.check_bundle``'s findings) in
        ``endpoint_checks``; returns its ``check_id``."""
        from mlperf_assets import store

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return store.save_endpoint_checks(self.path, str(bundle), findings, lock_timeout_s=self.lock_timeout_s)

    def migrate(self) -> None:
        """Create the database (and its folder), or bring it to the current schema, without ingesting anything."""
        from mlperf_assets import store

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        store.init_db(self.path, lock_timeout_s=self.lock_timeout_s)

    def save_search_step(self, row: dict[str, Any]) -> None:
        """Record one capacity-search step in ``qps_search`` (replacing the row of the same search id and step)."""
        from mlperf_assets import store

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        store.save_qps_search_step(self.path, row, lock_timeout_s=self.lock_timeout_s)

    def search_ids(self, digest: str) -> list[str]:
        """The stored searches of one identity digest (``<digest>-<n>``), sorted."""
        from mlperf_assets import store

        return store.search_ids(self.path, digest)

    def search_steps(self, search_id: str) -> list[dict[str, Any]]:
        """The stored steps of one search (``qps_search`` rows, by step)."""
        from mlperf_assets import store

        return store.search_steps(self.path, search_id)

    def latest_offline_runs(self, *, node: str, backend: str, benchmark: str) -> list[dict[str, Any]]:
        """The node's newest Offline performance runs of a benchmark and backend (``store.latest_offline_runs``)."""
        from mlperf_assets import store

        return store.latest_offline_runs(self.path, node=node, backend=backend, benchmark=benchmark)

    def run_figures(self, run_id: str) -> dict[str, Any] | None:
        """What the search judges a run by (``store.RUN_FIGURE_COLUMNS`` of its ``runs`` row); None if not stored."""
        from mlperf_assets import store

        return store.run_figures(self.path, run_id)

    def query(self, sql: str, params: list | tuple | dict | None = None):
        """A pandas DataFrame from a read-only connection."""
        from mlperf_assets import store

        return store.query(self.path, sql, params)

    def summary(self):
        """``run_summary`` as the report reads it (a DataFrame; capacity-search probes left out): what the
        regression check and the regression sensor judge. ``StoreError`` when the store cannot be read."""
        from mlperf_assets.reporting import load_summary

        return load_summary(self.path)

    def exists(self) -> bool:
        return Path(self.path).is_file()
