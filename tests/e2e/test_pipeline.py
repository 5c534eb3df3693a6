"""The whole pipeline in-process on a temporary Dagster instance: the local runner drives the real harness
(extractive baseline, real LoadGen) on the real CNN/DM stories; results land in a real DuckDB file."""

from __future__ import annotations

import socket
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.config import load_config

pytestmark = pytest.mark.slow

SCENARIOS_YAML = """\
    Offline: {min_duration_ms: 200, min_query_count: 8}
    Server: {target_qps: 40, min_duration_ms: 300, min_query_count: 8}
    SingleStream: {min_duration_ms: 200, min_query_count: 8, target_latency_ms: 1}
"""


def _write_config(folder: Path, stories: Path, *, extra_benchmark: str = "", scenarios: str = SCENARIOS_YAML) -> Path:
    path = folder / "config.yaml"
    path.write_text(
        "storage: {artifact_root: out/artifacts, duckdb_path: out/mlperf.duckdb, report_dir: out/report}\n"
        f"dataset: {{source: stories, path: '{stories}', max_samples: 8}}\n"
        "benchmark:\n"
        "  model: llama3.1-8b\n  checkpoint: null\n  backend: extractive\n"
        "  progress_interval_s: 0.2\n  log_interval_s: 0.5\n"
        f"{extra_benchmark}"
        "  scenarios:\n" + scenarios +
        "nodes: [{name: local, runner: local}]\n"
    )  # fmt: skip
    return path


def _query(config, sql, params=None):
    from mlperf_assets import store

    return store.query(config.storage.duckdb_path, sql, params)


@pytest.fixture(scope="module")
def pipeline(stories_dir, tmp_path_factory):
    """One full run of every partition, shared by the tests below (it is the slow part)."""
    from mlperf_assets.commands.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("pipeline")
    config = load_config(_write_config(folder, stories_dir), use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False)
        yield config, instance, outcome


def test_every_partition_lands_in_duckdb_with_a_report(pipeline):
    config, instance, outcome = pipeline
    assert outcome.success, [p.error for p in outcome.partitions] + outcome.errors
    assert [(p.node, p.scenario) for p in outcome.partitions] == [
        ("local", "Offline"), ("local", "Server"), ("local", "SingleStream")
    ]  # fmt: skip
    rows = _query(config, "SELECT * FROM run_summary ORDER BY scenario, mode").to_dict("records")
    assert [(r["scenario"], r["mode"]) for r in rows] == [
        ("Offline", "accuracy"), ("Offline", "performance"), ("Server", "accuracy"), ("Server", "performance"),
        ("SingleStream", "accuracy"), ("SingleStream", "performance"),
    ]  # fmt: skip
    by_run = {p.dagster_run_id: p.scenario for p in outcome.partitions}
    for r in rows:
        assert r["node"] == "local" and r["backend"] == "extractive" and r["backend_kind"] == "baseline"
        assert by_run[r["dagster_run_id"]] == r["scenario"]  # each row knows the Dagster run that made it
        assert 0 < r["rouge1"] < 100 and r["gen_num"] == 8  # accuracy attached to both modes of the run
    perf = [r for r in rows if r["mode"] == "performance"]
    assert all(r["result_validity"] in ("VALID", "INVALID") and r["tokens_per_second"] > 0 for r in perf)
    server = next(r for r in perf if r["scenario"] == "Server")
    assert server["ttft_p99_ns"] > 0 and server["tpot_p99_ns"] >= 0

    report = outcome.report_path.read_text()
    assert outcome.report_path == config.storage.report_dir / "report.md"
    for r in perf:
        assert f"| local | {r['scenario']} | llama3.1-8b | extractive (baseline) |" in report
    assert (config.storage.report_dir / "dashboard.html").stat().st_size > 1_000_000  # plotly.js inline
    assert "extractive (baseline)" in report


