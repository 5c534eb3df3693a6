"""`mlperf-dagster verify-compliance`: the harness's verify-compliance from the orchestrator's command line, on a
real TEST06 run (real LoadGen, the official audit.config and MLCommons' run_verification.py from ../shared): the
same output and exit codes as `python -m mlperf_assets.harness verify-compliance`, one line for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets.harness.dataset import prepare_dataset

PROJECT = Path(__file__).resolve().parents[2]
MLCOMMONS = PROJECT.parent / "shared" / "reference" / "mlcommons_inference"
AUDIT_CONFIG = MLCOMMONS / "compliance" / "TEST06" / "audit.config"
pytestmark = pytest.mark.skipif(not AUDIT_CONFIG.is_file(), reason=f"the pinned MLCommons checkout is absent "
                                                                   f"({MLCOMMONS})")


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=PROJECT, timeout=300)


@pytest.fixture(scope="module")
def test06_run(stories_dir: Path, tmp_path_factory) -> Path:
    """A Server TEST06 run of the replay backend (byte tokenizer: EOS 257)."""
    work = tmp_path_factory.mktemp("t06")
    dataset = prepare_dataset("stories", stories_dir, work / "stories.json", tokenizer="byte")
    out = work / "run" / "compliance" / "TEST06"
    proc = _run("mlperf_assets.harness", "run", "--scenario", "Server", "--mode", "performance", "--backend",
                "replay", "--dataset", str(dataset), "--output-dir", str(out), "--compliance", "TEST06",
                "--audit-config", str(AUDIT_CONFIG), "--target-qps", "200")
    assert proc.returncode == 0, proc.stderr
    return out


def _both(folder: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    ours = _run("mlperf_assets.cli", "verify-compliance", str(folder), "--out", str(tmp_path / "cli"), *extra)
    harness = _run("mlperf_assets.harness", "verify-compliance", str(folder), "--out", str(tmp_path / "h"), *extra)
    return ours, harness


@pytest.mark.parametrize("checkout", [False, True])
def test_same_output_and_files_as_the_harness_subcommand(test06_run: Path, tmp_path: Path, checkout: bool):
    extra = ("--mlcommons-inference", str(MLCOMMONS)) if checkout else ()
    ours, harness = _both(test06_run, tmp_path, *extra)
    assert (ours.returncode, harness.returncode) == (0, 0), ours.stderr + harness.stderr
    assert ours.stdout.replace(str(tmp_path / "cli"), "OUT") == harness.stdout.replace(str(tmp_path / "h"), "OUT")
    assert "TEST06 verification complete" in ours.stdout
    assert (tmp_path / "cli" / "verify_accuracy.txt").read_text() == (tmp_path / "h" / "verify_accuracy.txt").read_text()
    assert (tmp_path / "cli" / "accuracy" / "mlperf_log_accuracy.json").is_file()


def test_a_failing_verification_exits_1(test06_run: Path, tmp_path: Path):
    folder = tmp_path / "broken"
    shutil.copytree(test06_run, folder)
    log = folder / "mlperf_log_accuracy.json"
    records = json.loads(log.read_text())
    data = np.frombuffer(bytes.fromhex(records[0]["data"]), dtype=np.int32)
    records[0]["data"] = np.concatenate([data, [257, 257]]).astype(np.int32).tobytes().hex().upper()
    records[0]["token_count"] = len(data) + 2
    log.write_text(json.dumps(records))
    ours, harness = _both(folder, tmp_path, "--mlcommons-inference", str(MLCOMMONS))
    assert (ours.returncode, harness.returncode) == (1, 1), ours.stderr
    assert "EOS check pass: False" in ours.stdout and "TEST06 verification failed" in ours.stdout
    assert ours.stdout.endswith(": FAIL\n")


@pytest.mark.parametrize(("damage", "message"), [
    ({"compliance": "TEST06"}, "compliance: 'TEST06' is not a compliance record (an object)"),
    ({"eos_token_id": "abc"}, "compliance.eos_token_id: 'abc' is not a token id (an integer >= 0)"),
    ({"scenario": ["Server"]}, "scenario ['Server'] unknown"),
])
def test_damaged_manifest_is_one_line_exit_2(test06_run: Path, tmp_path: Path, damage: dict, message: str):
    folder = tmp_path / "damaged"
    shutil.copytree(test06_run, folder)
    manifest = json.loads((folder / "run_manifest.json").read_text())
    if "eos_token_id" in damage:
        manifest["compliance"]["eos_token_id"] = damage["eos_token_id"]
    else:
        manifest.update(damage)
    (folder / "run_manifest.json").write_text(json.dumps(manifest))
    proc = _run("mlperf_assets.cli", "verify-compliance", str(folder), "--out", str(tmp_path / "v"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("mlperf-dagster verify-compliance: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "v").exists()


def test_unusable_out_is_one_line_exit_2(test06_run: Path, tmp_path: Path):
    (tmp_path / "a-file").write_text("x")
    for out, why in (("/proc/mlperf-verify", "cannot write the verification there"),
                     (str(tmp_path / "a-file"), "is a file, not a folder")):  # the output-folder guard's line
        proc = _run("mlperf_assets.cli", "verify-compliance", str(test06_run), "--out", out)
        assert proc.returncode == 2 and f"--out {out}: {why}" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


def test_out_may_not_be_in_or_over_the_run_folder_nor_a_kept_folder(test06_run: Path, tmp_path: Path):
    """The shared output-folder guard (harness/outputs.py): an --out that is, lies inside or holds the run folder it
    reads, or holds the current directory (the project here), is one line, exit 2, from both commands, and nothing
    is written anywhere."""
    run = test06_run.parent.parent  # <run>/compliance/TEST06
    before = _snapshot(run)
    cases = {
        str(test06_run): f"--out {test06_run}: is the compliance run's folder {test06_run}, which it is built from",
        str(test06_run / "v"): f"--out {test06_run / 'v'}: is inside the compliance run's folder {test06_run}",
        str(run): f"--out {run}: contains the compliance run's folder {test06_run}",
        str(PROJECT): f"--out {PROJECT}: is the current directory {PROJECT}, which writing it would destroy",
    }
    for out, message in cases.items():
        for module in ("mlperf_assets.cli", "mlperf_assets.harness"):
            proc = _run(module, "verify-compliance", str(test06_run), "--out", out)
            assert proc.returncode == 2, (module, out, proc.stdout, proc.stderr)
            assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _snapshot(run) == before
    assert not (PROJECT / "verify_accuracy.txt").exists()
    # the guard lets a folder of its own through
    proc = _run("mlperf_assets.cli", "verify-compliance", str(test06_run), "--out", str(tmp_path / "own"))
    assert proc.returncode == 0 and (tmp_path / "own" / "verify_accuracy.txt").is_file(), proc.stderr
