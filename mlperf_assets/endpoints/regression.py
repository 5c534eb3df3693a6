"""Curve against curve: the latest MLPerf Endpoints curve of a node against its previous one (pure: DataFrames in).

A curve is not stored as one thing: each point (a concurrency, or Offline) is its own partition and run, so a
node's curves are its generations of points: the latest curve is the newest ingested run of each point (what the
bundle packages, ``bundle.latest_points``), the previous curve the one before it of each point. Points are matched
by concurrency (Offline with Offline); ``system_tps`` and ``tps_per_user`` drops beyond the threshold are flagged,
and so is a shrinking area under the official Pareto step function (``charts.pareto_frontier`` / ``step_xy``),
measured from the origin: the (tokens/s per user x system TPS) area the curve's frontier dominates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from mlperf_assets.endpoints.charts import _is_offline, _num, pareto_frontier, split_points, step_xy
from mlperf_assets.reporting.regression import DEFAULT_THRESHOLD_PCT

METRICS = ("system_tps", "tps_per_user")  # both higher-is-better


@dataclass
class CurveComparison:
    node: str
    threshold_pct: float
    table: pd.DataFrame  # one row per matched point: previous, latest and change % of each metric, flagged
    area_previous: float | None
    area_latest: float | None
    flags: list[str] = field(default_factory=list)  # one sentence per drop beyond the threshold

    @property
    def area_change_pct(self) -> float | None:
        return _change(self.area_previous, self.area_latest)


def _point_key(row) -> str:
    return "Offline" if _is_offline(row) else f"c={int(row['concurrency'])}"


def curve_generations(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(latest curve, previous curve) of one node's ``endpoint_points`` rows: per point, the newest ingested run and
    the one before it (probes never belong to a curve). Either is empty when there is none."""
    if points is None or points.empty:
        return pd.DataFrame(), pd.DataFrame()
    rows = points[points["role"].astype(str) != "probe"] if "role" in points else points
    rows = rows.assign(_key=[_point_key(r) for r in rows.to_dict("records")])
    rows = rows.sort_values(["ingested_at", "run_id"], ascending=False, kind="mergesort")
    rank = rows.groupby("_key", sort=False).cumcount()
    latest, previous = rows[rank == 0], rows[rank == 1]
    return latest.drop(columns="_key").reset_index(drop=True), previous.drop(columns="_key").reset_index(drop=True)


def pareto_area(points: pd.DataFrame) -> float | None:
    """The area under the Pareto step function of a curve's fixed-concurrency points, from the origin (Offline is a
    ceiling, never a step); None without a point carrying both axes."""
    curve, _ = split_points(points)
    frontier = pareto_frontier(curve)
    if not frontier:
        return None
    xs, ys = step_xy(frontier)
    xs, ys = [0.0, *xs], [ys[0], *ys]  # the highest-throughput point also covers every lower tokens/s per user
    return sum((xs[i] - xs[i - 1]) * ys[i] for i in range(1, len(xs)))


def _change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return (after - before) / before * 100.0


def compare_curves(previous: pd.DataFrame, latest: pd.DataFrame, *, node: str = "",
                   threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> CurveComparison:
    """The latest curve against the previous one: matched points' changes (%), drops beyond ``threshold_pct``
    flagged, and the change of the Pareto step function's area."""
    if threshold_pct < 0:
        raise ValueError(f"regression threshold must be >= 0 percent, got {threshold_pct}")
    before = {_point_key(r): r for r in previous.to_dict("records")} if len(previous) else {}
    rows, flags = [], []
    after = sorted(latest.to_dict("records") if len(latest) else [],
                   key=lambda r: (_is_offline(r), 0 if _is_offline(r) else int(r["concurrency"])))
    for r in after:
        key = _point_key(r)
        old = before.get(key)
        if old is None:
            continue
        row: dict = {"point": key}
        flagged = []
        for metric in METRICS:
            a, b = _num(old.get(metric)), _num(r.get(metric))
            change = _change(a, b)
            row[f"{metric} before"], row[f"{metric} now"], row[f"{metric} change %"] = a, b, change
            if change is not None and -change > threshold_pct:
                flagged.append(metric)
                flags.append(f"{node} {key}: {metric} fell {abs(change):.1f}% ({a:,.2f} -> {b:,.2f}), beyond the "
                             f"{threshold_pct:g}% threshold")
        row["flagged"] = ", ".join(flagged)
        rows.append(row)
    area_before, area_now = pareto_area(previous), pareto_area(latest)
    change = _change(area_before, area_now)
    if change is not None and math.isfinite(change) and -change > threshold_pct:
        flags.append(f"{node}: the area under the Pareto step function fell {abs(change):.1f}%, beyond the "
                     f"{threshold_pct:g}% threshold")
    return CurveComparison(node=node, threshold_pct=threshold_pct, table=pd.DataFrame(rows),
                           area_previous=area_before, area_latest=area_now, flags=flags)