def test_materializations_carry_metadata_and_checks(pipeline):
    config, instance, outcome = pipeline
    key = dg.MultiPartitionKey({"node": "local", "scenario": "Server"})
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("scenario_run"), asset_partitions=[key]), limit=1
    ).records[0]
    meta = record.asset_materialization.metadata
    folder = Path(meta["artifacts"].value)
    assert folder.parent == config.storage.artifact_root / "local" / "Server"
    assert (folder / "performance" / "mlperf_log_summary.txt").is_file()
    assert (folder / "accuracy" / "mlperf_log_accuracy.json").is_file()
    assert (folder / "accuracy" / "accuracy.txt").read_text().startswith("\nResults\n")
    assert meta["result_validity"].value in ("VALID", "INVALID")
    assert meta["tokens_per_second"].value > 0 and meta["ttft_p99_ms"].value > 0
    assert meta["label"].value == "baseline (not a model)"
    # nothing left behind: no staging folders, the local work folder emptied after collection
    assert not list((config.storage.artifact_root / "local").glob("*/.staging-*"))
    assert not list((config.storage.artifact_root.parent / "work").glob("*/*"))

    run = instance.get_run_by_id(record.run_id)
    assert run.tags["dagster/partition/node"] == "local"  # the tag dagster.yaml limits per node
    # live progress is also a run tag; the last one written is the accuracy run's final line
    assert run.tags["mlperf/progress"].startswith("accuracy: succeeded 8/8 samples (100%)")
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("accuracy_scores"), "rouge_meets_mlperf_target")]
    )
    evaluation = list(check.values())[0].event.dagster_event.event_specific_data
    assert evaluation.severity == dg.AssetCheckSeverity.WARN  # a baseline's miss warns; a model's blocks
    report = instance.fetch_materializations(dg.AssetKey("benchmark_report"), limit=1).records[0]
    assert "Latest run per node and scenario" in report.asset_materialization.metadata["report"].value


def test_rematerializing_results_replaces_rows(pipeline):
    config, instance, outcome = pipeline
    from mlperf_assets.definitions import build_definitions

    before = _query(config, "SELECT run_id, ingested_at FROM runs ORDER BY run_id").to_dict("records")
    job = build_definitions(config).resolve_job_def("benchmark_job")
    result = job.execute_in_process(
        instance=instance,
        partition_key=dg.MultiPartitionKey({"node": "local", "scenario": "Offline"}),
        asset_selection=[dg.AssetKey("loadgen_results")],
    )
    assert result.success
    after = _query(config, "SELECT run_id, ingested_at FROM runs ORDER BY run_id").to_dict("records")
    assert [r["run_id"] for r in after] == [r["run_id"] for r in before]  # same rows, none added
    changed = [a["run_id"] for a, b in zip(after, before) if a["ingested_at"] != b["ingested_at"]]
    assert len(changed) == 2 and all("-Offline-" in c for c in changed)  # Offline's perf + accuracy rewritten
    samples = _query(config, "SELECT count(*) AS n FROM sample_timings WHERE list_contains(?, run_id)", [changed])
    assert samples["n"][0] > 0


def test_failing_run_fails_the_asset_and_writes_nothing(stories_dir, tmp_path):
    from mlperf_assets.commands.pipeline import run_pipeline

    # lg_model_name gptj does not fit a llama3.1-8b dataset: the harness refuses it after start (exit code 2)
    config_path = _write_config(
        tmp_path, stories_dir, extra_benchmark="  lg_model_name: gptj\n",
        scenarios="    Offline: {min_duration_ms: 200, min_query_count: 8}\n",
    )  # fmt: skip
    config = load_config(config_path, use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False, report=False)
        assert not outcome.success
        [part] = outcome.partitions
        assert not part.success
        assert "scenario_run: local/Offline performance run" in part.error and "failed" in part.error
        assert "exited with code 2" in part.error
        # the harness's own reason, not only its exit code (F13): from the node's runner.log
        assert "exited with code 2: LoadGen model name 'gptj' does not fit benchmark 'llama3.1-8b'." in part.error
        for key in ("scenario_run", "loadgen_results", "accuracy_scores"):
            records = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
            assert records == [], key
    offline = config.storage.artifact_root / "local" / "Offline"
    assert not offline.exists() or list(offline.iterdir()) == []
    assert not config.storage.duckdb_path.exists()
    # the failed harness folder stays on the node for debugging, with the harness's own words
    kept = list((config.storage.artifact_root.parent / "work").glob("*/performance/runner.log"))
    assert len(kept) == 1 and "gptj" in kept[0].read_text()


