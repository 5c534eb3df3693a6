"""Regression detection on synthetic histories: what crosses the threshold is flagged, what stays within is not."""

from __future__ import annotations

import pandas as pd
import pytest

from mlperf_assets.reporting.regression import current_regressions, detect_regressions, flags_by_run


def history(tps: list[float], *, ttft_ms: list[float] | None = None, tpot_ms: list[float] | None = None,
            node: str = "gpu-1", scenario: str = "Server", backend: str = "vllm",
            validity: list[str] | None = None) -> pd.DataFrame:
    """Nightly performance runs of one node/scenario/backend, plus their accuracy rows (which must be ignored)."""
    rows = []
    for i, value in enumerate(tps):
        start = pd.Timestamp("2026-11-01 02:00") + pd.Timedelta(days=i)
        common = dict(node=node, scenario=scenario, benchmark="llama3.1-8b", backend=backend, backend_kind="model",
                      started_at=start)
        rows.append(dict(
            common, run_id=f"{node}-{scenario}-{i}-performance", mode="performance",
            result_validity=(validity or ["VALID"] * len(tps))[i],
            tokens_per_second=value if scenario != "Server" else None,
            completed_tokens_per_second=value if scenario == "Server" else None,
            ttft_p99_ns=None if ttft_ms is None else ttft_ms[i] * 1e6,
            tpot_p99_ns=None if tpot_ms is None else tpot_ms[i] * 1e6,
        ))
        rows.append(dict(common, run_id=f"{node}-{scenario}-{i}-accuracy", mode="accuracy", rouge1=38.5))
    return pd.DataFrame(rows)


def test_throughput_drop_beyond_threshold_is_flagged() -> None:
    flags = detect_regressions(history([1000, 1010, 990, 1000, 850]), threshold_pct=10)
    assert [(f.run_id, f.metric) for f in flags] == [("gpu-1-Server-4-performance", "tokens_per_second")]
    flag = flags[0]
    assert flag.baseline == pytest.approx(1000.0)  # median of 1000, 1010, 990, 1000
    assert flag.change_pct == pytest.approx(-15.0)
    assert "fell 15.0%" in flag.message and "gpu-1" in flag.message


def test_throughput_drop_within_threshold_is_not_flagged() -> None:
    assert detect_regressions(history([1000, 1010, 990, 1000, 920]), threshold_pct=10) == []
    # the same drop crosses a tighter threshold
    assert len(detect_regressions(history([1000, 1010, 990, 1000, 920]), threshold_pct=5)) == 1


def test_improvements_are_not_flagged() -> None:
    assert detect_regressions(history([1000, 1500, 2000], ttft_ms=[900, 500, 300], tpot_ms=[80, 50, 40])) == []


def test_latency_rises_beyond_threshold_are_flagged() -> None:
    df = history([1000, 1000, 1000], ttft_ms=[400, 400, 460], tpot_ms=[50, 50, 54])
    flags = detect_regressions(df, threshold_pct=10)
    assert [(f.metric, round(f.change_pct, 3)) for f in flags] == [("ttft_p99", 15.0)]  # TPOT +8%: within
    assert flags[0].value == pytest.approx(460e6) and flags[0].baseline == pytest.approx(400e6)
    assert "p99 TTFT rose 15.0% (400.0 ms -> 460.0 ms)" in flags[0].message
    assert [f.metric for f in detect_regressions(df, threshold_pct=7.5)] == ["ttft_p99", "tpot_p99"]


def test_groups_are_compared_only_with_themselves() -> None:
    fast = history([5000, 5000, 5000], node="gpu-fast")
    slow = history([1000, 1000, 1000], node="gpu-slow")
    other_backend = history([100, 100, 100], node="gpu-fast", backend="extractive")
    offline = history([9000, 9000, 9000], node="gpu-fast", scenario="Offline")
    assert detect_regressions(pd.concat([fast, slow, other_backend, offline], ignore_index=True)) == []


def test_baseline_is_the_median_of_the_window() -> None:
    # one terrible old night outside the window of 3 must not matter; inside it, the median ignores it
    assert detect_regressions(history([100, 1000, 1000, 1000, 950]), window=3) == []
    flagged = [f.run_id for f in detect_regressions(history([1000, 100, 1000, 1000, 950]), window=3)]
    assert flagged == ["gpu-1-Server-1-performance"]  # the bad night itself, not the 950 after it


