"""The report's "MLPerf Endpoints curves" section from a store holding two ingested curves of one node."""

from __future__ import annotations

from pathlib import Path

from mlperf_assets.reporting import build_report
from tests.support.endpoints_points import CURVE, result_summary, write_point


def _ingest_curve(store, root: Path, night: str, *, slow_c64: bool = False) -> None:
    for c, (role, region, acc) in CURVE.items():
        label = "offline" if c is None else f"c{c}"
        summary = None
        if slow_c64 and c == 64:  # the same tokens in 25% more time: system_tps 20% lower, TPOT unchanged
            summary = result_summary(64)
            summary["duration_ns"] = int(summary["duration_ns"] * 1.25)
        folder = write_point(root / night / label, c, role=role, region=region, accuracy=acc, summary=summary,
                             run_manifest={"run_id": f"{night}-{label}", "node": "gpu-node-1"})
        store.ingest_endpoint_point(folder)


def test_report_has_endpoints_curves_and_flags_the_drop(tmp_path: Path) -> None:
    from resources.store import ResultsStore

    db = tmp_path / "results.duckdb"
    store = ResultsStore(path=str(db))
    _ingest_curve(store, tmp_path / "runs", "night1")
    _ingest_curve(store, tmp_path / "runs", "night2", slow_c64=True)

    result = build_report(db, tmp_path / "report", render_workers=1)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## MLPerf Endpoints curves" in text and "### gpu-node-1" in text
    section = text.split("## MLPerf Endpoints curves", 1)[1]
    assert "night2-c64" in section and "night1-c64" not in section  # the latest curve's table
    png = tmp_path / "report" / "endpoints_pareto_gpu-node-1.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(endpoints_pareto_gpu-node-1.png)" in section
    assert len(result.endpoint_regressions) == 1
    assert "gpu-node-1 c=64: system_tps fell 20.0%" in result.endpoint_regressions[0]
    assert "| c=64 |" in section and "**system_tps**" in section and "-20.0%" in section
    # the step function's area shrinks only by the c64 drop's share (c64 is on the frontier)
    assert "area under the Pareto step function:" in section


def test_no_endpoints_points_no_section(tmp_path: Path) -> None:
    from mlperf_assets.store import init_db

    db = tmp_path / "results.duckdb"
    init_db(db)  # the endpoint_points table exists, empty
    out = tmp_path / "report"
    out.mkdir()
    (out / "endpoints_pareto_gone-node.png").write_bytes(b"old")  # an earlier report's picture must not linger
    result = build_report(db, out, render_workers=1)
    assert "MLPerf Endpoints" not in result.markdown and result.endpoint_regressions == []
    assert not list(out.glob("endpoints_pareto_*.png"))