def test_demo_without_dataset_stops_with_instructions(tmp_path, monkeypatch, capsys):
    from mlperf_assets import cli
    from mlperf_assets.commands import _shared, pipeline

    with socket.socket() as s:  # a port nobody listens on: the "hub" is unreachable, for sure
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(_shared, "HUB_HOST", ("127.0.0.1", closed))
    monkeypatch.setattr(pipeline, "LOCAL_STORIES_FALLBACK", tmp_path / "absent")
    monkeypatch.delenv("MLPERF_DAGSTER_DATASET", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mlperf-dagster demo: error: the dataset comes from the Hugging Face hub")
    assert "set MLPERF_DAGSTER_DATASET to a folder of .story files, an MLCommons cnn_eval.json" in err
    assert not (tmp_path / "home").exists()  # stopped before touching anything


def test_run_rejects_unknown_node(tmp_path, stories_dir, capsys):
    from mlperf_assets import cli

    path = _write_config(tmp_path, stories_dir)
    assert cli.main(["run", "--config", str(path), "--node", "gpu9", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mlperf-dagster run: error: --node gpu9: no such node in {path} (nodes: local)"


def test_ui_without_the_dataset_override_reuses_the_prepared_dataset(pipeline):
    """`make dev` after `make demo` without MLPERF_DAGSTER_DATASET: the config says huggingface (never prepared
    here), so scenario_run reads the dataset the demo prepared (same benchmark and tokenizer) instead of failing."""
    from mlperf_assets.config import parse_config
    from mlperf_assets.definitions import build_definitions

    config, instance, outcome = pipeline
    text = config.source_path.read_text().replace(
        f"dataset: {{source: stories, path: '{config.dataset.path}', max_samples: 8}}",
        "dataset: {source: huggingface, max_samples: 8}",
    )
    assert "huggingface" in text
    hub_config = parse_config(text, config.source_path)
    result = build_definitions(hub_config).resolve_job_def("benchmark_job").execute_in_process(
        instance=instance,
        partition_key=dg.MultiPartitionKey({"node": "local", "scenario": "Offline"}),
        asset_selection=[dg.AssetKey("scenario_run")],
    )
    assert result.success
    record = instance.fetch_materializations(dg.AssetKey("cnn_dailymail_dataset"), limit=1).records[0]
    prepared = record.asset_materialization.metadata["path"].value
    [mat] = result.asset_materializations_for_node("scenario_run")
    assert mat.metadata["dataset"].value == prepared


def test_progress_reaches_the_callback_given_to_the_definitions(pipeline):
    """`mlperf-dagster run` draws its bars from the callback it gives build_definitions (no module-global listeners):
    every observation of both harness runs of the partition reaches it, ending with each run's final line."""
    from mlperf_assets.definitions import build_definitions

    config, instance, outcome = pipeline
    seen: list[tuple[str, str, str, object]] = []
    defs = build_definitions(config, on_progress=lambda *event: seen.append(event))
    result = defs.resolve_job_def("benchmark_job").execute_in_process(
        instance=instance,
        partition_key=dg.MultiPartitionKey({"node": "local", "scenario": "Offline"}),
        asset_selection=[dg.AssetKey("scenario_run")],
    )
    assert result.success
    assert {(node, scenario) for node, scenario, _, _ in seen} == {("local", "Offline")}
    modes = [mode for _, _, mode, _ in seen]
    assert modes == sorted(modes, key=["performance", "accuracy"].index)  # performance first, then accuracy
    for mode in ("performance", "accuracy"):
        last = [p for _, _, m, p in seen if m == mode][-1]
        assert last.state == "succeeded" and last.final and last.completed == 8


# ------------------------------------------------------------------------ what a failed or unreachable run says
def test_harness_reason_reaches_the_failure_description(stories_dir, tmp_path):
    """F13: a harness that refuses its input (exit code 2: here an engine argument the node's backend does not know,
    as when the node's harness is older than the orchestrator's) fails the partition with the harness's own reason
    line, through the real local runner; the log tail stays in the error for the metadata."""
    import dataclasses

    from mlperf_assets.harness.dataset import prepare_dataset
    from mlperf_assets.plan import PartitionPlan
    from resources.runners import build_runner
    from resources.runners.ledger import PartitionRun, PartitionRunError

    @dataclasses.dataclass(frozen=True)
    class NewerOrchestratorPlan(PartitionPlan):
        def spec(self, run_id, mode):
            return dataclasses.replace(super().spec(run_id, mode), engine_args={"sentences": 3, "bogus_arg": 1})

    config = load_config(
        _write_config(tmp_path, stories_dir, scenarios="    Offline: {min_duration_ms: 200, min_query_count: 8}\n"),
        use_env_dataset=False,
    )
    dataset = prepare_dataset("stories", stories_dir, tmp_path / "prepared.json", benchmark="llama3.1-8b",
                              tokenizer="byte", max_samples=8)  # fmt: skip
    runner = build_runner(config.node("local"))
    log = _ListLog()
    run = PartitionRun(runner, NewerOrchestratorPlan(config, "local", "Offline", dataset), log=log, dagster_run_id="d1")
    with pytest.raises(PartitionRunError) as caught:
        run.run()
    message = str(caught.value)
    assert "performance run" in message and "failed: the harness exited with code 2: " in message
    assert "extractive backend: unknown --engine-arg key(s) ['bogus_arg']" in message
    assert message.endswith(f"Run folder kept on the node at {caught.value.run_folder}.")
    assert "bogus_arg" in caught.value.harness_output


def test_failure_reason_picks_the_harness_error_line(tmp_path, stories_dir):
    """The reason line from real harness output: argparse's refusal of a NaN rate (what `target_qps: .nan` in a
    config used to reach), and the last line of a traceback when the harness crashed."""
    import subprocess
    import sys

    from resources.runners.ledger import failure_reason

    proc = subprocess.run(
        [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Server", "--mode", "performance",
         "--backend", "extractive", "--dataset", str(tmp_path / "none.json"), "--output-dir", str(tmp_path / "o"),
         "--target-qps", "nan"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    reason = failure_reason(proc.stdout + proc.stderr)
    assert reason is not None and reason.startswith("argument --target-qps: ") and "nan" in reason
    crash = "INFO run x: ...\nTraceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: CUDA out of memory"
    assert failure_reason(crash) == "RuntimeError: CUDA out of memory"
    assert failure_reason("") is None and failure_reason("LoadGen finished\n") is None


def test_progress_line_says_when_the_node_cannot_be_reached():
    """F9: while the node cannot be reached the runner repeats its last answer marked stale, with its own message;
    the log line leads with that message and gives the figures as the last ones seen, never as live."""
    from mlperf_assets.harness.run_folder import RunProgress

    live = RunProgress(state="running", elapsed_s=4.0, completed=192, total=400, tokens_per_s=19497.2)
    assert live.describe() == "running 192/400 samples (48%), 19,497 tokens/s, 4.0 s"
    stale = dataclasses_replace(live, stale=True, message="connection lost 12 s ago (Connection refused); reconnecting")
    assert stale.describe() == (
        "connection lost 12 s ago (Connection refused); reconnecting "
        "(last seen: running 192/400 samples (48%), 19,497 tokens/s, 4.0 s)"
    )
    assert dataclasses_replace(live, stale=True).describe().startswith("no answer from the node (last seen: running")
    failed = RunProgress(state="failed", exit_code=2, message="the harness exited with code 2")
    assert failed.describe() == "failed 0 samples, 0 tokens/s, 0.0 s: the harness exited with code 2"
    assert RunProgress(state="failed", exit_code=1).describe().endswith(", exit code 1")


def test_ssh_outage_shows_in_the_dagster_log(sshd, stories_dir, tmp_path):
    """F9 end to end: an SSH node's sshd stops for a few seconds in the middle of a run (`mlperf-dagster run`'s
    path, in-process); the scenario_run log says the connection is lost and being re-established, with the last
    figures marked as such; the run survives and is collected."""
    import re
    import sys
    import threading
    import time

    from mlperf_assets.commands.pipeline import run_pipeline

    workdir = tmp_path / "node"
    config_path = _write_config(
        tmp_path, stories_dir, extra_benchmark="  accuracy: false\n",
        scenarios="    Server: {target_qps: 20, min_duration_ms: 8000, min_query_count: 1}\n",
    )  # fmt: skip
    text = config_path.read_text().replace(
        "nodes: [{name: local, runner: local}]",
        f"nodes: [{{name: gpu-a, runner: ssh, host: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, "
        f"key_file: {sshd.client_key}, known_hosts: {sshd.known_hosts}, workdir: {workdir}, "
        f"python: {sys.executable}, reconnect_backoff_max_s: 0.5}}]",
    )
    config_path.write_text(text)
    config = load_config(config_path, use_env_dataset=False)
    outage: dict[str, float] = {}

    def cut_the_connection() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not list(workdir.glob("*/performance/progress.jsonl")):
            time.sleep(0.1)
        time.sleep(1.0)
        sshd.stop()
        outage["down"] = time.time()
        time.sleep(3.0)
        sshd.start()
        outage["up"] = time.time()

    cutter = threading.Thread(target=cut_the_connection, daemon=True)
    cutter.start()
    try:
        with dg.instance_for_test() as instance:
            outcome = run_pipeline(config, instance=instance, progress=False, report=False)
            cutter.join(timeout=60)
            assert outcome.success, [p.error for p in outcome.partitions] + outcome.errors
            logs = instance.all_logs(outcome.partitions[0].dagster_run_id)
    finally:
        cutter.join(timeout=60)
        if sshd._proc is None:  # the module's other tests need it back
            sshd.start()
    assert "up" in outage, "the harness never started"
    lines = [(e.timestamp, e.user_message) for e in logs if e.step_key == "scenario_run"]
    during = [m for t, m in lines if outage["down"] + 1.5 < t < outage["up"]]
    assert during, lines
    pattern = re.compile(
        r"^gpu-a/Server performance: connection lost \d+ s ago \(.+\); reconnecting "
        r"\(last seen: running \d+(/\d+)? samples.*\)$"
    )
    assert all(pattern.match(m) for m in during), during  # never the last figures as if live
    assert any(m.startswith("gpu-a/Server performance: succeeded") for _, m in lines), lines


class _ListLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append(msg)


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)
