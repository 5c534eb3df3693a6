"""The Endpoints planner (mlperf_assets/endpoints/plan.py) against the checker's rules (endpoints-submission-cli 1.5.3.0).

The region bounds are asserted from the rules' own example (C_min 1, C_max 256: Low 2-7, Medium 8-41, High 42-256,
margin 257-282, findings 1.2); over a grid of (lowest, highest) concurrency every plan is checked with plain interval
arithmetic on the plan's own region table (independent of the planner's code path): a point in 1-32, in Low, in
Medium and in High, one at C_max, >= 8 points with the dedicated Offline, one accuracy point per band and none at a
free point. A grid cell the planner refuses must be one no curve can satisfy (an empty band, or too few integers).
"""

from __future__ import annotations

import math

import pytest

from mlperf_assets.config import ConfigError, load_config
from mlperf_assets.config.endpoints import EndpointsConfig
from mlperf_assets.endpoints.plan import (
    EndpointsPlanError,
    KneeStep,
    check_curve,
    highest_concurrency,
    plan_curve,
)

pytest.importorskip("submission_checker")

DATASET = 13368


def _cfg(**kw) -> EndpointsConfig:
    return EndpointsConfig(server={"launch": "echo"}, **kw)


def test_regions_are_the_rules_example():
    plan = plan_curve(_cfg(highest_concurrency=256, passes=1), DATASET)
    assert plan.regions["low_concurrency"] == (2, 7)
    assert plan.regions["med_concurrency"] == (8, 41)
    assert plan.regions["high_concurrency"] == (42, 256)
    assert plan.regions["margin"] == (257, 282)


GRID = [(lo, hi) for lo in (1, 2, 4, 8, 16, 31, 32) for hi in (33, 34, 40, 64, 100, 128, 256, 1000, 4096, 13368)]


@pytest.mark.parametrize("lowest,highest", GRID)
def test_auto_curve_covers_every_band(lowest, highest):
    cfg = _cfg(lowest_concurrency=lowest, highest_concurrency=highest, passes=1)
    try:
        plan = plan_curve(cfg, DATASET)
    except EndpointsPlanError as exc:
        c_min = lowest
        interval = math.log2(highest - c_min) / 3
        low_end, med_end = round(c_min + 2 ** interval), round(c_min + 2 ** (2 * interval))
        empty = low_end < c_min + 1 or med_end < low_end + 1 or highest < med_end + 1
        room = highest - lowest + 1 < 7  # seven distinct concurrencies cannot fit
        assert empty or room, f"refused a satisfiable curve ({lowest}, {highest}): {exc}"
        return
    conc = [p.concurrency for p in plan.points if p.concurrency is not None]
    bands = {name: plan.regions[name] for name in ("low_concurrency", "med_concurrency", "high_concurrency")}
    bands["ultra_low"] = (1, 32)
    in_band = {name: [c for c in conc if a <= c <= b] for name, (a, b) in bands.items()}
    assert all(in_band.values()), in_band
    assert max(conc) == highest and min(conc) == plan.c_min == lowest
    assert len(plan.points) >= 8 and plan.points[-1].concurrency is None
    acc = [p.concurrency for p in plan.points if p.accuracy and p.concurrency is not None]
    assert len(acc) == 4 and all(p.role != "free" for p in plan.points if p.accuracy)
    # one accuracy point inside each band, each a different point
    assignment = {p.role: p.concurrency for p in plan.points if p.accuracy and p.concurrency is not None}
    assert set(assignment) == {"mandatory_ultra_low", "mandatory_low", "mandatory_medium", "mandatory_high"}
    for role, band in (("mandatory_ultra_low", "ultra_low"), ("mandatory_low", "low_concurrency"),
                       ("mandatory_medium", "med_concurrency"), ("mandatory_high", "high_concurrency")):
        a, b = bands[band]
        assert a <= assignment[role] <= b, (role, assignment[role], bands[band])
    for p in plan.points:
        assert p.n_samples_to_issue % DATASET == 0


def test_elected_offline_needs_seven_points_and_elects_c_max():
    plan = plan_curve(_cfg(highest_concurrency=256, offline="elected", passes=1), DATASET)
    assert len(plan.points) == 7 and all(p.concurrency is not None for p in plan.points)
    top = plan.point("c256")
    assert top.offline == "elected" and top.accuracy


@pytest.mark.parametrize("points,highest,needle", [
    ([1, 4, 16, 256], None, "at least 8"),
    ([1, 2, 3, 4, 5, 6, 256], None, "no point in med_concurrency"),
    ([4, 8, 16, 32, 64, 128], 256, "one point exactly at C_max"),
    ([40, 50, 60, 70, 80, 90, 256], None, "no point in ultra_low_concurrency (1–32)"),
])
def test_bad_point_lists_are_refused_in_one_line(points, highest, needle):
    cfg = _cfg(points=points, highest_concurrency=highest, passes=1)
    with pytest.raises(EndpointsPlanError) as exc:
        plan_curve(cfg, DATASET)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_ultra_low_missing_is_named():
    with pytest.raises(EndpointsPlanError, match="ultra_low"):
        check_curve([40, 50, 60, 70, 80, 90, 256], 256, "dedicated")