def test_invalid_runs_are_judged_but_never_a_baseline() -> None:
    df = history([1000, 2000, 1000], validity=["VALID", "INVALID", "VALID"])
    assert detect_regressions(df) == []  # the INVALID 2000 would have made the last night a 50% drop
    df = history([1000, 800], validity=["VALID", "INVALID"])
    assert [f.run_id for f in detect_regressions(df)] == ["gpu-1-Server-1-performance"]


def test_current_regressions_only_report_the_latest_run() -> None:
    df = history([1000, 700, 1000, 1000, 1000, 1000, 1000])  # night 1 regressed, recovered since
    assert [f.run_id for f in detect_regressions(df)] == ["gpu-1-Server-1-performance"]
    assert current_regressions(df) == []
    worse = history([1000, 1000, 600])
    assert flags_by_run(current_regressions(worse)) == {"gpu-1-Server-2-performance": ["tokens/s -40.0%"]}


def test_first_run_and_missing_figures_are_not_flagged() -> None:
    assert detect_regressions(history([1000])) == []
    df = history([1000, 1000])
    df.loc[df["run_id"] == "gpu-1-Server-1-performance", "completed_tokens_per_second"] = None
    assert detect_regressions(df) == []
    assert detect_regressions(pd.DataFrame()) == []


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        detect_regressions(history([1, 2]), threshold_pct=-1)
    with pytest.raises(ValueError, match="window"):
        detect_regressions(history([1, 2]), window=0)


# ------------------------------------------------------------------------ the regression sensor over a real store


def _nightly_store(db, mlperf_logs_dir, factors: list[float]):
    """One real Server run, then a night per factor under new ids, its tokens/s scaled by the factor."""
    from mlperf_assets import store

    run = mlperf_logs_dir / "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server" / "performance"
    store.ingest_path(db, run, node="gpu-1", backend="vllm", benchmark="llama3.1-8b")
    with store.open_for_write(db) as conn:
        for night, factor in enumerate(factors, start=1):
            conn.execute(f"""INSERT INTO runs SELECT * REPLACE (
                    'night-{night}' AS run_id, 'night-{night}' AS group_id, '/nights/{night}' AS source_path,
                    started_at + to_days({night}) AS started_at,
                    tokens_per_second * {factor} AS tokens_per_second,
                    completed_tokens_per_second * {factor} AS completed_tokens_per_second)
                FROM runs WHERE run_id NOT LIKE 'night-%'""")
    return db


def test_regression_sensor_judges_the_store_resource_it_is_given(tmp_path, mlperf_logs_dir, monkeypatch) -> None:
    import dagster as dg

    from jobs.sensors import WEBHOOK_ENV, build_regression_alert_sensor
    from resources.store import ResultsStore

    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    steady = _nightly_store(tmp_path / "steady.duckdb", mlperf_logs_dir, [1.0, 1.01, 0.99, 1.0])
    slower = _nightly_store(tmp_path / "slower.duckdb", mlperf_logs_dir, [1.0, 1.01, 0.99, 0.7])
    sensor = build_regression_alert_sensor(threshold_pct=10)
    assert sensor.required_resource_keys == {"store"}

    def tick(db, cursor=None):
        resources = {"store": ResultsStore(path=str(db))}
        return sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, resources=resources))

    assert tick(steady).skip_message == "no new regression"
    flagged = tick(slower)
    assert flagged.skip_message == "1 regression(s) flagged; alert not-configured"
    assert tick(slower, flagged.cursor).skip_message == "no new regression"  # judged once


def test_regression_sensor_skips_a_store_it_cannot_read(tmp_path) -> None:
    import dagster as dg

    from jobs.sensors import build_regression_alert_sensor
    from resources.store import ResultsStore

    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"not a DuckDB file" * 512)
    context = dg.build_sensor_context(resources={"store": ResultsStore(path=str(broken))})
    result = build_regression_alert_sensor().evaluate_tick(context)
    assert result.skip_message.startswith("results store unavailable:"), result.skip_message
    assert result.cursor is None  # nothing judged, nothing skipped past
