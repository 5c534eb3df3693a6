"""The ten defects of findings/endpoints.md §1.8, each put in through our writer's inputs (or a mutation of the
bundle it wrote), each caught by the real checker under the rule that names it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import yaml

from mlperf_assets.endpoints.bundle import build_bundle, check_bundle
from mlperf_assets.endpoints.results import read_point
from tests.endpoints.test_bundle import POWER, SYSTEM, options
from tests.support.endpoints_points import DATASET, full_curve, result_summary


def _edit_yaml(path: Path, change: Callable[[dict], None]) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _short_c64() -> dict:
    summary = result_summary(64)
    summary["n_samples_issued"] = summary["n_samples_completed"] = 5000
    return {"c64": {"summary": summary}}


# name -> (overrides of full_curve, folders filter, options, bundle mutation, expected rule)
DEFECTS = {
    "model name llama3.1-8b": ({}, None, {}, lambda b: _edit_yaml(b.points[4] / "point.yaml",
                                                                   lambda d: d.update(model_name="llama3.1-8b")),
                               "model-name-valid"),
    "a point completes 5,000 queries": (_short_c64(), None, {}, None, "min-query-count"),
    "no Offline point": ({}, lambda fs: [f for f in fs if "offline" not in str(f)], {}, None,
                         "offline-point-present"),
    "ROUGE-1 30.0 at an accuracy point": ({"c16": {"scores": {"rouge1": 30.0, "rouge2": 15.9, "rougeL": 24.5,
                                                              "rougeLsum": 35.9, "gen_len": 8167622}}},
                                          None, {}, None, "accuracy-gate"),
    "config.yaml missing": ({}, None, {}, lambda b: (b.points[32] / "config.yaml").unlink(), "config-file-present"),
    "load pattern poisson": ({}, None, {}, lambda b: _edit_yaml(
        b.points[128] / "point.yaml", lambda d: d["runtime_settings"].update(load_pattern="poisson")), "load-pattern"),
    "seeds 42 with seed set A": ({}, None, {"seeds": {"scheduler_rng_seed": 42, "sample_index_rng_seed": 42,
                                                      "model_seed": 42}, "target_cohort": "2026-10-C1"},
                                 None, "seed-runtime-match"),
    "no TPOT P90": ({}, None, {}, lambda b: _edit_json(
        b.points[64] / "result_summary.json", lambda d: d["tpot"]["percentiles"].pop("90.0")),
        "metric-consistency-tpot-p90"),
    "accuracy at a free point": ({}, None, {}, lambda b: (b.points[32] / "accuracy_results.json").write_text(
        (b.points[16] / "accuracy_results.json").read_text()), "accuracy-coverage"),
    "six points": ({}, lambda fs: [f for f in fs if not any(f"/c{c}/" in str(f) for c in (32, 64))], {}, None,
                   "point-count"),
}


@pytest.mark.parametrize("name", list(DEFECTS))
def test_defect_triggers_its_rule(tmp_path: Path, name: str) -> None:
    overrides, pick, extra, mutate, rule = DEFECTS[name]
    folders = full_curve(tmp_path / "runs", **overrides)
    if pick is not None:
        folders = pick(folders)
    b = build_bundle([read_point(f) for f in folders], tmp_path / "out", system=SYSTEM, power=POWER,
                     options=options(**extra))
    if mutate is not None:
        mutate(b)
    verdict = check_bundle(b.root)
    assert rule in {e["rule"] for e in verdict.errors}, verdict.lines(8)
    assert verdict.exit_code == 1


def test_unmutated_baseline_is_clean(tmp_path: Path) -> None:
    """The defects above are the only difference: the same inputs without one pass."""
    b = build_bundle([read_point(f) for f in full_curve(tmp_path / "runs")], tmp_path / "out", system=SYSTEM,
                     power=POWER, options=options())
    assert check_bundle(b.root).passed
    assert DATASET in b.points
