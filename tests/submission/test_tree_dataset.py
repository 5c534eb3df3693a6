"""A result whose prepared dataset is not MLPerf's official evaluation set says so in the submission tree (issue 22
item 4): real runs (local node, replay backend, real LoadGen, Offline) on 13,368 samples made of the 20 real CNN/DM
stories of ../shared/testdata. Repeated articles: the scenario README lists it under NOT A SUBMISSION RUN and
``mlperf-dagster submission`` prints a note; 13,368 distinct articles: neither."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.config import load_config
from mlperf_assets.harness.benchmarks import BENCHMARKS
from mlperf_assets.harness.dataset import META_KEY, load_prepared, prepare_dataset

pytestmark = pytest.mark.slow
FULL = BENCHMARKS["llama3.1-8b"].dataset_size  # 13,368
NOTE = "not the official llama3.1-8b evaluation set"
SUBMISSION = """\
submission: {submitter: TestOrg, system_name: test-cpu, host_storage_type: SSD, host_storage_capacity: 1 TB,
  host_memory_configuration: unknown, host_networking: none, host_networking_topology: N/A,
  host_network_card_count: "0", accelerator_host_interconnect: N/A, accelerator_interconnect: N/A,
  accelerator_memory_configuration: N/A, cooling: air}
"""


@pytest.fixture(scope="module")
def stories(stories_dir: Path, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("stories") / "stories.json"
    return load_prepared(prepare_dataset("stories", stories_dir, out, tokenizer="byte")).samples


def _run(folder: Path, samples: list[dict]):
    """A 13,368-sample prepared file (byte tokenizer; short token lists keep it small), and one real Offline pipeline run on it."""
    from mlperf_assets.commands.pipeline import run_pipeline

    data = folder / "cnn_eval.json"
    data.write_text(json.dumps([{"id": s["id"], "input": s["input"], "instruction": s["instruction"],
                                 "output": s["output"], "tok_input": s["tok_input"][:8],
                                 "tok_output": s["tok_output"][:8], META_KEY: s[META_KEY]} for s in samples]))
    path = folder / "config.yaml"
    path.write_text(
        f"storage: {{artifact_root: '{folder}/art', duckdb_path: '{folder}/r.duckdb', report_dir: '{folder}/rep'}}\n"
        f"dataset: {{source: local, path: '{data}'}}\n"
        "benchmark:\n  model: llama3.1-8b\n  checkpoint: null\n  backend: replay\n  progress_interval_s: 0.5\n"
        "  scenarios:\n    Offline: {min_duration_ms: 10, min_query_count: 20, target_qps: 1000000}\n"
        "nodes: [{name: local, runner: local}]\n" + SUBMISSION)
    config = load_config(path, use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False, report=False)
    assert all(p.success for p in outcome.partitions), outcome
    return config


def _readme(tree) -> str:
    return (tree.submitter_dir / "results" / "test-cpu" / "llama3.1-8b" / "Offline" / "README.md").read_text()


def test_a_repeated_set_is_named_in_the_readme_and_by_the_command(stories, tmp_path):
    from mlperf_assets.submission import build_tree

    config = _run(tmp_path, [stories[i % len(stories)] for i in range(FULL)])
    tree = build_tree(config, tmp_path / "tree")
    readme = _readme(tree)
    assert "NOT A SUBMISSION RUN" in readme
    line = next(ln for ln in readme.splitlines() if NOTE in ln)
    assert line == (f"- the dataset cnn_eval.json: {NOTE} (13,368 distinct CNN/DM validation articles): 20 distinct "
                    "articles, 20 distinct CNN/DM ids; its results are not comparable with MLPerf's")
    proc = subprocess.run([sys.executable, "-m", "mlperf_assets.cli", "submission", "--config",
                           str(config.source_path), "--out", str(tmp_path / "t2"), "--no-check"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    run_id = tree.results[0].run_id
    assert f"  note: local/Offline/{run_id}: the dataset cnn_eval.json: {NOTE}" in proc.stdout


def test_distinct_articles_carry_no_note(stories, tmp_path):
    from mlperf_assets.submission import build_tree

    distinct = [{**s, "input": f"{s['input']} ({i})"} for i, s in
                enumerate(stories[i % len(stories)] for i in range(FULL))]
    for i, s in enumerate(distinct):
        s["id"] = f"{i:040x}"  # distinct CNN/DM-like ids as well
    config = _run(tmp_path, distinct)
    tree = build_tree(config, tmp_path / "tree")
    assert tree.dataset_notes == {}
    assert NOTE not in _readme(tree) and "dataset" not in _readme(tree).split("NOT A SUBMISSION RUN")[-1]
