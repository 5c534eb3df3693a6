"""``ResultsStore``: the DuckDB results store (``mlperf_assets.store``) as a Dagster resource.

A thin wrapper: it holds the database path and lock timeout and forwards to the pure store functions,
which open a connection per call (DuckDB allows one writer process; the store serializes writers with a
lock file and raises ``StoreLockedError`` after ``lock_timeout_s``).
"""

from __future__ import annotations

import inspect
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

        kwargs: dict[str, Any] = {"node": node, "backend": backend, "benchmark": benchmark}
        kwargs["lock_timeout_s"] = self.lock_timeout_s
        if dagster_run_id is not None and "dagster_run_id" in inspect.signature(store.ingest_path).parameters:
            kwargs["dagster_run_id"] = dagster_run_id
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return store.ingest_path(self.path, str(folder), **kwargs)

    def save_accuracy(self, run_id: str, results: dict, checks: dict[str, dict]) -> None:
        from mlperf_assets import store

        store.save_accuracy(self.path, run_id, results, checks)

    def query(self, sql: str, params: list | tuple | dict | None = None):
        """A pandas DataFrame from a read-only connection."""
        from mlperf_assets import store

        return store.query(self.path, sql, params)

    def exists(self) -> bool:
        return Path(self.path).is_file()
