"""The Endpoints bundle from recorded full-size points, judged by the real checker (endpoints-submission-cli)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlperf_assets.config.endpoints_disclosure import EndpointsPower, EndpointsSystem
from mlperf_assets.endpoints.bundle import BundleOptions, build_bundle, check_bundle
from mlperf_assets.endpoints.results import read_point
from mlperf_assets.errors import UserError
from tests.support.endpoints_points import CURVE, DATASET, full_curve, result_summary, steady_block

SYSTEM = EndpointsSystem(name="gpu-node-1 1xH200", shortened_name="1xH200")
POWER = EndpointsPower.model_validate({
    "cpu": {"model": "Intel Xeon Platinum 8480+", "count_per_node": 2,
            "tdp": {"value_w": 350, "source_type": "vendor_spec", "source": "https://ark.intel.com/"}},
    "accelerator": {"model": "NVIDIA H200", "count_per_node": 1,
                    "tdp": {"value_w": 700, "source_type": "vendor_spec", "source": "https://www.nvidia.com/h200"}},
})


def options(division: str = "RDI", **kw) -> BundleOptions:
    return BundleOptions(org="acme", submission="sub1", division=division, max_supported_concurrency=256, **kw)


def bundle(tmp_path: Path, folders: list[Path], division: str = "RDI", **kw):
    points = [read_point(f) for f in folders]
    return build_bundle(points, tmp_path / "out", system=SYSTEM, power=POWER, options=options(division, **kw))


def cli_check(root: Path) -> tuple[int, dict]:
    """The real command line, as a submitter runs it."""
    exe = Path(sys.executable).parent / "endpoints-submission-cli"
    proc = subprocess.run([str(exe), "check-submission", str(root), "--json"], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("division", ["RDI", "Standardized"])
def test_full_size_bundle_passes_the_checker(tmp_path: Path, division: str) -> None:
    b = bundle(tmp_path, full_curve(tmp_path / "runs"), division)
    rc, report = cli_check(b.root)
    assert rc == 0 and report["errors"] == [], [e["message"] for e in report["errors"]]
    # only the steady-state basis warns (these points carry no detector verdict)
    assert {w["rule"] for w in report["warnings"]} <= {"steady-state-basis"}
    model = b.root / "results" / "gpu-node-1_1xH200" / "llama3_1-8b"
    assert sorted(p.name for p in model.iterdir()) == sorted(
        f"r{c if c is not None else DATASET}" for c in CURVE)
    assert (b.root / "results" / "gpu-node-1_1xH200" / "system_power.json").is_file()
    # accuracy files only at the five accuracy points
    assert sorted(p.parent.name for p in model.glob("*/accuracy_results.json")) == sorted(
        ["r1", "r4", "r16", "r256", f"r{DATASET}"])
    point = yaml.safe_load((model / "r64" / "point.yaml").read_text())
    assert point["runtime_settings"]["runtime"]["scheduler_rng_seed"] == 10487924139932647040
    assert point["model_name"] == "llama3_1-8b" and point["dataset"] == "cnn_dailymail"
    desc = json.loads((model / "r256" / "system_desc.json").read_text())
    assert desc["tps_utilization"] == pytest.approx(6155 / 6463, abs=0.01)
    assert desc["node_types"][0]["accelerator_info"][0]["accelerator_model_name"] == "NVIDIA H200"
    assert "--trust-request-chat-template" in (b.root / "src" / "vllm" / "README.md").read_text()
    # our wrapper reads the same verdict
    verdict = check_bundle(b.root)
    assert verdict.passed and verdict.exit_code == 0


def test_steady_state_blocks_clear_the_warning(tmp_path: Path) -> None:
    overrides = {}
    for c in CURVE:
        label = "offline" if c is None else f"c{c}"
        summary = result_summary(256 if c is None else c, offline=c is None, passes=4)
        overrides[label] = {"summary": summary, "steady": steady_block(summary)}
    b = bundle(tmp_path, full_curve(tmp_path / "runs", **overrides))
    verdict = check_bundle(b.root)
    assert verdict.passed and not [w for w in verdict.warnings if w["rule"] == "steady-state-basis"]
    point = yaml.safe_load((b.points[64] / "point.yaml").read_text())
    assert point["steady_state"]["status"] == "windowable"


def test_shortened_echo_curve_fails_only_what_a_short_run_must(tmp_path: Path) -> None:
    """A smoke curve (a few hundred queries per point, an echo server's accuracy) fails min-query-count and the
    accuracy gate, warns about duration, and nothing else."""
    echo = {"rouge1": 12.1, "rouge2": 3.2, "rougeL": 9.9, "rougeLsum": 11.0, "gen_len": 180000}
    overrides = {}
    for c in CURVE:
        label = "offline" if c is None else f"c{c}"
        summary = result_summary(256 if c is None else c, offline=c is None, passes=1, completed=None)
        scale = 400 / summary["n_samples_issued"]
        for key in ("n_samples_issued", "n_samples_completed"):
            summary[key] = 400
        summary["duration_ns"] = int(summary["duration_ns"] * scale)
        summary["output_sequence_lengths"]["total"] = int(summary["output_sequence_lengths"]["total"] * scale)
        overrides[label] = {"summary": summary, "scores": echo}
    b = bundle(tmp_path, full_curve(tmp_path / "runs", **overrides))
    verdict = check_bundle(b.root)
    assert {e["rule"] for e in verdict.errors} == {"min-query-count", "accuracy-gate"}
    assert "point-duration" in {w["rule"] for w in verdict.warnings}
    assert verdict.exit_code == 1
    assert all(e["fix"] or e["message"] for e in verdict.errors)


def test_written_atomically_and_never_half(tmp_path: Path) -> None:
    folders = full_curve(tmp_path / "runs")
    (folders[-1] / "report" / "config.yaml").unlink()
    (folders[-1] / "client.yaml").unlink()
    with pytest.raises(UserError, match=r"config.yaml"):
        bundle(tmp_path, folders)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_two_runs_of_one_point_refused(tmp_path: Path) -> None:
    folders = full_curve(tmp_path / "runs")
    points = [read_point(f) for f in folders] + [read_point(folders[2])]
    with pytest.raises(UserError, match=r"a second point at r16"):
        build_bundle(points, tmp_path / "out", system=SYSTEM, power=POWER, options=options())


def test_standardized_needs_power(tmp_path: Path) -> None:
    points = [read_point(f) for f in full_curve(tmp_path / "runs")]
    with pytest.raises(UserError, match=r"Standardized needs the endpoints power"):
        build_bundle(points, tmp_path / "out", system=SYSTEM, power=None, options=options("Standardized"))
