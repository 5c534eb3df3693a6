"""`mlperf-dagster endpoints package --out DIR` and `endpoints check DIR`: real config, real store, real checker."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlperf_assets.cli import main
from tests.support.endpoints_points import full_curve

CONFIG = """
storage:
  artifact_root: {root}/artifacts
  duckdb_path: {root}/db/results.duckdb
  report_dir: {root}/report
nodes:
  - name: local
    runner: local
endpoints:
  server:
    launch: external
    url: http://gpu-node-1:8000
  highest_concurrency: 256
  division: Standardized
  org: acme
  system:
    name: local 1xH200
    shortened_name: 1xH200
  power:
    cpu: {{model: Intel Xeon 8480+, count_per_node: 2,
          tdp: {{value_w: 350, source_type: vendor_spec, source: "https://ark.intel.com/"}}}}
    accelerator: {{model: NVIDIA H200, count_per_node: 1,
                  tdp: {{value_w: 700, source_type: vendor_spec, source: "https://www.nvidia.com/h200"}}}}
"""


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    from resources.store import ResultsStore

    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG.format(root=tmp_path))
    store = ResultsStore(path=str(tmp_path / "db" / "results.duckdb"))
    for folder in full_curve(tmp_path / "artifacts" / "endpoints", node="local"):
        store.ingest_endpoint_point(folder)
    return tmp_path, cfg


def test_package_then_check(setup, capsys) -> None:
    from resources.store import ResultsStore

    root, cfg = setup
    out = root / "bundle"
    assert main(["endpoints", "package", "--config", str(cfg), "--out", str(out), "--submission", "s1"]) == 0
    text = capsys.readouterr().out
    assert "checker: PASSED: 0 error(s)" in text and "r13368" in text
    assert (out / "acme" / "s1" / "results" / "local_1xH200" / "system_power.json").is_file()
    assert (root / "report" / "endpoints" / "endpoints_pareto.png").is_file()
    assert (root / "report" / "endpoints" / "endpoints.html").is_file()
    checks = ResultsStore(path=str(root / "db" / "results.duckdb")).query("SELECT severity FROM endpoint_checks")
    assert len(checks) > 0 and "error" not in set(checks["severity"])
    assert main(["endpoints", "check", str(out)]) == 0  # the --out folder is found as well as <org>/<submission>
    assert "PASSED" in capsys.readouterr().out
    # packaging again replaces the bundle it wrote
    assert main(["endpoints", "package", "--config", str(cfg), "--out", str(out), "--submission", "s1"]) == 0


def test_check_reports_errors_with_fix(setup, capsys) -> None:
    root, cfg = setup
    out = root / "bundle"
    assert main(["endpoints", "package", "--config", str(cfg), "--out", str(out), "--no-check"]) == 0
    (out / "acme" / "submission" / "results" / "local_1xH200" / "llama3_1-8b" / "r64" / "config.yaml").unlink()
    assert main(["endpoints", "check", str(out / "acme" / "submission")]) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text and "ERROR config-file-present" in text and "fix:" in text


@pytest.mark.parametrize("where", ["artifacts", "artifacts/endpoints/local", "busy"])
def test_out_never_destroys_inputs(setup, capsys, where: str) -> None:
    root, cfg = setup
    target = root / where
    if where == "busy":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["endpoints", "package", "--config", str(cfg), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_check_of_a_non_bundle(tmp_path: Path, capsys) -> None:
    assert main(["endpoints", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no Endpoints bundle here" in err and err.count("\n") == 1
