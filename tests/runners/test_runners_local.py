"""The runner interface and LocalRunner, driving the real harness on real CNN/DM stories."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.run_folder import CANCELLED, FAILED, RUNNING, SUCCEEDED, progress_from_texts
from resources.runners import LocalRunner, RunHandle


def _spec(dataset: Path, run_id: str, **kw) -> RunSpec:
    base = dict(
        run_id=run_id, node="local", scenario="Offline", mode="performance", benchmark="llama3.1-8b",
        backend="extractive", dataset_path=str(dataset), settings={"min_duration_ms": 200, "min_query_count": 5},
        progress_interval_s=0.2,
    )  # fmt: skip
    base.update(kw)
    return RunSpec(**base)


@pytest.fixture(scope="module")
def dataset(stories_dir, tmp_path_factory) -> Path:
    from mlperf_assets.harness.dataset import prepare_dataset

    out = tmp_path_factory.mktemp("ds") / "prepared.json"
    return prepare_dataset("stories", stories_dir, out, benchmark="llama3.1-8b", tokenizer="byte", max_samples=5)


def test_argv_is_one_element_per_value():
    spec = RunSpec(
        run_id="r1", node="n; rm -rf /", scenario="Server", mode="accuracy", benchmark="llama3.1-8b",
        backend="vllm", dataset_path="/d/x y.json", engine_args={"dtype": "bfloat16", "tp": 2, "flag": "true"},
        settings={"target_qps": 4.5, "ttft_latency_ms": None}, max_samples=7,
    )  # fmt: skip
    argv = spec.harness_argv("/py", "/out dir")
    assert argv[:4] == ["/py", "-m", "mlperf_assets.harness", "run"]
    pairs = dict(zip(argv[4::2], argv[5::2]))
    assert pairs["--node"] == "n; rm -rf /"  # passed verbatim as one element: no shell involved
    assert pairs["--dataset"] == "/d/x y.json" and pairs["--output-dir"] == "/out dir"
    assert pairs["--target-qps"] == "4.5" and "--ttft-latency-ms" not in argv
    assert pairs["--max-samples"] == "7"
    engine = [argv[i + 1] for i, a in enumerate(argv) if a == "--engine-arg"]
    # strings stay strings (a JSON-looking string is quoted so the harness does not turn it into a bool)
    assert engine == ["dtype=bfloat16", "tp=2", 'flag="true"']
    assert RunSpec.from_json(spec.to_json()) == spec


def test_spec_rejects_unknown_setting_and_bad_run_id(tmp_path):
    with pytest.raises(ValueError, match="unknown scenario setting"):
        _spec(tmp_path, "r", settings={"min_durration_ms": 1})
    with pytest.raises(ValueError, match="run_id"):
        _spec(tmp_path, "../escape")


def test_progress_from_texts():
    text = '{"elapsed_s": 1.0, "completed": 3, "total": 10, "tokens_per_s": 5.0}\n{"elapsed_s": 2.0, "compl'
    p = progress_from_texts(text, None, alive=True)
    assert (p.state, p.completed, p.total, p.fraction) == (RUNNING, 3, 10, 0.3)  # torn last line ignored
    assert progress_from_texts(text, "0\n", alive=False).state == SUCCEEDED
    assert progress_from_texts(text, "1\n", alive=False).state == FAILED
    assert progress_from_texts(text, "130\n", alive=False).state == CANCELLED
    lost = progress_from_texts(text, None, alive=False)
    assert lost.state == FAILED and "without recording an exit code" in lost.message


def test_local_run_succeeds_and_collects(dataset, tmp_path):
    runner = LocalRunner(node="local", workdir=str(tmp_path / "work"), poll_interval_s=0.1)
    handle = runner.start(_spec(dataset, "ok-run"))
    seen = []
    final = runner.wait(handle, seen.append, timeout_s=120)
    assert final.state == SUCCEEDED and final.exit_code == 0, runner.log_tail(handle)
    assert final.final and final.completed >= 5
    assert seen[-1] == final
    dest = runner.collect(handle, tmp_path / "artifacts" / "performance")
    names = {p.name for p in dest.iterdir()}
    assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt", "run_manifest.json", "progress.jsonl", "exit_code"} <= names
    manifest = json.loads((dest / "run_manifest.json").read_text())
    assert (manifest["run_id"], manifest["node"], manifest["exit_status"]) == ("ok-run", "local", "completed")
    # a handle survives serialization: a new runner (another process) can still judge the finished run
    other = LocalRunner(node="local", workdir=str(tmp_path / "work"))
    assert other.poll(RunHandle.from_dict(handle.to_dict())).state == SUCCEEDED
    runner.discard(handle)
    assert not Path(handle.run_dir).exists()


def test_local_run_failure_is_reported(dataset, tmp_path):
    runner = LocalRunner(node="local", workdir=str(tmp_path / "work"), poll_interval_s=0.1)
    # an unknown LoadGen model name is refused by the harness (exit code 2)
    handle = runner.start(_spec(dataset, "bad-run", benchmark="gptj"))
    final = runner.wait(handle, timeout_s=120)
    assert final.state == FAILED and final.exit_code == 2
    assert "the harness exited with code 2" in final.message
    assert runner.log_tail(handle).strip()


def test_local_cancel_stops_the_process_group(dataset, tmp_path):
    runner = LocalRunner(node="local", workdir=str(tmp_path / "work"), poll_interval_s=0.1, cancel_grace_s=10)
    spec = _spec(dataset, "long-run", scenario="Server", settings={"target_qps": 5, "min_duration_ms": 120000})
    handle = runner.start(spec)
    deadline = time.monotonic() + 60
    while runner.poll(handle).completed < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert runner.poll(handle).state == RUNNING
    started = time.monotonic()
    runner.cancel(handle)
    assert time.monotonic() - started < 15
    final = runner.poll(handle)
    assert final.state == CANCELLED
    manifest = json.loads((Path(handle.run_dir) / "run_manifest.json").read_text())
    assert manifest["exit_status"] == "interrupted"


def test_start_refuses_missing_dataset(tmp_path):
    from resources.runners import RunnerError

    runner = LocalRunner(node="local", workdir=str(tmp_path / "work"))
    with pytest.raises(RunnerError, match="prepared dataset .* does not exist"):
        runner.start(_spec(tmp_path / "nope.json", "r"))


def test_a_python_without_the_harness_fails_with_pythons_own_line(dataset, tmp_path, monkeypatch):
    """A node whose ``python:`` cannot import the harness (a real bare venv: standard library only) fails the
    partition with Python's "No module named ..." line as the reason, not "exited with code 1" alone."""
    import venv

    from mlperf_assets.config import load_config
    from mlperf_assets.plan import PartitionPlan
    from resources.runners import build_runner
    from resources.runners.ledger import PartitionRun, PartitionRunError

    venv.create(tmp_path / "bare", with_pip=False)
    python = tmp_path / "bare" / "bin" / "python"
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the bare interpreter must not see the project
    path = tmp_path / "config.yaml"
    path.write_text(
        f"storage: {{artifact_root: '{tmp_path}/art', duckdb_path: '{tmp_path}/r.duckdb'}}\n"
        f"dataset: {{source: local, path: '{dataset}'}}\n"
        "benchmark:\n  model: llama3.1-8b\n  checkpoint: null\n  backend: extractive\n  progress_interval_s: 0.2\n"
        "  scenarios:\n    Offline: {min_duration_ms: 200, min_query_count: 5}\n"
        f"nodes: [{{name: local, runner: local, python: '{python}'}}]\n")
    config = load_config(path, use_env_dataset=False)
    run = PartitionRun(build_runner(config.node("local")), PartitionPlan(config, "local", "Offline", dataset),
                       log=logging.getLogger("test"), dagster_run_id="d1")
    with pytest.raises(PartitionRunError) as caught:
        run.run()
    message = str(caught.value)
    assert "failed: the harness exited with code 1: " in message, message
    assert (f"{python}: Error while finding module specification for 'mlperf_assets.harness' "
            "(ModuleNotFoundError: No module named 'mlperf_assets')") in message, message
