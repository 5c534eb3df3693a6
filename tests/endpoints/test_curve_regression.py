"""Curve against curve (mlperf_assets/endpoints/regression.py) on hand-made curves whose numbers are worked out here."""

from __future__ import annotations

import pandas as pd
import pytest

from mlperf_assets.endpoints.regression import compare_curves, curve_generations, pareto_area


def _curve(points: dict, at: str, prefix: str) -> pd.DataFrame:
    """``{concurrency or None: (system_tps, tps_per_user)}`` -> endpoint_points-shaped rows ingested at ``at``."""
    return pd.DataFrame([{"run_id": f"{prefix}-{c}", "node": "n1", "concurrency": c,
                          "role": "offline" if c is None else "free", "system_tps": tps, "tps_per_user": tpu,
                          "ingested_at": pd.Timestamp(at)} for c, (tps, tpu) in points.items()])


PREVIOUS = {1: (100.0, 50.0), 4: (300.0, 40.0), 16: (600.0, 20.0), None: (1000.0, None)}
# c4 throughput -20%, c16 tokens/s per user -25%, Offline -10% (not beyond 10%), c32 new and dominated by c16
LATEST = {1: (100.0, 50.0), 4: (240.0, 40.0), 16: (600.0, 15.0), 32: (500.0, 10.0), None: (900.0, None)}


def test_pareto_area_by_hand() -> None:
    # frontier (20, 600), (40, 300), (50, 100): 20*600 + (40-20)*300 + (50-40)*100
    assert pareto_area(_curve(PREVIOUS, "2026-12-01", "a")) == pytest.approx(19000.0)
    # (15, 600), (40, 240), (50, 100); c32 (10, 500) is dominated: 15*600 + 25*240 + 10*100
    assert pareto_area(_curve(LATEST, "2026-12-02", "b")) == pytest.approx(16000.0)
    assert pareto_area(_curve({None: (900.0, None)}, "2026-12-02", "c")) is None


def test_compare_flags_drops_beyond_threshold() -> None:
    result = compare_curves(_curve(PREVIOUS, "2026-12-01", "a"), _curve(LATEST, "2026-12-02", "b"), node="n1",
                            threshold_pct=10.0)
    table = result.table.set_index("point")
    assert list(table.index) == ["c=1", "c=4", "c=16", "Offline"]  # c32 has nothing to match
    assert table.loc["c=4", "system_tps change %"] == pytest.approx(-20.0)
    assert table.loc["c=16", "tps_per_user change %"] == pytest.approx(-25.0)
    assert table.loc["Offline", "system_tps change %"] == pytest.approx(-10.0)
    assert table["flagged"].tolist() == ["", "system_tps", "tps_per_user", ""]
    assert result.area_change_pct == pytest.approx((16000 - 19000) / 19000 * 100)
    assert len(result.flags) == 3 and "c=4: system_tps fell 20.0%" in result.flags[0]
    assert "Pareto step function fell 15.8%" in result.flags[2]
    lenient = compare_curves(_curve(PREVIOUS, "2026-12-01", "a"), _curve(LATEST, "2026-12-02", "b"),
                             threshold_pct=30.0)
    assert lenient.flags == [] and lenient.table["flagged"].tolist() == ["", "", "", ""]


def test_generations_newest_and_the_one_before_per_point() -> None:
    rows = pd.concat([_curve(PREVIOUS, "2026-12-01", "a"), _curve(LATEST, "2026-12-02", "b"),
                      _curve({1: (90.0, 45.0)}, "2026-12-03", "c"),
                      _curve({64: (1.0, 1.0)}, "2026-12-04", "p").assign(role="probe")], ignore_index=True)
    latest, previous = curve_generations(rows)
    assert sorted(latest["run_id"]) == ["b-16", "b-32", "b-4", "b-None", "c-1"]
    assert sorted(previous["run_id"]) == ["a-16", "a-4", "a-None", "b-1"]
    assert curve_generations(rows.iloc[0:0])[0].empty


def test_negative_threshold_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        compare_curves(pd.DataFrame(), pd.DataFrame(), threshold_pct=-1)
