"""A "full" prepared dataset is checked to be MLPerf's official evaluation set (issue 22 item 5, faithfulness_3
section 6d): 20 real CNN/DM articles repeated to 13,368 samples passed every dataset check before; now the
``official_dataset`` asset check warns, saying what differs. A subset is a smoke set by choice and is not checked.
Real CNN/DM stories (../shared/testdata/cnn_dailymail), a real Dagster materialization."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.assets.dataset import cnn_dailymail_dataset
from mlperf_assets.config import load_config
from mlperf_assets.harness.benchmarks import BENCHMARKS
from mlperf_assets.harness.dataset import load_prepared, official_set, prepare_dataset
from resources.mlperf_config import MlperfConfigResource

FULL = BENCHMARKS["llama3.1-8b"].dataset_size  # 13,368


@pytest.fixture(scope="module")
def stories(stories_dir: Path, tmp_path_factory) -> list[dict]:
    """The 20 real stories as prepared samples (byte tokenizer): ids are their CNN/DM ids (the .story names)."""
    out = tmp_path_factory.mktemp("stories") / "stories.json"
    return load_prepared(prepare_dataset("stories", stories_dir, out, tokenizer="byte")).samples


def _repeated(samples: list[dict], n: int) -> list[dict]:
    return [samples[i % len(samples)] for i in range(n)]


def test_twenty_articles_repeated_to_the_full_size_are_not_the_official_set(stories):
    passed, meta = official_set(_repeated(stories, FULL), "llama3.1-8b", None)
    assert not passed
    assert (meta["samples"], meta["distinct_articles"], meta["distinct_cnndm_ids"]) == (FULL, 20, 20)
    assert meta["note"] == ("not the official llama3.1-8b evaluation set (13,368 distinct CNN/DM validation articles): "
                            "20 distinct articles, 20 distinct CNN/DM ids; its results are not comparable with "
                            "MLPerf's")


def test_a_full_set_of_distinct_articles_passes_and_a_short_one_does_not(stories):
    # distinct article texts with no CNN/DM ids, as MLCommons' cnn_eval.json is (it keeps none)
    distinct = [{"input": f"{s['input']} ({i})", "output": s["output"]}
                for i, s in enumerate(_repeated(stories, FULL))]
    assert official_set(distinct, "llama3.1-8b", None) == (True, {
        "samples": FULL, "official_samples": FULL, "distinct_articles": FULL, "distinct_cnndm_ids": "not kept",
        "note": "13,368 distinct articles"})
    passed, meta = official_set(distinct[:-1], "llama3.1-8b", None)
    assert not passed and "13367 samples, 13367 distinct articles" in meta["note"]
    # the edge benchmark's official set is 5,000 articles: 13,368 is not it
    passed, meta = official_set(distinct, "llama3.1-8b-edge", None)
    assert not passed and meta["note"].startswith("not the official llama3.1-8b-edge evaluation set (5,000 distinct")


def test_a_subset_is_a_smoke_set_and_is_not_checked(stories):
    passed, meta = official_set(stories, "llama3.1-8b", 20)
    assert passed and meta["note"] == "a subset (dataset.max_samples 20): not checked"


def test_the_asset_check_warns_on_a_replicated_full_set(stories, tmp_path):
    """The peer check's reproduction: a 13,368-sample file of 20 articles, used as the dataset (source: local, no
    max_samples) passed sample_count, no_empty_articles and token_lengths; the new check warns."""
    data = tmp_path / "replicated.json"
    fields = ("id", "input", "instruction", "output")  # a bare cnn_eval.json-like list (short token lists: smaller)
    data.write_text(json.dumps([{**{k: s[k] for k in fields}, "tok_input": s["tok_input"][:8],
                                 "tok_output": s["tok_output"][:8]} for s in _repeated(stories, FULL)]))
    path = tmp_path / "config.yaml"
    path.write_text(f"storage: {{artifact_root: '{tmp_path}/art', duckdb_path: '{tmp_path}/r.duckdb'}}\n"
                    f"dataset: {{source: local, path: '{data}'}}\n"
                    "benchmark: {backend: extractive, checkpoint: null}\n"
                    "nodes: [{name: local, runner: local}]\n")
    config = load_config(path, use_env_dataset=False)
    result = dg.materialize([cnn_dailymail_dataset],
                            resources={"mlperf_config": MlperfConfigResource.for_config(config)})
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "sample_count": True, "no_empty_articles": True, "token_lengths": True, "official_dataset": False}
    official = checks["official_dataset"]
    assert official.severity == dg.AssetCheckSeverity.WARN
    assert official.metadata["distinct_articles"].value == 20
    assert "not the official llama3.1-8b evaluation set" in official.metadata["note"].value
