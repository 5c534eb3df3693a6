"""Endpoints charts: the official step function (no interpolation), the Offline ceiling, region bands, energy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlperf_assets.endpoints.charts import (
    charts_html,
    concurrency_chart,
    endpoints_charts,
    energy_chart,
    pareto_chart,
    pareto_frontier,
    step_xy,
)
from mlperf_assets.endpoints.results import read_point
from tests.support.browser import RENDERED, Browser, assert_offline_and_clean, needs_chromium
from tests.support.endpoints_points import full_curve, run_manifest

REGIONS = {"low_concurrency": (2, 7), "med_concurrency": (8, 41), "high_concurrency": (42, 256)}


@pytest.fixture(scope="module")
def points(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("curve")
    overrides = {"c64": {"run_manifest": run_manifest("c64", "gpu-node-1", energy_j=2.0e6)}}
    return pd.DataFrame([read_point(f).row for f in full_curve(root, **overrides)])


def test_step_function_has_only_measured_values(points: pd.DataFrame) -> None:
    chart = pareto_chart(points)
    step = chart.figure_dict["data"][0]
    measured = points[points["role"] != "offline"]
    # every vertex's x and y are measured values: no interpolated point anywhere
    assert set(step["x"]) <= set(measured["tps_per_user"]) and set(step["y"]) <= set(measured["system_tps"])
    # segments are vertical or horizontal only
    for (x0, y0), (x1, y1) in zip(zip(step["x"], step["y"]), zip(step["x"][1:], step["y"][1:])):
        assert x0 == x1 or y0 == y1
    # the Offline point is a labelled ceiling, not a step
    offline = points[points["role"] == "offline"].iloc[0]
    assert offline["system_tps"] not in step["y"]
    line = chart.figure_dict["layout"]["shapes"][0]
    assert line["y0"] == line["y1"] == offline["system_tps"] and line["line"]["dash"] == "dot"
    assert "Offline ceiling" in chart.figure_dict["layout"]["annotations"][0]["text"]
    assert chart.png()[:8] == b"\x89PNG\r\n\x1a\n"


def test_frontier_drops_dominated_points() -> None:
    pts = [{"concurrency": 1, "tps_per_user": 150.0, "system_tps": 140.0},
           {"concurrency": 8, "tps_per_user": 120.0, "system_tps": 100.0},  # dominated by c=1
           {"concurrency": 64, "tps_per_user": 60.0, "system_tps": 4000.0}]
    frontier = pareto_frontier(pts)
    assert [p["concurrency"] for p in frontier] == [64, 1]
    assert step_xy(frontier) == ([60.0, 60.0, 150.0], [4000.0, 140.0, 140.0])


def test_secondary_charts_shade_the_plan_regions(points: pd.DataFrame) -> None:
    for metric in ("system_tps", "ttft_p90_ms", "tps_per_user"):
        chart = concurrency_chart(points, metric, regions=REGIONS)
        assert chart.available
        shapes = chart.figure_dict["layout"]["shapes"]
        assert [(s["x0"], s["x1"]) for s in shapes] == list(REGIONS.values())
        assert chart.figure_dict["data"][0]["x"] == [1, 4, 16, 32, 64, 128, 256]
        assert chart.png()[:4] == b"\x89PNG"


def test_energy_per_token(points: pd.DataFrame) -> None:
    chart = energy_chart(points, provisioned_kw=2.1)
    table = chart.table.set_index("point")
    c64 = points[points["concurrency"] == 64].iloc[0]
    assert table.loc["c=64", "measured_j_per_token"] == pytest.approx(2.0e6 / c64["output_tokens"])
    assert table.loc["c=64", "provisioned_j_per_token"] == pytest.approx(2100 / c64["system_tps"])
    assert pd.isna(table.loc["c=1", "measured_j_per_token"])  # no telemetry there: nothing invented
    missing = energy_chart(points.assign(energy_j_per_token=None))
    assert not missing.available and "no GPU telemetry" in missing.reason


@needs_chromium
def test_pareto_html_renders_offline(points: pd.DataFrame, tmp_path: Path) -> None:
    page = tmp_path / "endpoints.html"
    page.write_text(charts_html(endpoints_charts(points, regions=REGIONS, provisioned_kw=2.1)))
    browser = Browser()
    try:
        browser.open(page)
        assert browser.wait_for(RENDERED) == "5"
        assert browser.evaluate("document.querySelectorAll('#endpoints_pareto .scatterlayer .trace').length") == 2
        assert_offline_and_clean(browser, page)
    finally:
        browser.close()


def test_a_shortened_curve_is_labelled_unofficial(points: pd.DataFrame) -> None:
    assert "UNOFFICIAL" not in pareto_chart(points).title
    chart = pareto_chart(points.assign(official=False))
    assert chart.title.startswith("UNOFFICIAL") and "UNOFFICIAL" in chart.figure_dict["layout"]["title"]["text"]
