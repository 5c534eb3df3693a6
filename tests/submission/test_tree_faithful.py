"""The submission tree against a real closed llama3.1-8b result (mlcommons/inference_results_v5.1, RedHat
XE8640_4xH100_vLLM; NVIDIA and Intel v6.0): what produced each result under src/, the scenario README, the files
real trees carry (performance/run_1/mlperf_log_accuracy.json, mlperf.conf, TEST06/accuracy/ with only its log, a
blank line before hash=), and a tree that takes no foreign content (G5: symbolic links, another scenario's run kept
under this one). From one real smoke pipeline run (extractive baseline, real LoadGen, TEST06)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.config import load_config
from support.submission_yaml import SUBMISSION_YAML

MLC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mlcommons_inference"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (MLC / "loadgen" / "mlperf.conf").is_file(),
                                                   reason=f"the pinned MLCommons checkout is absent ({MLC})")]

CONFIG = """\
storage: {{artifact_root: out/artifacts, duckdb_path: out/mlperf.duckdb, report_dir: out/report}}
dataset: {{source: stories, path: '{stories}', max_samples: 20}}
benchmark:
  model: llama3.1-8b
  checkpoint: null
  backend: extractive
  progress_interval_s: 0.2
  log_interval_s: 0.5
  compliance: [TEST06]
  scenarios:
    Offline: {{min_duration_ms: 13, min_query_count: 20, target_qps: 1000000}}
    Server: {{target_qps: 250, min_duration_ms: 1000, min_query_count: 600}}
