"""The light node install: a fresh venv with only `pip install 'mlperf-dagster[node]'` runs the harness end to end.

What a GPU node gets: the harness (LoadGen, numpy, NLTK's punkt model) and nothing of the orchestrator. The venv is
made here with `python -m venv` (no system site packages) and the project is installed from a copy of this checkout
with pip's ordinary dependency resolution, so the test fails as soon as the harness needs a package the `node` set
does not declare, or the `node` set pulls in Dagster, DuckDB, plotly, paramiko or pandas.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
# What the wheel is built from (pyproject's readme and [tool.setuptools.packages.find] include).
BUILD_INPUTS = ("pyproject.toml", "README.md", "mlperf_assets", "resources", "jobs")
ORCHESTRATOR_ONLY = ("dagster", "duckdb", "plotly", "paramiko", "pandas", "pydantic", "yaml", "matplotlib",
                     "kubernetes", "rouge_score_rs")

PROBE = """
import importlib, json, pkgutil, sys
absent = {}
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
        absent[name] = False
    except ModuleNotFoundError:
        absent[name] = True
import mlperf_assets.harness as harness
broken = {}
for module in pkgutil.walk_packages(harness.__path__, "mlperf_assets.harness."):
    if module.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(module.name)
    except Exception as exc:
        broken[module.name] = repr(exc)
leaked = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
print(json.dumps({"absent": absent, "broken": broken, "leaked": leaked, "file": harness.__file__}))
"""


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def node_venv(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("node-install")
    src = base / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, src / name)
    venv = base / "venv"
    made = run([sys.executable, "-m", "venv", venv], cwd=base, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    installed = run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     f"{src}[node]"], cwd=base, timeout=600)
    assert installed.returncode == 0, (
        f"pip install '.[node]' failed:\n{installed.stdout[-3000:]}\n{installed.stderr[-3000:]}")
    return venv


@pytest.mark.slow
def test_node_install_has_no_orchestrator_and_imports_the_whole_harness(node_venv: Path, tmp_path: Path) -> None:
    probe = run([node_venv / "bin" / "python", "-c", PROBE, ",".join(ORCHESTRATOR_ONLY)], cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert str(node_venv) in found["file"]  # the installed copy, not this checkout
    assert [name for name, absent in found["absent"].items() if not absent] == []
    assert found["broken"] == {}  # every harness module imports with the node set alone
    assert found["leaked"] == []

    # the orchestrator's command says what to install, in one line, without a traceback
    cli = run([node_venv / "bin" / "mlperf-dagster", "demo"], cwd=tmp_path)
    assert cli.returncode == 2
    assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1
    assert "pip install 'mlperf-dagster[orchestrator]'" in cli.stderr


@pytest.mark.slow
def test_node_install_runs_the_harness_end_to_end(node_venv: Path, tmp_path: Path, stories_dir: Path) -> None:
    python = node_venv / "bin" / "python"
    dataset = tmp_path / "stories.json"
    prepared = run([python, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "stories",
                    "--path", stories_dir, "--out", dataset], cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    assert len(json.loads(dataset.read_text())) == len(list(stories_dir.glob("*.story")))

    out = tmp_path / "offline"
    # Offline issues target_qps x min_duration samples in one query: enough that the run lasts its 300 ms
    ran = run([python, "-m", "mlperf_assets.harness", "run", "--scenario", "Offline", "--mode", "performance",
               "--backend", "extractive", "--dataset", dataset, "--output-dir", out, "--min-duration-ms", "300",
               "--target-qps", "300000"], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = (out / "mlperf_log_summary.txt").read_text()
    assert "Scenario : Offline" in summary and "Mode     : PerformanceOnly" in summary
    assert "Result is : VALID" in summary
    for name in ("mlperf_log_detail.txt", "user.conf", "progress.jsonl"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["backend"]["name"] == "extractive" and manifest["backend"]["kind"] == "baseline"
    assert manifest["scenario"] == "Offline" and manifest["mode"] == "performance"
