"""``mlperf-dagster submission --out``: the output folder is checked before anything is written (issue 24, G1 and
G7). On one real smoke run (local node, extractive baseline, real LoadGen, one Offline partition through Dagster),
every --out that would destroy what the tree is built from, or what must survive it, is refused with one line and
exit 2, and nothing is touched; an unusable --out, a damaged manifest and a run folder vanishing mid-build are one
line too, never a traceback. ``report --out`` makes the same check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.config import load_config
from support.submission_yaml import SUBMISSION_YAML



def config_text(stories: Path, artifact_root: str = "results/artifacts") -> str:
    return (
        f"storage: {{artifact_root: {artifact_root}, duckdb_path: results/mlperf.duckdb, report_dir: results/report}}\n"
        f"dataset: {{source: stories, path: '{stories}', max_samples: 20}}\n"
        "benchmark:\n"
        "  model: llama3.1-8b\n  checkpoint: null\n  backend: extractive\n"
        "  progress_interval_s: 0.2\n  log_interval_s: 0.5\n"
        "  scenarios:\n"
        "    Offline: {min_duration_ms: 13, min_query_count: 20, target_qps: 1000000}\n"
        "nodes: [{name: local, runner: local}]\n"
        + SUBMISSION_YAML
    )


@pytest.fixture(scope="module")
def smoke(stories_dir, tmp_path_factory):
    """One real Offline partition (performance + accuracy, ROUGE) in ``W/results``, config ``W/c.yaml``."""
    from mlperf_assets.commands.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("sub")
    path = folder / "c.yaml"
    path.write_text(config_text(stories_dir))
    config = load_config(path, use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False, report=False)
    assert all(p.success for p in outcome.partitions), outcome
    return config


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)


def _snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_line_refusal(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, proc.stderr
    assert line.startswith("mlperf-dagster submission: error: ")
    for word in words:
        assert word in line, line
    return line


def test_out_over_the_inputs_is_refused_and_nothing_is_touched(smoke):
    config = smoke
    work = config.source_path.parent
    run = next(config.storage.artifact_root.glob("local/Offline/*"))
    before = _snapshot(work)
    cases = {
        work / "results": "contains the artifact root",
        config.storage.artifact_root: "is the artifact root",
        config.storage.artifact_root / "local": "is inside the artifact root",
        run: "is inside the artifact root",
        run / "performance": "is inside the artifact root",
        work: "contains the artifact root",
    }
    for out, why in cases.items():
        proc = _cli("submission", "--config", str(config.source_path), "--no-check", "--out", str(out))
        _one_line_refusal(proc, f"--out {out}: {why}")
    proc = _cli("submission", "--config", "c.yaml", "--no-check", "--out", ".", cwd=work)
    _one_line_refusal(proc, "--out .:", "contains the artifact root")
    assert _snapshot(work) == before
    assert config.storage.duckdb_path.is_file() and (run / "performance" / "mlperf_log_detail.txt").is_file()


def test_out_holding_what_must_survive_is_refused(smoke, tmp_path):
    from mlperf_assets.errors import UserError
    from mlperf_assets.submission import build_tree

    config = smoke
    elsewhere = config.model_copy(deep=True)
    elsewhere.storage.artifact_root = config.storage.artifact_root  # the runs stay; the store and config move
    elsewhere.storage.duckdb_path = tmp_path / "db" / "mlperf.duckdb"
    elsewhere.source_path = tmp_path / "cfg" / "c.yaml"
    for out, why in ((tmp_path / "db", "contains the results store"), (tmp_path, "contains the results store"),
                     (tmp_path / "cfg", "contains the config file"), (Path.home(), "which writing it would destroy"),
                     (Path("/"), "contains")):
        with pytest.raises(UserError) as exc:
            build_tree(elsewhere, out)
        assert why in str(exc.value)
    assert not (tmp_path / "db").exists()


def test_a_foreign_folder_is_refused_an_earlier_tree_is_replaced(smoke, tmp_path):
    config = smoke
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    proc = _cli("submission", "--config", str(config.source_path), "--no-check", "--out", str(foreign))
    _one_line_refusal(proc, "is a folder with other content")
    assert (foreign / "notes.txt").read_text() == "precious"

    out = tmp_path / "tree"
    for _ in range(2):  # the second run replaces the first's tree (it carries the marker)
        proc = _cli("submission", "--config", str(config.source_path), "--no-check", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    assert (out / ".mlperf-dagster-output").is_file()
    assert (out / "closed" / "TestOrg" / "systems" / "test-local-cpu.json").is_file()

    (out / ".mlperf-dagster-output").unlink()  # a tree of an earlier version: <division>/<submitter>/systems only
    proc = _cli("submission", "--config", str(config.source_path), "--no-check", "--out", str(out))
    assert proc.returncode == 0, proc.stderr


def test_unusable_out_is_one_line(smoke, tmp_path):
    config = smoke
    afile = tmp_path / "notes.txt"
    afile.write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    for out, words in ((Path("/proc/mlperf-dagster-tree"), ("--out /proc/mlperf-dagster-tree:",)),
                       (afile, ("is a file, not a folder",)), (afile / "tree", ("is a file, not a folder",)),
                       (link, ("is a symbolic link",))):
        proc = _cli("submission", "--config", str(config.source_path), "--no-check", "--out", str(out))
        _one_line_refusal(proc, *words)
    assert afile.read_text() == "precious" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "notes.txt"]


def _copied_runs(config, tmp_path: Path):
    root = tmp_path / "artifacts"
    shutil.copytree(config.storage.artifact_root / "local", root / "local", ignore=shutil.ignore_patterns(".*"))
    copy = config.model_copy(deep=True)
    copy.storage.artifact_root = root
    copy.source_path = config.source_path
    return copy, next(root.glob("local/Offline/*"))


@pytest.mark.parametrize("damage", [{"host": 5}, {"backend": "vllm"}, {"gpus": ["H100"]},
                                    {"backend": {"name": "x", "versions": [1]}}, {"lg_model_name": 7}])
def test_a_damaged_manifest_is_named(smoke, tmp_path, damage):
    from mlperf_assets.errors import UserError
    from mlperf_assets.submission import build_tree

    config, run = _copied_runs(smoke, tmp_path)
    manifest = run / "performance" / "run_manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **damage}))
    with pytest.raises(UserError) as exc:
        build_tree(config, tmp_path / "tree")
    assert str(exc.value).startswith(f"{manifest}: {next(iter(damage))}")
    assert not (tmp_path / "tree").exists()


def test_a_run_folder_removed_mid_build_is_one_line(smoke, tmp_path, monkeypatch):
    from mlperf_assets.errors import UserError
    from mlperf_assets.submission import build_tree, tree

    config, run = _copied_runs(smoke, tmp_path)
    real_copy = shutil.copy2

    def vanishing_copy(src, dest, **kw):
        shutil.rmtree(run)  # the run folder goes away (a cleanup, another process) while its files are copied
        return real_copy(src, dest, **kw)

    monkeypatch.setattr(tree.shutil, "copy2", vanishing_copy)
    out = tmp_path / "tree"
    with pytest.raises(UserError) as exc:
        build_tree(config, out)
    assert str(exc.value).startswith(f"--out {out}: the tree was not written: {run}/performance/")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["artifacts"]


def test_report_out_holding_the_store_or_a_file_is_refused(smoke, tmp_path):
    """`report --out` writes its files into the folder and removes the chart PNGs it no longer draws: the same check
    (a non-replacing writer: an existing folder of its own is fine)."""
    config = smoke
    db = config.storage.duckdb_path
    before = _snapshot(db.parent)
    afile = tmp_path / "notes.txt"
    afile.write_text("precious")
    for out, words in ((db.parent, ("contains the results store",)), (afile, ("is a file, not a folder",))):
        proc = _cli("report", "--db", str(db), "--out", str(out))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and line.startswith(f"mlperf-dagster report: error: --out {out}: "), line
        assert all(w in line for w in words), line
    assert _snapshot(db.parent) == before and afile.read_text() == "precious"
    mine = tmp_path / "report"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    proc = _cli("report", "--db", str(db), "--out", str(mine))
    assert proc.returncode == 0, proc.stderr
    assert (mine / "report.md").is_file() and (mine / "keep.txt").read_text() == "mine"


def test_asset_refuses_to_replace_the_runs_of_an_artifact_root_named_submission(smoke, tmp_path):
    """`artifact_root: r/submission` (validate-config refuses it; here the config is built around that check):
    submission_package's folder <artifact_root>/../submission/<node> is the node's run folders, so it fails with
    one line and every run stays."""
    from mlperf_assets.assets.submission import build_submission_package
    from resources.mlperf_config import MlperfConfigResource
    from resources.store import ResultsStore

    config = smoke.model_copy(deep=True)
    config.storage.artifact_root = tmp_path / "r" / "submission"
    config.source_path = smoke.source_path
    shutil.copytree(smoke.storage.artifact_root / "local", config.storage.artifact_root / "local",
                    ignore=shutil.ignore_patterns(".*"))
    before = _snapshot(tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize([build_submission_package(config)], partition_key="local", instance=instance,
                                raise_on_error=False,
                                resources={"mlperf_config": MlperfConfigResource.for_config(config),
                                           "store": ResultsStore(path=str(config.storage.duckdb_path))})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    run_folders = config.storage.artifact_root / "local"
    assert failure.step_failure_data.user_failure_data.description == (
        f"submission tree {run_folders}: is inside the artifact root {config.storage.artifact_root}, which it is "
        "built from; choose a folder outside it")
    assert _snapshot(tmp_path) == before