nodes: [{{name: local, runner: local}}]
mlcommons_inference: '{mlc}'
""" + SUBMISSION_YAML
RESULTS = Path("closed/TestOrg/results/test-local-cpu/llama3.1-8b")
SRC = Path("closed/TestOrg/src/llama3.1-8b/test-local-cpu")


@pytest.fixture(scope="module")
def smoke(stories_dir, tmp_path_factory):
    from mlperf_assets.commands.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("faithful")
    (folder / "config.yaml").write_text(CONFIG.format(stories=stories_dir, mlc=MLC))
    config = load_config(folder / "config.yaml", use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False, report=False)
    assert all(p.success for p in outcome.partitions), [p.error for p in outcome.partitions]
    return config


def _copy_config(config, tmp_path: Path):
    """The smoke config over a private copy of its run folders (a test may change them)."""
    root = tmp_path / "artifacts"
    shutil.copytree(config.storage.artifact_root / "local", root / "local", ignore=shutil.ignore_patterns(".*"),
                    symlinks=True)
    copy = config.model_copy(deep=True)
    copy.storage.artifact_root = root
    copy.source_path = config.source_path
    return copy, root


def _run(root: Path, scenario: str) -> Path:
    return next((root / "local" / scenario).iterdir())


def test_tree_holds_what_real_trees_hold_and_what_produced_it(smoke, tmp_path):
    from mlperf_assets.harness.cli import build_parser
    from mlperf_assets.submission import build_tree

    build_tree(smoke, tmp_path / "tree")
    for scenario in ("Offline", "Server"):
        run = _run(smoke.storage.artifact_root, scenario)
        scen = tmp_path / "tree" / RESULTS / scenario
        # as RedHat's XE8640_4xH100_vLLM: LoadGen's performance-mode accuracy log beside the perf logs
        assert sorted(p.name for p in (scen / "performance" / "run_1").iterdir()) == [
            "mlperf_log_accuracy.json", "mlperf_log_detail.txt", "mlperf_log_summary.txt"]
        assert (scen / "performance/run_1/mlperf_log_accuracy.json").read_bytes() == (
            run / "performance/mlperf_log_accuracy.json").read_bytes()
        # mlperf.conf beside user.conf (the checkout's copy), TEST06/accuracy/ with its log only
        assert (scen / "mlperf.conf").read_bytes() == (MLC / "loadgen/mlperf.conf").read_bytes()
        assert [p.name for p in (scen / "TEST06" / "accuracy").iterdir()] == ["mlperf_log_accuracy.json"]
        # a blank line before hash=, once (the run folder's accuracy.txt already had a hash line without it)
        text = (scen / "accuracy" / "accuracy.txt").read_text()
        assert "}\n\nhash=" in text and len(re.findall(r"^hash=", text, re.MULTILINE)) == 1

        # src/: the exact command of each run, the user.conf, the launch recipe, all from the run folders
        src = tmp_path / "tree" / SRC / scenario
        assert (src / "user.conf").read_text() == (run / "performance" / "user.conf").read_text()
        words = shlex.split((src / "commands.sh").read_text(), comments=True)  # as sh reads it
        starts = [i for i, w in enumerate(words) if w == "python"]
        commands = [words[i:j] for i, j in zip(starts, starts[1:] + [len(words)])]
        folders = [run / "performance", run / "accuracy", run / "compliance" / "TEST06"]
        assert len(commands) == 3
        for argv, folder in zip(commands, folders):
            assert argv[:3] == ["python", "-m", "mlperf_assets.harness"]
            ns = build_parser().parse_args(argv[3:])  # the harness's own parser takes it
            spec = json.loads((folder / "run_spec.json").read_text())
            assert (ns.scenario, ns.mode, ns.run_id, ns.output_dir) == (
                scenario, spec["mode"], spec["run_id"], str(folder))
        assert commands[2][commands[2].index("--compliance") + 1] == "TEST06"
        audit = commands[2][commands[2].index("--audit-config-text") + 1]
        assert audit == json.loads((folders[2] / "run_spec.json").read_text())["audit_config"]
        manifest = json.loads((run / "performance" / "run_manifest.json").read_text())
        launch = json.loads((src / "launch.json").read_text())
        assert launch["harness_version"] == manifest["harness_version"]
        assert launch["git_commit"] and manifest["harness_version"].split("+")[1].startswith(launch["git_commit"])
        assert launch["engine_args"] == manifest["backend"]["engine_args"] == {"sentences": 3, "max_tokens": 0}
        assert launch["backend"] == "extractive" and launch["loadgen_version"] == manifest["loadgen_version"]
        assert set(launch["run_specs"]) == {"performance", "accuracy", "TEST06"}

        # the README points to what the tree holds, with this run's node and scenario
        readme = (scen / "README.md").read_text()
        assert "run_spec.json" not in readme
        assert f"`mlperf-dagster run --node local --scenario {scenario}`" in readme
        assert f"`src/llama3.1-8b/test-local-cpu/{scenario}/commands.sh`" in readme
        assert "NOT A SUBMISSION RUN (smoke settings):" in readme  # 20 samples, 13 ms: smoke by its own logs
    system = json.loads((tmp_path / "tree" / "closed/TestOrg/systems/test-local-cpu.json").read_text())
    versions = {json.loads((_run(smoke.storage.artifact_root, sc) / "performance/run_manifest.json").read_text())[
        "harness_version"] for sc in ("Offline", "Server")}  # two, when a commit landed between the two runs
    assert system["other_software_stack"].split(", ")[0] in {f"mlperf-dagster {v}" for v in versions}
    src_readme = (tmp_path / "tree" / "closed/TestOrg/src/README.md").read_text()
    assert "llama3.1-8b/test-local-cpu/Offline/" in src_readme and manifest["harness_version"] in src_readme
    # the harness code itself, exactly as committed at the commit the runs recorded (from this checkout's history)
    commit = launch["git_commit"]
    project = Path(__file__).resolve().parents[2]
    if shutil.which("git") and (project / ".git").exists():
        code = tmp_path / "tree" / f"closed/TestOrg/src/mlperf-dagster-{commit}"
        assert f"- `mlperf-dagster-{commit}/`: the harness as committed at `{commit}`" in src_readme
        for rel in ("mlperf_assets/harness/run.py", "mlperf_assets/harness/args.py", "pyproject.toml"):
            committed = subprocess.run(["git", "-C", str(project), "show", f"{commit}:{rel}"], capture_output=True,
                                       check=True).stdout
            assert (code / rel).read_bytes() == committed
        assert not (code / "mlperf_assets" / "plan.py").exists()  # the harness only: what a node runs


def test_a_commit_outside_this_checkout_is_said_not_included(tmp_path):
    from mlperf_assets.submission.sources import src_readme, write_harness_source

    assert write_harness_source(tmp_path, "0123456789abcdef0123") is None
    assert write_harness_source(tmp_path, "b157afc", root=tmp_path) is None  # no git history there
    assert list(tmp_path.iterdir()) == []
    text = src_readme([], {"0123456": None})
    assert "- the harness at commit `0123456` is not included: it could not be taken from the git history" in text


def _full_settings(detail: Path, **values: int) -> None:
    text = detail.read_text()
    for key, value in values.items():
        text, n = re.subn(rf'("key": "{key}", "value": )\d+', rf"\g<1>{value}", text)
        assert n, key
    detail.write_text(text)


def test_readme_says_smoke_settings_only_when_the_run_logs_them(smoke, tmp_path):
    """A baseline run on full settings (its logs: 13,368 performance and accuracy samples, 600 s) is not
    submittable because of its backend, and its README says that, not "smoke settings"."""
    from mlperf_assets.submission import build_tree

    config, root = _copy_config(smoke, tmp_path)
    for scenario in ("Offline", "Server"):
        run = _run(root, scenario)
        _full_settings(run / "performance/mlperf_log_detail.txt", effective_performance_sample_count=13368,
                       effective_min_duration_ms=600000)
        _full_settings(run / "accuracy/mlperf_log_detail.txt", effective_accuracy_sample_count=13368,
                       qsl_reported_total_count=13368)
    tree = build_tree(config, tmp_path / "tree")
    for scenario in ("Offline", "Server"):
        readme = (tmp_path / "tree" / RESULTS / scenario / "README.md").read_text()
        assert "smoke settings" not in readme
        reasons = readme.split("NOT A SUBMISSION RUN:\n", 1)[1].splitlines()
        assert reasons == ["- the extractive backend is a baseline, not a model: its accuracy is not the model's"]
        assert tree.smoke_reasons[("local", scenario)] == [reasons[0][2:]]


def test_accuracy_txt_gets_the_blank_line_when_its_hash_already_matches():
    from mlperf_assets.submission.truncate import accuracy_txt_with_hash

    h = "ab" * 32
    assert accuracy_txt_with_hash(f"{{'rouge1': 1}}\nhash={h}\n", h) == f"{{'rouge1': 1}}\n\nhash={h}\n"
    assert accuracy_txt_with_hash(f"{{'rouge1': 1}}\n\nhash={'cd' * 32}\n", h) == f"{{'rouge1': 1}}\n\nhash={h}\n"


# --- G5: nothing foreign enters the tree


def test_a_symlinked_log_is_refused_in_one_line_and_nothing_is_written(smoke, tmp_path):
    from mlperf_assets.errors import UserError
    from mlperf_assets.submission import build_tree

    config, root = _copy_config(smoke, tmp_path)
    log = _run(root, "Offline") / "accuracy" / "mlperf_log_accuracy.json"
    log.unlink()
    log.symlink_to("/etc/passwd")
    with pytest.raises(UserError) as exc:
        build_tree(config, tmp_path / "tree")
    assert str(exc.value) == (f"{log}: is a symbolic link (to /etc/passwd); a submission takes only a run's own "
                              "files: put the file itself there, or remove the link")
    assert not (tmp_path / "tree").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tree")] == []


def test_a_folder_of_links_to_another_scenarios_logs_is_refused(smoke, tmp_path):
    from mlperf_assets.errors import UserError
    from mlperf_assets.submission import build_tree

    config, root = _copy_config(smoke, tmp_path)
    server, offline = _run(root, "Server"), _run(root, "Offline")
    fake = root / "local" / "Offline" / "zz-links"
    for sub in ("performance", "accuracy"):
        (fake / sub).mkdir(parents=True)
        for f in (server / sub).iterdir():
            (fake / sub / f.name).symlink_to(f)
    # its links are never followed to date it: the Offline run, started later than "unknown", is the one taken
    tree = build_tree(config, tmp_path / "tree")
    assert next(r.folder for r in tree.results if r.scenario == "Offline") == offline
    summary = (tmp_path / "tree" / RESULTS / "Offline/performance/run_1/mlperf_log_summary.txt").read_text()
    assert re.search(r"^Scenario : Offline$", summary, re.MULTILINE)
    shutil.rmtree(offline)
    with pytest.raises(UserError, match=r"zz-links/(accuracy|performance)/\S+: is a symbolic link \(to "):
        build_tree(config, tmp_path / "tree2")
    assert not (tmp_path / "tree2").exists()


def test_another_scenarios_run_under_this_one_is_passed_over_with_why(smoke, tmp_path):
    """A copy of the Server run kept under Offline with a name that sorts after every run id, and a link to it: the
    Offline result is still the Offline run, its logs say Offline, and the copy is named as skipped."""
    from mlperf_assets.submission import build_tree

    config, root = _copy_config(smoke, tmp_path)
    offline = _run(root, "Offline")
    shutil.copytree(_run(root, "Server"), root / "local/Offline/backup-server-run")
    (root / "local/Offline/zzz-link").symlink_to(root / "local/Offline/backup-server-run")
    tree = build_tree(config, tmp_path / "tree")
    assert {(r.scenario, r.run_id) for r in tree.results} == {("Offline", offline.name),
                                                              ("Server", _run(root, "Server").name)}
    mismatch = ("not a Offline run: performance: its LoadGen log says Server PerformanceOnly, not Offline "
                "PerformanceOnly")
    assert {s.run_id: s.reason for s in tree.skipped} == {"backup-server-run": mismatch}  # started after Offline's
    summary = (tmp_path / "tree" / RESULTS / "Offline/performance/run_1/mlperf_log_summary.txt").read_text()
    assert re.search(r"^Scenario : Offline$", summary, re.MULTILINE)
    # without the Offline run: no Offline result at all, rather than the Server run under Offline's name
    shutil.rmtree(offline)
    tree = build_tree(config, tmp_path / "tree")
    assert [r.scenario for r in tree.results] == ["Server"]
    assert {s.run_id: s.reason for s in tree.skipped} == {
        "backup-server-run": mismatch, "zzz-link": "a symbolic link to a folder: not followed"}
    assert not (tmp_path / "tree" / RESULTS / "Offline").exists()


def test_the_newest_run_is_the_latest_started_not_the_last_named(smoke, tmp_path):
    """Two VALID Offline runs: the one whose manifest started later is chosen, whatever the folder names."""
    from mlperf_assets.submission import build_tree

    config, root = _copy_config(smoke, tmp_path)
    first = _run(root, "Offline")
    older = root / "local/Offline/zz-older-copy"
    shutil.copytree(first, older)
    for manifest in older.rglob("run_manifest.json"):
        data = json.loads(manifest.read_text())
        data["started_at"] = "2000-01-01T00:00:00.000Z"
        manifest.write_text(json.dumps(data))
    tree = build_tree(config, tmp_path / "tree")
    assert next(r.run_id for r in tree.results if r.scenario == "Offline") == first.name
    assert os.path.basename(str(older)) not in {r.run_id for r in tree.results}
