"""harness_version in run_manifest.json: the pyproject version + the git commit when run from a source checkout
(PYTHONPATH=checkout, not pip-installed), "+source" without git; never empty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.harness import manifest

PROJECT = Path(__file__).resolve().parents[2]


def _commit() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def test_from_the_checkout_it_is_the_pyproject_version_and_the_commit():
    commit = _commit()
    if commit is None:
        pytest.skip("the project is not a git checkout here")
    version = manifest.harness_version()
    assert version.startswith("0.") and f"+{commit}" in version
    assert version.endswith((commit, f"{commit}.dirty"))


def test_without_git_it_says_source(monkeypatch):
    monkeypatch.setattr(manifest.shutil, "which", lambda _name: None)
    assert manifest.harness_version().endswith("+source")

    def broken(*_a, **_k):
        raise OSError("no git")

    monkeypatch.setattr(manifest.shutil, "which", lambda _name: "/usr/bin/git")
    monkeypatch.setattr(manifest.subprocess, "run", broken)
    assert manifest.harness_version().endswith("+source")


def test_installed_elsewhere_it_is_the_distribution_version(monkeypatch, tmp_path):
    monkeypatch.setattr(manifest, "_pyproject_version", lambda _path: None)
    monkeypatch.setattr(manifest, "package_version", lambda _dist: "9.8.7")
    assert manifest.harness_version() == "9.8.7"
    monkeypatch.setattr(manifest, "package_version", lambda _dist: None)
    assert manifest.harness_version() == "unknown"


def test_a_run_with_pythonpath_at_the_checkout_records_the_commit(tmp_path, stories_dir):
    """The harness run from another directory with PYTHONPATH=checkout (how a node without the package installed
    runs it): the manifest names the commit."""
    from mlperf_assets.harness.dataset import prepare_dataset

    commit = _commit()
    if commit is None:
        pytest.skip("the project is not a git checkout here")
    ds = prepare_dataset("stories", stories_dir, tmp_path / "ds.json", max_samples=5)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    r = subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Offline", "--mode",
                        "accuracy", "--backend", "replay", "--dataset", str(ds), "--output-dir", str(out)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    version = json.loads((out / "run_manifest.json").read_text())["harness_version"]
    assert version and commit in version
