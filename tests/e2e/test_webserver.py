"""`dagster-webserver` on a free loopback port serves the code location: GraphQL lists the assets and shows the
materializations a demo run recorded in the same (temporary) Dagster instance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture()
def demo_home(tmp_path, stories_dir):
    """A Dagster home holding one `mlperf-dagster demo` run (Offline only, on the real stories)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    config = tmp_path / "config.yaml"
    config.write_text(
        "storage: {artifact_root: out/artifacts, duckdb_path: out/mlperf.duckdb, report_dir: out/report}\n"
        "dataset: {source: huggingface, max_samples: 6}\n"
        "benchmark: {model: llama3.1-8b, checkpoint: null, backend: extractive, progress_interval_s: 0.2,\n"
        "  scenarios: {Offline: {min_duration_ms: 200, min_query_count: 6}}}\n"
        "nodes: [{name: local, runner: local}]\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLPERF_DAGSTER_CONFIG": str(config)}
    env.pop("MLPERF_DAGSTER_DATASET", None)
    demo = subprocess.run(
        [str(BIN / "mlperf-dagster"), "demo", "--config", str(config), "--dataset", str(stories_dir), "--no-progress"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "1/1 partitions succeeded" in demo.stdout
    # the webserver's code location must see the same dataset override as the demo did
    env["MLPERF_DAGSTER_DATASET"] = str(stories_dir)
    return home, env


def test_graphql_lists_assets_and_demo_materializations(demo_home):
    home, env = demo_home
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, "dagster-webserver exited early"
                assert time.monotonic() < deadline, "dagster-webserver did not start in 180 s"
                time.sleep(0.5)
        nodes = _graphql(port, "{ assetNodes { assetKey { path } } }")["assetNodes"]
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert keys == {"cnn_dailymail_dataset", "scenario_run", "loadgen_results", "accuracy_scores", "benchmark_charts",
                        "benchmark_report", "max_qps_search", "submission_package"}

        query = """{ assetOrError(assetKey: {path: ["%s"]}) { ... on Asset { assetMaterializations(limit: 1) {
            runId partition metadataEntries { label ... on PathMetadataEntry { path } ... on TextMetadataEntry { text } }
        } } } }"""
        run = _graphql(port, query % "scenario_run")["assetOrError"]["assetMaterializations"]
        assert len(run) == 1
        assert run[0]["partition"] == "local|Offline"
        entries = {e["label"]: e for e in run[0]["metadataEntries"]}
        assert Path(entries["artifacts"]["path"]).is_dir()
        assert entries["result_validity"]["text"] in ("VALID", "INVALID")

        report = _graphql(port, query % "benchmark_report")["assetOrError"]["assetMaterializations"]
        path = {e["label"]: e for e in report[0]["metadataEntries"]}["path"]["path"]
        assert Path(path).read_text().startswith("# MLPerf Inference LLM results")
        runs = _graphql(port, '{ runsOrError { ... on Runs { results { runId status jobName } } } }')
        statuses = {(r["jobName"], r["status"]) for r in runs["runsOrError"]["results"]}
        assert statuses == {("dataset_job", "SUCCESS"), ("benchmark_job", "SUCCESS"), ("report_job", "SUCCESS")}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
