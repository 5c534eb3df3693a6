"""The endpoints_bundle asset in a real Dagster instance: the bundle, chart metadata, and the blocking checker check."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlperf_assets.assets.endpoints_bundle import (
    ENDPOINTS_CHECKER_CHECK,
    bundle_dir,
    endpoints_bundle,
    split_findings,
)
from mlperf_assets.config import load_config
from resources.mlperf_config import MlperfConfigResource
from resources.store import ResultsStore
from tests.endpoints.test_bundle_cli import CONFIG
from tests.support.endpoints_points import full_curve


def _materialize(tmp_path: Path, config_text: str, **curve) -> dg.ExecuteInProcessResult:
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(config_text)
    config = load_config(cfg_path)
    store = ResultsStore(path=str(config.storage.duckdb_path))
    for folder in full_curve(tmp_path / "artifacts" / "endpoints", node="local", **curve):
        store.ingest_endpoint_point(folder)
    with dg.instance_for_test() as instance:
        return dg.materialize([endpoints_bundle], instance=instance, raise_on_error=False,
                              resources={"mlperf_config": MlperfConfigResource.for_config(config), "store": store})


def test_bundle_asset_and_blocking_check(tmp_path: Path) -> None:
    result = _materialize(tmp_path, CONFIG.format(root=tmp_path))
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert Path(meta["bundle"].value).is_dir() and meta["official"].value is True
    assert "data:image/png;base64," in meta["charts"].value
    assert meta["provisioned_power_kw"].value == 2.1  # (2 x 350 W + 700 W) x 1.5 air overhead
    checks = result.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == [ENDPOINTS_CHECKER_CHECK] and checks[0].passed
    assert bundle_dir(load_config(tmp_path / "config.yaml")).name == "endpoints_bundle"


def test_check_fails_on_a_defect(tmp_path: Path) -> None:
    overrides = {"c16": {"scores": {"rouge1": 30.0, "rouge2": 15.9, "rougeL": 24.5, "rougeLsum": 35.9,
                                    "gen_len": 8167622}}}
    result = _materialize(tmp_path, CONFIG.format(root=tmp_path), **overrides)
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and "accuracy-gate" in check.metadata["unexpected_errors"].value
    rows = ResultsStore(path=str(tmp_path / "db" / "results.duckdb")).query(
        "SELECT rule, fix FROM endpoint_checks WHERE severity = 'error'")
    assert "accuracy-gate" in set(rows["rule"])


def test_shortened_curve_expects_only_its_own_failures() -> None:
    errors = [{"rule": "min-query-count"}, {"rule": "accuracy-gate"}, {"rule": "config-file-present"}]
    expected, unexpected = split_findings(errors, shortened=True)
    assert [e["rule"] for e in expected] == ["min-query-count", "accuracy-gate"]
    assert [e["rule"] for e in unexpected] == ["config-file-present"]
    assert split_findings(errors, shortened=False)[0] == []
