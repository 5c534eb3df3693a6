"""Regression detection: each performance run against the previous runs of the same node/scenario/backend.

Pure: a DataFrame shaped like the store's `run_summary` view in, a list of `RegressionFlag` out. The baseline of a
run is the median of up to `window` earlier runs of its group (node, scenario with Interactive apart, benchmark,
backend), so one noisy night neither raises nor hides a flag. Flagged: tokens/s down, or p99 TTFT / p99 TPOT up,
by more than `threshold_pct` percent of the baseline.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import pandas as pd

from mlperf_assets.charts import (
    _iterrows,
    _num,
    group_keys,
    headline_tokens_per_second,
    latest_per_group,
    performance_runs,
    scenario_kind,
)

# What a run's flags are computed from (group key, metrics, validity, labels)
_ROW_COLUMNS = ("run_id", "node", "scenario", "scenario_label", "benchmark", "backend", "lg_model_name",
                "source_path", "started_at", "result_validity", "tokens_per_second", "completed_tokens_per_second",
                "ttft_p99_ns", "tpot_p99_ns")

DEFAULT_THRESHOLD_PCT = 10.0
DEFAULT_WINDOW = 5

# metric name -> (how to read it from a run_summary row, +1 if higher is better / -1 if lower is better, unit)
METRICS = {
    "tokens_per_second": (headline_tokens_per_second, +1, "tokens/s"),
    "ttft_p99": (lambda r: _num(r.get("ttft_p99_ns")), -1, "ns"),
    "tpot_p99": (lambda r: _num(r.get("tpot_p99_ns")), -1, "ns"),
}


@dataclass(frozen=True)
class RegressionFlag:
    run_id: str
    node: str
    scenario: str
    benchmark: str
    backend: str
    metric: str
    value: float
    baseline: float
    change_pct: float  # signed: (value - baseline) / baseline * 100
    threshold_pct: float
    baseline_run_ids: tuple[str, ...]
    started_at: str | None

    @property
    def message(self) -> str:
        if self.metric == "tokens_per_second":
            what = f"tokens/s fell {abs(self.change_pct):.1f}% ({self.baseline:,.1f} -> {self.value:,.1f})"
        else:
            label = {"ttft_p99": "p99 TTFT", "tpot_p99": "p99 TPOT"}[self.metric]
            what = (f"{label} rose {self.change_pct:.1f}% ({self.baseline / 1e6:,.1f} ms -> "
                    f"{self.value / 1e6:,.1f} ms)")
        return (f"{self.node} · {self.scenario} · {self.backend}: {what}, beyond the {self.threshold_pct:g}% "
                f"threshold, vs the median of {len(self.baseline_run_ids)} earlier run(s) (run {self.run_id})")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["baseline_run_ids"] = list(self.baseline_run_ids)
        data["message"] = self.message
        return data


def detect_regressions(
    summary: pd.DataFrame,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    *,
    window: int = DEFAULT_WINDOW,
    valid_only_baseline: bool = True,
) -> list[RegressionFlag]:
    """Every regression of every performance run in `summary`, oldest first.

    Runs need a `started_at` to be ordered; runs without one are not compared. With `valid_only_baseline`, INVALID
    runs are still judged but never serve as a baseline (an invalid run's figures are not a promise).
    """
    if threshold_pct < 0:
        raise ValueError(f"regression threshold must be >= 0 percent, got {threshold_pct}")
    if window < 1:
        raise ValueError(f"regression window must be >= 1 run, got {window}")
    runs = performance_runs(summary)
    if runs.empty:
        return []
    started = pd.to_datetime(runs["started_at"], errors="coerce", utc=True)
    runs = runs[started.notna()]
    flags: list[RegressionFlag] = []
    history: dict[tuple, list[tuple[str, dict[str, float | None]]]] = {}
    needed = [c for c in _ROW_COLUMNS if c in runs.columns]  # row dicts of these only: ~5x cheaper per run
    for key, (_, row) in zip(group_keys(runs), _iterrows(runs[needed])):
        values = {name: read(row) for name, (read, _, _) in METRICS.items()}
        previous = history.setdefault(key, [])
        earlier = previous[-window:]
        for name, (_, direction, _) in METRICS.items():
            value = values[name]
            base_values = [(rid, v[name]) for rid, v in earlier if v[name] is not None]
            if value is None or not base_values:
                continue
            baseline = float(statistics.median(v for _, v in base_values))
            if baseline <= 0:
                continue
            change = (value - baseline) / baseline * 100.0
            if -direction * change > threshold_pct:
                flags.append(RegressionFlag(
                    run_id=str(row["run_id"]), node=str(row.get("node")), scenario=scenario_kind(row),
                    benchmark=str(row.get("benchmark")), backend=str(row.get("backend")), metric=name,
                    value=float(value), baseline=baseline, change_pct=change, threshold_pct=threshold_pct,
                    baseline_run_ids=tuple(rid for rid, _ in base_values),
                    started_at=None if pd.isna(row.get("started_at")) else str(row.get("started_at")),
                ))
        if not valid_only_baseline or str(row.get("result_validity") or "VALID").upper() == "VALID":
            previous.append((str(row["run_id"]), values))
    return flags


def latest_run_ids(summary: pd.DataFrame) -> set[str]:
    """The newest performance run of each group: the runs whose flags describe the current state."""
    runs = performance_runs(summary)
    return set() if runs.empty else {str(r) for r in latest_per_group(runs)["run_id"]}


def current_regressions(summary: pd.DataFrame, threshold_pct: float = DEFAULT_THRESHOLD_PCT,
                        *, window: int = DEFAULT_WINDOW) -> list[RegressionFlag]:
    """Flags of the latest run of each group only (what a report or an alert should shout about)."""
    latest = latest_run_ids(summary)
    return [f for f in detect_regressions(summary, threshold_pct, window=window) if f.run_id in latest]


def flags_by_run(flags: list[RegressionFlag]) -> dict[str, list[str]]:
    """run_id -> short descriptions, for a table column."""
    out: dict[str, list[str]] = {}
    for flag in flags:
        short = {"tokens_per_second": "tokens/s", "ttft_p99": "p99 TTFT", "tpot_p99": "p99 TPOT"}[flag.metric]
        out.setdefault(flag.run_id, []).append(f"{short} {flag.change_pct:+.1f}%")
    return out
