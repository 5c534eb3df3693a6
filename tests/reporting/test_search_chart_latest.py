"""The report's capacity-search chart (issue 24, G22): a newer search interrupted before its result never hides the
latest complete one of the same node and scenario; the chart says which newer search it passed over, and a search
shown without a result is labelled interrupted. Rows go through the real DuckDB store (``qps_search``)."""

from __future__ import annotations

from pathlib import Path

from mlperf_assets import charts, store
from mlperf_assets.search import CONFIRM, ESTIMATE, FOUND, PROBE, RESULT, Step


def step(search_id: str, n: int, kind: str, qps: float | None, verdict: str) -> Step:
    return Step(search_id=search_id, step=n, kind=kind, target_qps=qps, verdict=verdict, reason=f"{kind} {verdict}",
                node="box", scenario="Interactive", backend="sim", ttft_p99_ns=1.5e8, ttft_limit_ns=5e8,
                tpot_p99_ns=2e7, tpot_limit_ns=3e7, margin=0.1)


COMPLETE = [("abc-1", 0, ESTIMATE, 100.0, ESTIMATE), ("abc-1", 1, PROBE, 90.0, "pass"), ("abc-1", 2, PROBE, 135.0, "fail"),
            ("abc-1", 3, CONFIRM, 90.0, "pass"), ("abc-1", 4, RESULT, 90.0, FOUND)]


def stored(tmp_path: Path, rows) -> list[dict]:
    db = tmp_path / "r.duckdb"
    for row in rows:
        store.save_qps_search_step(db, step(*row).row())
    return store.read_qps_search(db)


def test_a_newer_search_interrupted_before_its_first_probe_does_not_hide_a_complete_one(tmp_path):
    rows = stored(tmp_path, [*COMPLETE, ("abc-2", 0, ESTIMATE, 100.0, ESTIMATE)])
    [chart] = charts.search_charts(rows)
    assert chart.available, chart.reason
    assert any("chosen 90.00 QPS" in trace.name for trace in chart.figure.data)
    assert any("the newest search abc-2 stopped before its first probe" in note and "abc-1" in note
               for note in chart.notes), chart.notes


def test_a_newer_search_stopped_mid_way_does_not_hide_a_complete_one(tmp_path):
    rows = stored(tmp_path, [*COMPLETE, ("abc-2", 0, ESTIMATE, 100.0, ESTIMATE), ("abc-2", 1, PROBE, 90.0, "fail")])
    [chart] = charts.search_charts(rows)
    names = {trace.name for trace in chart.figure.data}
    assert any("chosen 90.00 QPS" in n for n in names) and not any("interrupted" in n for n in names), names
    assert any("abc-2 stopped before its result" in note for note in chart.notes), chart.notes


def test_an_interrupted_search_alone_is_shown_labelled_as_such(tmp_path):
    rows = stored(tmp_path, [("abc-2", 0, ESTIMATE, 100.0, ESTIMATE), ("abc-2", 1, PROBE, 90.0, "fail")])
    [chart] = charts.search_charts(rows)
    assert chart.available and all("interrupted (no result yet)" in t.name for t in chart.figure.data if t.name)
