"""mlperf-viz (the MLCommons viewer) reads our bundle and derives the same figures we stored in DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.endpoints.bundle import build_bundle
from mlperf_assets.endpoints.results import read_point
from tests.endpoints.test_bundle import POWER, SYSTEM, options
from tests.support.endpoints_points import full_curve


def test_viewer_figures_equal_ours(tmp_path: Path) -> None:
    from resources.store import ResultsStore

    folders = full_curve(tmp_path / "runs")
    store = ResultsStore(path=str(tmp_path / "results.duckdb"))
    for f in folders:
        store.ingest_endpoint_point(f)
    bundle = build_bundle([read_point(f) for f in folders], tmp_path / "out", system=SYSTEM, power=POWER,
                          options=options())
    export = tmp_path / "viz.json"
    viz = Path(sys.executable).parent / "mlperf-viz"
    proc = subprocess.run([str(viz), str(bundle.out), "--export", str(export)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = {r["label"]: r["run"]["derived_fields"] for r in json.loads(export.read_text())["runs"]}
    ours = store.endpoint_points()
    assert len(runs) == len(ours) == 8
    for _, row in ours.iterrows():
        n = 13368 if row["role"] == "offline" else int(row["concurrency"])
        theirs = runs[f"r{n}"]
        assert theirs["system_tps"] == pytest.approx(row["system_tps"], rel=1e-9)
        assert theirs["tps_per_user"] == pytest.approx(row["tps_per_user"], rel=1e-9)
        assert theirs["ttft"] == pytest.approx(row["ttft_p90_ms"], rel=1e-9)


def test_viewer_static_site(tmp_path: Path) -> None:
    folders = full_curve(tmp_path / "runs")
    bundle = build_bundle([read_point(f) for f in folders], tmp_path / "out", system=SYSTEM, power=POWER,
                          options=options())
    site = tmp_path / "site"
    viz = Path(sys.executable).parent / "mlperf-viz"
    proc = subprocess.run([str(viz), str(bundle.out), "--build", str(site)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (site / "index.html").is_file()