def test_official_curve_needs_the_full_dataset_and_probe_rates():
    with pytest.raises(EndpointsPlanError, match="13,368"):
        plan_curve(_cfg(highest_concurrency=256), 20)
    with pytest.raises(EndpointsPlanError, match="no probe rate for c1"):
        plan_curve(_cfg(highest_concurrency=256), DATASET)


def test_queries_are_whole_passes_sized_to_outlast_the_minimum_duration():
    rates = {c: 2.0 * c for c in range(1, 257)} | {"offline": 900.0}
    plan = plan_curve(_cfg(highest_concurrency=256), DATASET, rates=rates)
    for p in plan.points:
        rate = rates["offline" if p.concurrency is None else p.concurrency]
        assert p.n_samples_to_issue == p.passes * DATASET
        assert p.n_samples_to_issue / rate >= p.min_duration_s  # lasts its minimum
        assert (p.passes - 1) * DATASET / rate < p.min_duration_s * 1.1 or p.passes == 1  # and not a pass more
        assert p.min_duration_s == (600 if p.concurrency is not None and p.concurrency <= 32 else 1200)


def test_seed_set_and_cohort_come_from_the_checker_registry():
    plan = plan_curve(_cfg(highest_concurrency=64, shortened=True, passes=1), 20)
    assert plan.seeds == {"scheduler_rng_seed": 10487924139932647040, "sample_index_rng_seed": 586478644936801402,
                          "model_seed": 9315206023656308754}
    assert not plan.official and "UNOFFICIAL" in plan.table()
    with pytest.raises(EndpointsPlanError, match="adoption window"):
        plan_curve(_cfg(highest_concurrency=64, shortened=True, target_cohort="2030-01-C0"), 20)
    with pytest.raises(EndpointsPlanError, match="not a published seed set"):
        plan_curve(_cfg(highest_concurrency=64, shortened=True, seed_set="Z"), 20)


def test_highest_concurrency_is_the_knee_at_98_percent_of_offline():
    peak, half = 5000.0, 40.0  # system tokens/s saturating with concurrency
    calls: list = []

    def probe(c):
        calls.append(c)
        tps = peak if c is None else peak * c / (c + half)
        return KneeStep(c, tps, tps / 100)

    c_max, steps = highest_concurrency(probe)
    target = 0.98 * peak
    assert probe(c_max).system_tps >= target
    assert peak * (c_max * 7 // 8) / (c_max * 7 // 8 + half) < target  # within the bisection's 1/8 tolerance
    assert calls[0] is None and len(steps) < 20


CONFIG = """
nodes: [{name: box, runner: local}]
endpoints:
  server: {launch: external, url: http://10.0.0.5:8000}
"""


@pytest.mark.parametrize("extra,needle", [
    ("  highest_concurrency: 32\n", "endpoints.highest_concurrency: must be above 32"),
    ("  points: [1, 4, 4, 64]\n", "endpoints.points: concurrency 4 is listed twice"),
    ("  lowest_concurrency: 40\n", "endpoints.lowest_concurrency: must be between 1 and 32"),
    ("  target_cohort: 2026-13\n", "endpoints.target_cohort: must be YYYY-MM-C0 or YYYY-MM-C1"),
    ("  min_duration_s: 5\n", "only with shortened: true"),
])
def test_config_errors_are_one_line_naming_the_field(tmp_path, extra, needle):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + extra)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert needle in text, text
    assert "Traceback" not in text


def test_external_server_needs_a_url(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("nodes: [{name: box, runner: local}]\nendpoints:\n  server: {launch: external}\n")
    with pytest.raises(ConfigError, match="url: required when launch is external"):
        load_config(path)


@pytest.mark.parametrize("extra,needle", [
    ("  node: gpu9\n", "endpoints.node: 'gpu9' is not a node of this config (box)"),
    ("  points: [1, 4, 16, 256]\n", "endpoints.points: 5 points with a dedicated Offline; the rules need at least 8"),
    ("  highest_concurrency: 64\n  seed_set: Q\n", "endpoints.seed_set: 'Q' is not a published seed set"),
])
def test_validate_config_refuses_a_curve_that_cannot_pass(tmp_path, extra, needle):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + extra)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert needle in str(exc.value)


def test_plan_with_probes_finds_c_max_then_sizes_each_point_from_its_own_probe():
    from mlperf_assets.endpoints.plan import needs_probes, plan_with_probes

    peak, half = 4000.0, 60.0
    probed: list = []

    def probe(c):
        probed.append(c)
        tps = peak if c is None else peak * c / (c + half)
        return KneeStep(c, tps, tps / 120)  # ~120 output tokens per sample

    cfg = _cfg()  # official, auto points, C_max open, no passes
    assert needs_probes(cfg)
    plan, steps = plan_with_probes(cfg, DATASET, probe)
    assert plan.official and probe(plan.c_max).system_tps >= 0.98 * peak
    planned = [p.concurrency for p in plan.points]
    assert set(planned) <= set(probed)  # every point's queries come from its own probe
    assert probed.count(None) == 1 and len(probed) == len(set(probed)) + 1  # nothing probed twice (but the check)
    for p in plan.points:
        rate = (peak if p.concurrency is None else peak * p.concurrency / (p.concurrency + half)) / 120
        assert p.n_samples_to_issue / rate >= p.min_duration_s
    assert not needs_probes(_cfg(highest_concurrency=64, shortened=True))
