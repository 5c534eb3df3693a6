"""The MLPerf submission tree of a real smoke pipeline run (local node, extractive baseline, real LoadGen, Offline
and Server with TEST06), judged by the pinned MLCommons submission checker from ../shared (run, never copied): it
passes the system, measurements, compliance, seeds, LLM-latency and log checks and fails only on what smoke
settings explain. Also: the truncation rule against MLCommons' own truncate_accuracy_log.py, bad input, atomicity."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.config import ConfigError, load_config, parse_config
from support.submission_yaml import SUBMISSION_YAML

MLC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mlcommons_inference"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (MLC / "tools/submission/submission_checker/main.py").is_file(),
                                reason=f"the pinned MLCommons checkout is absent ({MLC})")]

# The only findings a smoke run may draw, in the checker's own words (its typo 'accurcy' included).
SMOKE_PATTERNS = (
    r"performance_sample_count, found \d+, needs to be >= 13368",
    r"Test duration less than 600s in user config",
    r"accuracy not met",
    r"does not cover all dataset",
)


def _config_text(folder: Path, stories: Path, *, submission: str = SUBMISSION_YAML, mlc: Path | None = MLC) -> str:
    return (
        "storage: {artifact_root: out/artifacts, duckdb_path: out/mlperf.duckdb, report_dir: out/report}\n"
        f"dataset: {{source: stories, path: '{stories}', max_samples: 20}}\n"
        "benchmark:\n"
        "  model: llama3.1-8b\n  checkpoint: null\n  backend: extractive\n"
        "  progress_interval_s: 0.2\n  log_interval_s: 0.5\n  compliance: [TEST06]\n"
        "  scenarios:\n"
        "    Offline: {min_duration_ms: 13, min_query_count: 20, target_qps: 1000000}\n"
        "    Server: {target_qps: 250, min_duration_ms: 1000, min_query_count: 600}\n"
        "nodes: [{name: local, runner: local}]\n"
        + (f"mlcommons_inference: '{mlc}'\n" if mlc else "")
        + submission
    )


@pytest.fixture(scope="module")
def smoke(stories_dir, tmp_path_factory):
    """One smoke pipeline run (performance, accuracy, TEST06 for Offline and Server), shared by the tests."""
    from mlperf_assets.commands.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("submission")
    path = folder / "config.yaml"
    path.write_text(_config_text(folder, stories_dir))
    config = load_config(path, use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False, report=False)
        assert all(p.success for p in outcome.partitions), outcome
        yield config, instance


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.cli", *args], capture_output=True, text=True,
                          timeout=600, check=False)


def test_smoke_tree_fails_the_checker_only_for_smoke_reasons(smoke, tmp_path):
    from mlperf_assets import store
    from mlperf_assets.submission import check_records, package

    config, _ = smoke
    tree, verdict, rows = package(config, tmp_path / "tree")
    store.save_submission_checks(config.storage.duckdb_path, check_records(tree, verdict, rows))
    sub = tree.submitter_dir
    assert sub == tmp_path / "tree" / "closed" / "TestOrg"
    assert sorted(p.name for p in sub.iterdir()) == ["documentation", "results", "src", "systems"]
    for scenario in ("Offline", "Server"):
        scen = sub / "results" / "test-local-cpu" / "llama3.1-8b" / scenario
        assert sorted(p.name for p in (scen / "performance" / "run_1").iterdir()) == [
            "mlperf_log_accuracy.json", "mlperf_log_detail.txt", "mlperf_log_summary.txt"]
        acc = scen / "accuracy"
        assert (acc / "mlperf_log_accuracy.json").stat().st_size <= 10 * 1024  # truncated
        assert re.search(r"^hash=[0-9a-f]{64}$", (acc / "accuracy.txt").read_text(), re.MULTILINE)
        assert "TEST06 verification complete" in (scen / "TEST06" / "verify_accuracy.txt").read_text()
        assert (scen / "TEST06" / "accuracy" / "mlperf_log_accuracy.json").is_file()
        for name in ("measurements.json", "user.conf", "README.md"):
            assert (scen / name).stat().st_size > 0
    system = json.loads((sub / "systems" / "test-local-cpu.json").read_text())
    assert system["submitter"] == "TestOrg" and system["division"] == "closed" and system["status"] == "available"

    # the checker's verdict: both results fail, each only on smoke findings, and each smoke finding is there
    assert verdict is not None and verdict.summary == "SUMMARY: submission has errors"
    assert {r["scenario"] for r in rows} == {"Offline", "Server"}
    assert not verdict.general_errors
    for r in rows:
        assert not r["passed"]
        assert r["unexpected"] == [], r["unexpected"]
        for pattern in SMOKE_PATTERNS:
            assert any(re.search(pattern, m) for m in r["expected"]), (pattern, r["expected"])
        for m in r["expected"]:
            assert any(re.search(p, m) for p in SMOKE_PATTERNS), m
    # nothing else in the checker's own output: system, measurements, compliance, seeds, LLM latency, logs pass
    for line in verdict.output.splitlines():
        if " ERROR] " not in line:
            continue
        msg = line.split(" ERROR] ", 1)[1]
        rollup = ("Checks failed for:" in msg and re.search(r"Some (performance|accuracy) checks", msg)) or \
            msg.startswith(("NoResults ", "SUMMARY:"))
        assert rollup or any(re.search(p, msg) for p in SMOKE_PATTERNS), msg
    for forbidden in ("system checks Checks failed", "measurement checks Checks failed", "compliance check Checks",
                      "rng_seed is wrong", "Failed extra check for TTFT", "has loadgen errors",
                      "Required minimum samples per query", "Early stopping condition was not met", "TEST06 accuracy"):
        assert forbidden not in verdict.output

    stored = store.read_submission_checks(config.storage.duckdb_path)
    assert {r["scenario"] for r in stored} == {"Offline", "Server"}
    assert all(not r["passed"] and r["unexpected_errors"] == [] and r["expected_errors"] for r in stored)


def test_cli_writes_the_tree_and_prints_the_verdict(smoke, tmp_path):
    config, _ = smoke
    proc = _cli("submission", "--config", str(config.source_path), "--out", str(tmp_path / "t"))
    assert proc.returncode == 0, proc.stderr
    assert "SUMMARY: submission has errors" in proc.stdout
    assert "Offline: FAIL (expected: smoke settings or a baseline backend)" in proc.stdout
    assert "performance_sample_count, found 20, needs to be >= 13368" in proc.stdout


def test_asset_and_its_blocking_check(smoke):
    from mlperf_assets.assets.submission import CHECKER_CHECK, build_submission_package, submission_dir
    from resources.mlperf_config import MlperfConfigResource
    from resources.store import ResultsStore

    config, instance = smoke
    result = dg.materialize([build_submission_package(config)], partition_key="local", instance=instance,
                            resources={"mlperf_config": MlperfConfigResource.for_config(config),
                                       "store": ResultsStore(path=str(config.storage.duckdb_path))})
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [(CHECKER_CHECK, True)]
    assert "Test duration less than 600s" in checks[0].metadata["verdict"].value
    assert (submission_dir(config, "local") / "closed" / "TestOrg" / "systems" / "test-local-cpu.json").is_file()


def test_truncation_matches_mlcommons_truncate_accuracy_log(tmp_path):
    from mlperf_assets.submission.truncate import write_truncated

    log = tmp_path / "src" / "mlperf_log_accuracy.json"
    log.parent.mkdir()
    records = [f'{{ "seq_id" : {i}, "qsl_idx" : {i}, "data" : "{"AB" * 60}{i:08X}" }}' for i in range(400)]
    log.write_text("[\n" + ",\n".join(records) + "\n]\n")  # ~60 KB: cut to 4 KiB + 4 KiB
    (log.parent / "accuracy.txt").write_text("{'rouge1': '1.0'}\n")
    ours = tmp_path / "ours"
    ours.mkdir()
    write_truncated(log, log.parent / "accuracy.txt", ours)

    acc = tmp_path / "in" / "closed" / "X" / "results" / "s" / "llama3.1-8b" / "Offline" / "accuracy"
    acc.mkdir(parents=True)
    shutil.copy(log, acc)
    shutil.copy(log.parent / "accuracy.txt", acc)
    subprocess.run([sys.executable, str(MLC / "tools/submission/truncate_accuracy_log.py"), "--input",
                    str(tmp_path / "in"), "--output", str(tmp_path / "theirs"), "--submitter", "X"],
                   check=True, capture_output=True, cwd=tmp_path)
    theirs = tmp_path / "theirs" / "closed" / "X" / "results" / "s" / "llama3.1-8b" / "Offline" / "accuracy"
    assert (ours / "mlperf_log_accuracy.json").read_bytes() == (theirs / "mlperf_log_accuracy.json").read_bytes()
    assert (ours / "accuracy.txt").read_text().split("hash=")[1] == (theirs / "accuracy.txt").read_text().split(
        "hash=")[1]


def test_missing_mlcommons_path_and_submission_fields_are_one_line_each(tmp_path, stories_dir):
    text = _config_text(tmp_path, stories_dir, mlc=tmp_path / "no-such-checkout",
                        submission="submission: {submitter: TestOrg}\n")
    with pytest.raises(ConfigError) as exc:
        parse_config(text, tmp_path / "config.yaml")
    problems = exc.value.problems
    assert any(p.endswith(f"mlcommons_inference: {tmp_path / 'no-such-checkout'} does not exist (a checkout of "
                          "mlcommons/inference)") for p in problems)
    for field in ("system_name", "host_storage_type", "cooling"):
        assert f"config.yaml: submission.{field}: is required for a submission (a machine cannot report it)" in \
            [p.split("/")[-1] for p in problems]
    assert all("\n" not in p for p in problems)
    text = _config_text(tmp_path, stories_dir, mlc=None, submission="")
    with pytest.raises(ConfigError) as exc:
        parse_config(text, tmp_path / "config.yaml")
    assert [p.split(": ", 1)[1] for p in exc.value.problems] == [
        "mlcommons_inference: is required for TEST06 (its compliance/TEST06/audit.config)"]


def test_cli_bad_input_says_one_line(smoke, tmp_path):
    config, _ = smoke
    proc = _cli("submission", "--config", str(config.source_path), "--out", str(tmp_path / "t"),
                "--mlcommons-inference", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"mlperf-dagster submission: error: mlcommons_inference: {tmp_path / 'nowhere'} "
                                   "does not exist (a checkout of mlcommons/inference)")
    bare = tmp_path / "bare.yaml"
    bare.write_text(config.source_path.read_text().split("submission:")[0])
    proc = _cli("submission", "--config", str(bare), "--out", str(tmp_path / "t"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "submission: is required to build a submission tree" in proc.stderr
    assert not (tmp_path / "t").exists()


def test_invalid_run_is_not_submitted_and_the_tree_is_atomic(smoke, tmp_path):
    from mlperf_assets.errors import UserError
    from mlperf_assets.submission import build_tree

    config, _ = smoke
    root = tmp_path / "artifacts"
    shutil.copytree(config.storage.artifact_root / "local", root / "local",
                    ignore=shutil.ignore_patterns(".*"))
    for detail in root.glob("local/*/*/performance/mlperf_log_detail.txt"):
        detail.write_text(detail.read_text().replace('"value": "VALID"', '"value": "INVALID"'))
    broken = config.model_copy(deep=True)
    broken.storage.artifact_root = root
    broken.source_path = config.source_path
    out = tmp_path / "tree"
    out.mkdir()
    (out / "keep.txt").write_text("the previous tree")
    (out / ".mlperf-dagster-output").write_text("")  # a tree written earlier: the only folder a build replaces
    with pytest.raises(UserError) as exc:
        build_tree(broken, out)
    assert str(exc.value).startswith(f"no VALID performance run to submit under {root}")
    assert "performance run is INVALID" in str(exc.value)
    # a failure while writing (an accuracy.txt gone) leaves the old tree as it was and no temporary folder
    for detail in root.glob("local/*/*/performance/mlperf_log_detail.txt"):
        detail.write_text(detail.read_text().replace('"value": "INVALID"', '"value": "VALID"'))
    next(root.glob("local/Server/*/accuracy/accuracy.txt")).unlink()
    with pytest.raises(UserError, match="accuracy.txt is missing"):
        build_tree(broken, out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".tree", "tree"))) == ["tree"]
    assert sorted(p.name for p in out.iterdir()) == [".mlperf-dagster-output", "keep.txt"]


def test_submission_profile_runs_mlperf_settings_accuracy_and_test06(tmp_path, stories_dir):
    from mlperf_assets.plan import compliance_tests
    from mlperf_assets.plan import PartitionPlan

    text = _config_text(tmp_path, stories_dir).replace("  compliance: [TEST06]\n", "  profile: submission\n")
    # mlperf.conf's 600 s apply: a rate LoadGen can schedule over them (the smoke config's 1e6 QPS cannot)
    text = text.replace("target_qps: 1000000}", "target_qps: 10}")
    text = text.replace("  checkpoint: null\n", "  checkpoint: null\n  accuracy: false\n")
    config = parse_config(text, tmp_path / "config.yaml")
    assert config.dataset.max_samples is None  # 13,368: the whole validation set
    assert config.benchmark.accuracy and compliance_tests(config) == ["TEST06"]
    plan = PartitionPlan(config, "local", "Server", tmp_path / "d.json")
    assert [run.folder for run in plan.runs("r1")] == ["performance", "accuracy", "compliance/TEST06"]
    settings = plan.spec("r1", "performance").settings
    assert "min_duration" not in settings and "min_query_count" not in settings  # mlperf.conf's values apply
    assert settings["target_qps"] == 250
    test06 = plan.runs("r1")[-1].spec
    assert (test06.run_id, test06.mode, test06.compliance) == ("r1.TEST06", "performance", "TEST06")
    assert "accuracy_log_sampling_target = 100" in test06.audit_config
    smoke = parse_config(_config_text(tmp_path, stories_dir), tmp_path / "config.yaml")
    assert smoke.dataset.max_samples == 20
    assert PartitionPlan(smoke, "local", "Server", tmp_path / "d.json").spec("r1", "performance").settings[
        "min_duration"] == 1000


def test_runs_without_test06_say_so_in_the_checkers_words(smoke, tmp_path):
    from mlperf_assets.submission import package

    config, _ = smoke
    root = tmp_path / "artifacts"
    shutil.copytree(config.storage.artifact_root / "local", root / "local", ignore=shutil.ignore_patterns(".*"))
    for folder in root.glob("local/*/*/compliance"):
        shutil.rmtree(folder)
    bare = config.model_copy(deep=True)
    bare.storage.artifact_root, bare.storage.duckdb_path = root, tmp_path / "db.duckdb"
    bare.source_path = config.source_path
    tree, verdict, rows = package(bare, tmp_path / "tree")
    assert all("no TEST06 run" in " ".join(r) for r in tree.smoke_reasons.values())
    for r in rows:
        assert r["unexpected"] == [], r["unexpected"]
        assert any(m.startswith("Missing TEST06 in compliance dir") for m in r["expected"])


def test_checker_lines_are_attributed_per_result_and_classified():
    """The checker's log format, per result; a wrong seed is unexpected whatever the run's settings."""
    from mlperf_assets.submission.checker import classify, parse_output, smoke_traits

    p = "/t/closed/O/results/sys/llama3.1-8b"
    text = "\n".join([
        f"[2026-01-01 00:00:00,000 performance_check.py:1 INFO] Starting performance checks for: {p}/Offline/performance/run_1/mlperf_log_detail.txt",
        f"[2026-01-01 00:00:00,000 performance_check.py:2 ERROR] {p}/Offline/performance/run_1/mlperf_log_detail.txt qsl_rng_seed is wrong, expected=1, found=2",
        "[2026-01-01 00:00:00,000 system_check.py:3 ERROR] /t/closed/O/results/sys, field cooling is missing",
        f"[2026-01-01 00:00:00,000 base.py:58 ERROR] Some performance checks Checks failed for: {p}/Offline/x",
        f"[2026-01-01 00:00:00,000 performance_check.py:1 INFO] Starting performance checks for: {p}/Server/performance/run_1/mlperf_log_detail.txt",
        f"[2026-01-01 00:00:00,000 performance_check.py:381 ERROR] {p}/Server/performance/run_1/mlperf_log_detail.txt Test duration less than 600s in user config. expected=600000, found=1000",
        f"[2026-01-01 00:00:00,000 main.py:1 INFO] Results {p}/Server/performance/run_1/mlperf_log_detail.txt 123.5",
        f"[2026-01-01 00:00:00,000 main.py:2 ERROR] NoResults {p}/Offline/performance/run_1/mlperf_log_detail.txt",
        "[2026-01-01 00:00:00,000 main.py:3 ERROR] SUMMARY: submission has errors",
    ])  # fmt: skip
    results, general, summary = parse_output(text)
    assert summary == "SUMMARY: submission has errors" and general == []
    offline, server = results[("sys", "llama3.1-8b", "Offline")], results[("sys", "llama3.1-8b", "Server")]
    assert not offline.passed and len(offline.errors) == 2  # the seed and the system line; no roll-ups
    assert server.passed and server.metric == 123.5
    traits = smoke_traits(["min_duration 1000 ms < 600000 ms"])
    expected, unexpected = classify(offline.errors + server.errors, traits)
    assert [m.split()[-1] for m in expected] == ["found=1000"]
    assert any("qsl_rng_seed is wrong" in m for m in unexpected) and any("cooling" in m for m in unexpected)
    assert classify(server.errors, smoke_traits([])) == ([], server.errors)


def test_checker_lines_of_a_tree_under_a_results_folder_name_their_result():
    """The demo's tree sits in results/submission/: the result is the part after the tree's own results/."""
    from mlperf_assets.submission.checker import parse_output

    p = "/home/u/mlperf-dagster/results/submission/closed/O/results/sys/llama3.1-8b"
    text = "\n".join([
        f"[2026-01-01 00:00:00,000 performance_check.py:1 INFO] Starting performance checks for: {p}/Offline/performance/run_1/mlperf_log_detail.txt",
        f"[2026-01-01 00:00:00,000 performance_check.py:381 ERROR] {p}/Offline/performance/run_1/mlperf_log_detail.txt Test duration less than 600s in user config. expected=600000, found=2",
        "[2026-01-01 00:00:00,000 main.py:3 ERROR] SUMMARY: submission has errors",
    ])  # fmt: skip
    results, general, _ = parse_output(text)
    assert list(results) == [("sys", "llama3.1-8b", "Offline")] and general == []
    assert results[("sys", "llama3.1-8b", "Offline")].errors[0].endswith("found=2")


def _variant(tmp_path: Path, stories: Path, *, edits: dict[str, str]) -> object:
    """A smoke pipeline run of the shared config with some lines replaced (another benchmark, LoadGen model or
    scenario set): performance and accuracy of each scenario, plus TEST06 where the config keeps it."""
    from mlperf_assets.commands.pipeline import run_pipeline

    text = _config_text(tmp_path, stories)
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "config.yaml").write_text(text)
    config = load_config(tmp_path / "config.yaml", use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False, report=False)
    assert all(p.success for p in outcome.partitions), [p.error for p in outcome.partitions]
    return config


def _only_smoke_findings(verdict, rows) -> None:
    """The checker judged every result and each failed only on what the run's smoke settings explain: no layout,
    naming, scenario-set, latency-limit or compliance finding."""
    assert verdict.summary == "SUMMARY: submission has errors" and not verdict.general_errors
    for r in rows:
        assert r["unexpected"] == [], r["unexpected"]
        assert r["expected"], r
    for forbidden in ("does not have all required scenarios", "has all unknown scenarios", "Execution occurred",
                      "Failed extra check for TTFT", "compliance check Checks", "system checks Checks failed",
                      "measurement checks Checks failed", "rng_seed is wrong", "TEST06 accuracy"):
        assert forbidden not in verdict.output, forbidden


SERVER_LINE = "    Server: {target_qps: 250, min_duration_ms: 1000, min_query_count: 600}\n"


def test_gptj_result_is_named_gptj_99_and_asks_no_test06(tmp_path, stories_dir):
    """gpt-j lands under the registry's submission name (gptj-99, not the config's gptj) and, as no compliance test
    is required of it by the compliance table, no run is called unsubmittable for lacking TEST06. (The checker at
    gpt-j's round, v5.0, does want TEST06 of it: see test_gptj_tree_is_laid_out_for_v5_0_and_judged_at_it.)"""
    from mlperf_assets.submission import build_tree

    config = _variant(tmp_path, stories_dir, edits={"  model: llama3.1-8b\n": "  model: gptj\n",
                                                    "  compliance: [TEST06]\n": "", SERVER_LINE: ""})
    tree = build_tree(config, tmp_path / "tree")
    results = tree.submitter_dir / "results" / "test-local-cpu"
    assert [p.name for p in results.iterdir()] == ["gptj-99"]
    assert (results / "gptj-99" / "Offline" / "performance" / "run_1" / "mlperf_log_detail.txt").is_file()
    assert "# gptj-99 Offline on test-local-cpu" in (results / "gptj-99" / "Offline" / "README.md").read_text()
    reasons = tree.smoke_reasons[("local", "Offline")]
    assert "performance_sample_count 20 < 13368 (a smoke dataset)" in reasons
    assert not any("TEST06" in r for r in reasons), reasons


def test_edge_result_is_judged_by_its_own_sample_count(tmp_path, stories_dir):
    """llama3.1-8b-edge (edge system: Offline and SingleStream) under its own folder, checked by the pinned checker
    with only smoke findings; its smoke threshold is the registry's 5,000 samples: a 5,000-sample run is not smoke."""
    import json as _json

    from mlperf_assets.harness.benchmarks import LOADGEN_MODELS
    from mlperf_assets.submission import package
    from mlperf_assets.submission.tree import select_runs, smoke_reasons

    config = _variant(tmp_path, stories_dir, edits={
        "  model: llama3.1-8b\n": "  model: llama3.1-8b-edge\n", "  compliance: [TEST06]\n": "",
        SERVER_LINE: "    SingleStream: {min_duration_ms: 1, min_query_count: 200}\n",
        "  cooling: air\n": "  cooling: air\n  category: edge\n"})
    tree, verdict, rows = package(config, tmp_path / "tree", machine_facts=lambda node: {"cpu_model": f"CPU of {node}"})
    results = tree.submitter_dir / "results" / "test-local-cpu"
    assert sorted(p.relative_to(results).as_posix() for p in results.glob("*/*")) == [
        "llama3.1-8b-edge/Offline", "llama3.1-8b-edge/SingleStream"]
    assert {(r["benchmark"], r["scenario"]) for r in rows} == {("llama3.1-8b-edge", "Offline"),
                                                               ("llama3.1-8b-edge", "SingleStream")}
    _only_smoke_findings(verdict, rows)
    assert any("needs to be >= 5000" in m for r in rows for m in r["expected"])
    system = _json.loads((tree.submitter_dir / "systems" / "test-local-cpu.json").read_text())
    assert system["host_processor_model_name"] == "CPU of local" and system["system_type"] == "edge"
    for reasons in tree.smoke_reasons.values():
        assert "performance_sample_count 20 < 5000 (a smoke dataset)" in reasons
        assert not any("TEST06" in r for r in reasons), reasons

    # the same run with LoadGen's 5,000 samples is not called a smoke dataset
    run = next(r for r in select_runs(config.storage.artifact_root, ["local"], ["Offline"])[0])
    detail = run.performance / "mlperf_log_detail.txt"
    text = detail.read_text()
    assert '"key": "effective_performance_sample_count", "value": 20,' in text
    detail.write_text(text.replace('"key": "effective_performance_sample_count", "value": 20,',
                                   '"key": "effective_performance_sample_count", "value": 5000,'))
    reasons = smoke_reasons(run, LOADGEN_MODELS["llama3_1-8b-edge"], baseline=False)
    assert not any("performance_sample_count" in r for r in reasons), reasons
    assert any("performance_sample_count" in r for r in smoke_reasons(run, LOADGEN_MODELS["llama3_1-8b"], False))


def test_interactive_result_is_the_interactive_scenario_of_llama(tmp_path, stories_dir):
    """A Server run under llama3_1-8b-interactive is, for the checker (v6.1), the Interactive scenario of
    llama3.1-8b (there is no llama3.1-8b-interactive folder in v6.x): with its TEST06 run, only smoke findings."""
    from mlperf_assets.submission import package

    config = _variant(tmp_path, stories_dir, edits={
        "  backend: extractive\n": "  backend: extractive\n  lg_model_name: llama3_1-8b-interactive\n"})
    tree, verdict, rows = package(config, tmp_path / "tree")
    results = tree.submitter_dir / "results" / "test-local-cpu"
    assert sorted(p.relative_to(results).as_posix() for p in results.glob("*/*")) == [
        "llama3.1-8b/Interactive", "llama3.1-8b/Offline"]
    assert "TEST06 verification complete" in (results / "llama3.1-8b" / "Interactive" / "TEST06" /
                                              "verify_accuracy.txt").read_text()
    assert {(r["benchmark"], r["scenario"], r["run_id"] is not None) for r in rows} == {
        ("llama3.1-8b", "Offline", True), ("llama3.1-8b", "Interactive", True)}
    _only_smoke_findings(verdict, rows)
    assert "# llama3.1-8b Interactive on test-local-cpu" in (results / "llama3.1-8b" / "Interactive" / "README.md"
                                                             ).read_text()



# What the pinned checker at v5.0 says of a gpt-j smoke tree beyond the smoke findings: none of it layout or naming.
# - v5.0 demands TEST06 of gptj-99 (models_TEST06), which this harness cannot run for gpt-j (its responses carry no
#   token counts: harness/compliance.py); the checker looks for it where the tree would put it, compliance/...;
# - the checkout's OFFLINE_MIN_SPQ_SINCE_V4 has no gptj-99 row: a closed gpt-j Offline result crashes its
#   min_query_count_check (a KeyError, logged as "Execution occurred"), whatever the tree holds.
GPTJ_V5_0_GAPS = {
    "Offline": (r"Execution occurred in running check \S+/results/test-local-cpu/gptj-99/Offline/performance/run_1/"
                r"mlperf_log_detail\.txt\. Running min_query_count_check in PerformanceCheck",),
    "*": (r"Missing TEST06 in compliance dir \S+/TestOrg/compliance/test-local-cpu/gptj-99/{scenario}/",
          r"Missing accuracy file in compliance dir\. Needs file \S+/TestOrg/compliance/test-local-cpu/gptj-99/"
          r"{scenario}/TEST06/verify_accuracy\.txt",
          r"Execution occurred in running check \S+/TestOrg/compliance/test-local-cpu/gptj-99/{scenario}/\. Running "
          r"accuracy_check in ComplianceCheck"),
}
SEED_PATTERN = r"(qsl|sample_index|schedule)_rng_seed is wrong, expected=\d+, found=\d+"


def test_gptj_tree_is_laid_out_for_v5_0_and_judged_at_it(tmp_path, stories_dir):
    """gpt-j's round is v5.0 (the newest that lists it): its tree keeps measurements and compliance in folders of
    their own and code/ for src/, and the pinned checker, run with --version v5.0, raises no layout, naming,
    missing-file or scenario-set error. Its findings are the smoke ones, LoadGen's v6.1 seeds (a settings finding,
    expected through the run's smoke reasons) and the two gaps of GPTJ_V5_0_GAPS, asserted line by line."""
    from mlperf_assets.errors import UserError
    from mlperf_assets.submission import build_tree, package

    config = _variant(tmp_path, stories_dir, edits={"  model: llama3.1-8b\n": "  model: gptj\n",
                                                    "  compliance: [TEST06]\n": ""})
    tree, verdict, rows = package(config, tmp_path / "tree")
    assert tree.round == "v5.0"  # and the checker looked for TEST06 under compliance/: it ran at v5.0
    sub = tree.submitter_dir
    assert sorted(p.name for p in sub.iterdir()) == ["code", "documentation", "measurements", "results", "systems"]
    for scenario in ("Offline", "Server"):
        measurements = sub / "measurements" / "test-local-cpu" / "gptj-99" / scenario
        assert sorted(p.name for p in measurements.iterdir()) == [
            "README.md", "mlperf.conf", f"test-local-cpu_{scenario}.json", "user.conf"]
        assert sorted(p.name for p in (sub / "results" / "test-local-cpu" / "gptj-99" / scenario).iterdir()) == [
            "README.md", "accuracy", "performance"]

    assert verdict.summary == "SUMMARY: submission has errors" and not verdict.general_errors
    assert {(r["benchmark"], r["scenario"], r["run_id"] is not None) for r in rows} == {
        ("gptj-99", "Offline", True), ("gptj-99", "Server", True)}
    for r in rows:
        for pattern in (*SMOKE_PATTERNS, SEED_PATTERN):
            assert any(re.search(pattern, m) for m in r["expected"]), (pattern, r["expected"])
        for m in r["expected"]:
            assert any(re.search(p, m) for p in (*SMOKE_PATTERNS, SEED_PATTERN)), m
        gaps = [g.format(scenario=r["scenario"]) for g in GPTJ_V5_0_GAPS["*"] + GPTJ_V5_0_GAPS.get(r["scenario"], ())]
        assert sorted(gaps) == sorted(next(g for g in gaps if re.fullmatch(g, m)) for m in r["unexpected"]), \
            r["unexpected"]
    for forbidden in ("does not have all required scenarios", "has all unknown scenarios", "json file not found",
                      "src directory does not exist", "system checks Checks failed",
                      "measurement checks Checks failed", "is missing", "Could not find", "TEST06 accuracy"):
        assert forbidden not in verdict.output, forbidden
    for reasons in tree.smoke_reasons.values():
        assert "LoadGen's RNG seeds are v6.1's, not those of v5.0 (the round that judges gptj-99)" in reasons
        assert not any("TEST06" in r for r in reasons), reasons

    # one tree holds one round: a run of a v6.1 LoadGen model among them is refused in one line
    manifest = next(config.storage.artifact_root.glob("local/Server/*/performance/run_manifest.json"))
    manifest.write_text(manifest.read_text().replace('"lg_model_name": "gptj"', '"lg_model_name": "llama3_1-8b"'))
    with pytest.raises(UserError, match=r"LoadGen model llama3_1-8b is judged at round v6\.1, the tree of gptj at "
                                        r"v5\.0: one tree holds one round$"):
        build_tree(config, tmp_path / "tree2")


# ---------------------------------------------------------------------------------------------------------------------
# Verdicts from the run's own facts (issue 22 items 1 and 2)
def _copy_of_smoke(smoke, folder: Path, stories: Path, *, max_samples: bool = True):
    """A config file in ``folder`` whose artifact root holds a copy of the smoke runs, to change them."""
    config, _ = smoke
    folder.mkdir(parents=True, exist_ok=True)
    text = _config_text(folder, stories)
    if not max_samples:  # dataset.max_samples null, as under profile: submission
        text = text.replace(", max_samples: 20}", "}")
    (folder / "config.yaml").write_text(text)
    copy = load_config(folder / "config.yaml", use_env_dataset=False)
    assert copy.storage.artifact_root != config.storage.artifact_root
    shutil.copytree(config.storage.artifact_root / "local", copy.storage.artifact_root / "local",
                    ignore=shutil.ignore_patterns(".*"))
    return copy


def _as_model_runs(root: Path) -> None:
    """The runs' manifests record the vLLM backend (a model, not a baseline)."""
    for path in root.glob("local/*/*/**/run_manifest.json"):
        manifest = json.loads(path.read_text())
        manifest["backend"].update(name="vllm", kind="model")
        path.write_text(json.dumps(manifest))


def _full_accuracy_runs(root: Path) -> None:
    """The accuracy runs' detail logs say they covered the whole 13,368-sample set (what the checker reads)."""
    for detail in root.glob("local/*/*/accuracy/mlperf_log_detail.txt"):
        text = detail.read_text()
        new = re.sub(r'("key": "(?:qsl_reported_total_count|effective_accuracy_sample_count)", "value": )20\b',
                     r"\g<1>13368", text)
        assert new != text
        detail.write_text(new)


def test_a_models_missed_accuracy_fails_the_command_and_the_blocking_check(smoke, tmp_path, stories_dir):
    """vLLM runs whose accuracy runs covered the whole set and missed the target: nothing of the runs explains
    it, whatever dataset.max_samples says (null here, as under profile: submission)."""
    from mlperf_assets.assets.submission import CHECKER_CHECK, build_submission_package
    from resources.mlperf_config import MlperfConfigResource
    from resources.store import ResultsStore

    config = _copy_of_smoke(smoke, tmp_path / "c", stories_dir, max_samples=False)
    assert config.dataset.max_samples is None
    _as_model_runs(config.storage.artifact_root)
    _full_accuracy_runs(config.storage.artifact_root)
    proc = _cli("submission", "--config", str(config.source_path), "--out", str(tmp_path / "t"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "  test-local-cpu/llama3.1-8b/Offline: FAIL\n" in proc.stdout
    assert "accuracy not met" in proc.stdout and "does not cover all dataset" not in proc.stdout

    _, instance = smoke
    result = dg.materialize([build_submission_package(config)], partition_key="local", instance=instance,
                            resources={"mlperf_config": MlperfConfigResource.for_config(config),
                                       "store": ResultsStore(path=str(config.storage.duckdb_path))},
                            raise_on_error=False)
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [(CHECKER_CHECK, False)]
    unexpected = checks[0].metadata["unexpected_errors"].value
    assert unexpected and all("accuracy not met" in m for m in unexpected), unexpected


def test_accuracy_findings_are_expected_for_a_partial_accuracy_run_or_a_baseline(smoke, tmp_path, stories_dir):
    from mlperf_assets.submission import package

    # a model whose accuracy run covered 20 of the 13,368 samples: its accuracy is no verdict on the model
    partial = _copy_of_smoke(smoke, tmp_path / "partial", stories_dir)
    _as_model_runs(partial.storage.artifact_root)
    tree, _, rows = package(partial, tmp_path / "partial" / "tree")
    for reasons in tree.smoke_reasons.values():
        assert "the accuracy run covers 20 of the 13368 samples of llama3.1-8b (a smoke dataset)" in reasons
        assert not any("baseline" in r for r in reasons), reasons
    for r in rows:
        assert r["unexpected"] == [], r["unexpected"]
        assert any("accuracy not met" in m for m in r["expected"])
        assert any("does not cover all dataset" in m for m in r["expected"])

    # the extractive baseline over the whole set: expected, because its manifest says it is a baseline
    baseline = _copy_of_smoke(smoke, tmp_path / "baseline", stories_dir)
    _full_accuracy_runs(baseline.storage.artifact_root)
    tree, _, rows = package(baseline, tmp_path / "baseline" / "tree")
    for reasons in tree.smoke_reasons.values():
        assert any("the extractive backend is a baseline" in r for r in reasons)
        assert not any("the accuracy run covers" in r for r in reasons), reasons
    for r in rows:
        assert r["unexpected"] == [], r["unexpected"]
        assert any("accuracy not met" in m for m in r["expected"])
        assert not any("does not cover all dataset" in m for m in r["expected"] + r["unexpected"])


def _hex(ids) -> str:
    import numpy as np

    return np.asarray(ids, dtype=np.int32).tobytes().hex().upper()


def _mutate_test06(root: Path, kind: str) -> None:
    """Change the first record of the Server TEST06 run's accuracy log (faithfulness_3 section 3c)."""
    import numpy as np

    folder = next(root.glob("local/Server/*/compliance/TEST06"))
    log = folder / "mlperf_log_accuracy.json"
    records = json.loads(log.read_text())
    r = records[0]
    data = np.frombuffer(bytes.fromhex(r["data"]), dtype=np.int32)
    if kind == "token_count":
        r["token_count"] = int(r["token_count"]) + 1
    elif kind == "first_token":
        first = np.frombuffer(bytes.fromhex(r["token_data"]), dtype=np.int32)
        r["token_data"] = _hex([int(data[0]) + 1, *first[1:]])
    elif kind in ("two_eos_257", "two_eos_2"):  # two trailing EOS of the run's own id (the byte tokenizer's: 257)
        eos = 257 if kind == "two_eos_257" else 2
        if eos == 2:  # a run whose tokenizer's EOS is 2 (MLCommons' default)
            manifest = json.loads((folder / "run_manifest.json").read_text())
            manifest["compliance"]["eos_token_id"] = 2
            (folder / "run_manifest.json").write_text(json.dumps(manifest))
        r.update(data=_hex([*data, eos, eos]), token_count=len(data) + 2)
    else:  # an output of exactly two EOS: MLCommons' eos_check never looks at index 0, ours does
        r.update(data=_hex([257, 257]), token_data=_hex([257]), token_count=2)
    log.write_text(json.dumps(records))


@pytest.mark.parametrize("kind", ["token_count", "first_token", "two_eos_257", "two_eos_2", "only_two_eos"])
def test_a_broken_test06_run_fails_the_tree(smoke, tmp_path, stories_dir, kind):
    from mlperf_assets.submission import package

    config = _copy_of_smoke(smoke, tmp_path / "c", stories_dir)
    _mutate_test06(config.storage.artifact_root, kind)
    tree, verdict, rows = package(config, tmp_path / "tree")
    server = next(r for r in rows if r["scenario"] == "Server")
    offline = next(r for r in rows if r["scenario"] == "Offline")
    assert offline["unexpected"] == [], offline["unexpected"]
    assert not server["passed"]
    test06 = [m for m in server["unexpected"] if "TEST06" in m]
    assert test06, server["unexpected"]
    verify_txt = (tree.submitter_dir / "results" / "test-local-cpu" / "llama3.1-8b" / "Server" / "TEST06" /
                  "verify_accuracy.txt").read_text()
    if kind == "only_two_eos":  # MLCommons' file, verbatim, says it passed; the disagreement fails the result
        assert verify_txt.endswith("TEST06 verification complete\n")
        assert any("the verification fails" in m and "'eos': False" in m for m in test06), test06
    else:
        assert verify_txt.endswith("TEST06 verification failed\n")
        assert any("TEST06 accuracy check failed" in m for m in test06), test06


def test_a_disputed_test06_fails_the_submission_command(smoke, tmp_path, stories_dir):
    config = _copy_of_smoke(smoke, tmp_path / "c", stories_dir)
    _mutate_test06(config.storage.artifact_root, "only_two_eos")
    proc = _cli("submission", "--config", str(config.source_path), "--out", str(tmp_path / "t"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "  test-local-cpu/llama3.1-8b/Server: FAIL\n" in proc.stdout
    assert "TEST06 verification of run" in proc.stdout
