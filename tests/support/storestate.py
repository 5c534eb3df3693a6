"""What a DuckDB results store holds, for tests that a refused write changed nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlperf_assets import store


def db_state(db: Path) -> tuple[str, list]:
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    counts = store.query_rows(
        db, "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in ("runs", *store.CHILD_TABLES, "accuracy_results"))
    )[1]
    return digest, counts
