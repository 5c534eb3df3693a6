"""A point's run folder -> figures as the Endpoints checker computes them, accuracy re-scored, into DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlperf_assets.accuracy import score_texts
from mlperf_assets.endpoints.results import (
    PointResultsError,
    checker_figures,
    formula_figures,
    read_point,
)
from tests.support.endpoints_points import (
    ACCURACY_SCORES,
    DATASET,
    full_curve,
    result_summary,
    run_manifest,
    tpot_ms,
    write_point,
)


def test_figures_are_the_checkers_own(tmp_path: Path) -> None:
    from submission_checker.models.file.point_summary import PointSummary

    summary = result_summary(64)
    checker = PointSummary.model_validate(summary)
    ours = checker_figures(summary)
    assert ours["system_tps"] == pytest.approx(checker.system_tps, rel=1e-12)
    assert ours["tpot_p90_ms"] == pytest.approx(checker.tpot_p90_ms, rel=1e-12)
    assert ours["tps_per_user"] == pytest.approx(1000 / checker.tpot_p90_ms, rel=1e-12)
    assert ours["tps_per_user"] == pytest.approx(1000 / tpot_ms(64), rel=1e-9)
    assert ours["ttft_p90_ms"] == pytest.approx(checker.ttft_p90_ms, rel=1e-12)
    # the formulas used without the checker installed give the same numbers
    assert formula_figures(summary) == pytest.approx(ours, rel=1e-12)
    # "90" and "90.0" are the same percentile to the checker, and to us
    summary["tpot"]["percentiles"] = {"90": summary["tpot"]["percentiles"]["90.0"]}
    assert formula_figures(summary)["tps_per_user"] == pytest.approx(ours["tps_per_user"])
    # no TPOT P90 (a dedicated Offline run, or a client without a tokenizer): no tps_per_user, never a made-up one
    summary["tpot"] = {"percentiles": {}}
    assert checker_figures(summary)["tps_per_user"] is None and formula_figures(summary)["tps_per_user"] is None


def test_read_point_row(tmp_path: Path) -> None:
    folder = write_point(tmp_path / "p", 16, role="mandatory_medium", region="med_concurrency", accuracy=True,
                         run_manifest=run_manifest("c16", "gpu-node-1", energy_j=900_000.0))
    point = read_point(folder)
    row, summary = point.row, point.summary
    assert row["run_id"] == "run-c16" and row["node"] == "gpu-node-1" and row["concurrency"] == 16
    assert row["n_samples_issued"] == summary["n_samples_issued"] and row["n_samples_issued"] % DATASET == 0
    assert row["system_tps"] == pytest.approx(summary["output_sequence_lengths"]["total"]
                                              / (summary["duration_ns"] / 1e9))
    assert row["client_tps"] == pytest.approx(row["system_tps"])  # the client's own figure agrees
    assert row["scheduler_rng_seed"] == 10487924139932647040  # > 2^63, kept exact
    assert row["official"] is True
    assert row["energy_j_per_token"] == pytest.approx(900_000.0 / row["output_tokens"])
    client = {r["metric"]: r for r in point.accuracy if r["source"] == "client"}
    assert client["rouge1"]["value"] == ACCURACY_SCORES["rouge1"] and client["rouge1"]["passed"] is True
    assert client["gen_len"]["passed"] is True and client["gen_len"]["n_samples"] == DATASET


def _accuracy_phase(folder: Path, predictions: list[str]) -> None:
    """The accuracy phase as the client logs it: sample_idx_map.json and sample.complete events (streamed chunks)."""
    report = folder / "report_accuracy"
    (report / "accuracy").mkdir(parents=True, exist_ok=True)
    uuids = {f"u{i:04d}": i for i in range(len(predictions))}
    (report / "sample_idx_map.json").write_text(json.dumps({"performance": {}, "cnn_dailymail::llama3_8b": uuids}))
    with (report / "events.jsonl").open("w") as f:
        for uuid, i in reversed(list(uuids.items())):  # completion order is not dataset order
            text = predictions[i]
            chunks = [text[:5], text[5:]]
            f.write(json.dumps({"event_type": "sample.issued", "sample_uuid": uuid, "data": None}) + "\n")
            f.write(json.dumps({"event_type": "sample.complete", "timestamp_ns": 1, "sample_uuid": uuid,
                                "data": ["TextModelOutput", chunks]}) + "\n")


def test_accuracy_rescored_with_our_rouge(tmp_path: Path, cnn_dir: Path) -> None:
    rows = [line.rstrip("\n").split("\t") for line in (cnn_dir / "cnndm_test_mini_100.tsv").open()][:30]
    predictions = (cnn_dir / "cnndm_test_mini_100.bart_output.txt").read_text().splitlines()[:30]
    references = [r[1] for r in rows]
    folder = write_point(tmp_path / "p", 4, role="mandatory_low", region="low_concurrency", accuracy=True)
    _accuracy_phase(folder, predictions)
    point = read_point(folder, references=references)
    ours = {r["metric"]: r["value"] for r in point.accuracy if r["source"] == "ours"}
    expected = score_texts(predictions, references, quoted=False)
    assert ours["rouge1"] == expected["rouge1"] and ours["rougeLsum"] == expected["rougeLsum"]
    # gen_len counts characters of the postprocessed predictions, as MLCommons' evaluation.py does
    assert ours["gen_len"] == expected["gen_len"] and ours["gen_len"] > 20 * len(predictions)
    assert {r["source"] for r in point.accuracy} == {"client", "ours"}


def test_bad_folders_one_line(tmp_path: Path) -> None:
    folder = write_point(tmp_path / "p", 4)
    (folder / "report" / "performance" / "result_summary.json").write_text("{not json")
    with pytest.raises(PointResultsError, match=r"result_summary.json: not readable JSON") as info:
        read_point(folder)
    assert "\n" not in str(info.value)
    (folder / "report" / "performance" / "result_summary.json").unlink()
    with pytest.raises(PointResultsError, match=r"result_summary.json: missing"):
        read_point(folder)
    (folder / "report" / "performance" / "result_summary.json").write_text(json.dumps({"duration_ns": 5}))
    with pytest.raises(PointResultsError, match=r"result_summary.json: the Endpoints checker cannot read it"):
        read_point(folder)


def test_ingest_into_duckdb(tmp_path: Path) -> None:
    from resources.store import ResultsStore

    folders = full_curve(tmp_path / "runs")
    store = ResultsStore(path=str(tmp_path / "db" / "results.duckdb"))
    for folder in folders:
        store.ingest_endpoint_point(folder)
    store.ingest_endpoint_point(folders[0])  # re-ingest replaces, never duplicates
    points = store.endpoint_points()
    assert len(points) == 8 and points["run_id"].is_unique
    c64 = points[points["concurrency"] == 64].iloc[0]
    assert c64["tps_per_user"] == pytest.approx(1000 / tpot_ms(64))
    assert int(c64["sample_index_rng_seed"]) == 586478644936801402
    accuracy = store.endpoint_accuracy("source = 'client' AND metric = 'rouge1'")
    assert len(accuracy) == 5 and accuracy["passed"].all()
    assert store.endpoint_points("concurrency > ?", [100])["concurrency"].tolist() == [128, 256]


def test_single_number_scorer_kept_as_score(tmp_path: Path) -> None:
    """The client's string_match / pass_at_1 scorers write one number, not ROUGE: it is stored as "score"."""
    folder = write_point(tmp_path / "p", 1, accuracy=True)
    path = folder / "report_accuracy" / "accuracy" / "accuracy_results.json"
    data = json.loads(path.read_text())
    data["accuracy_scores"][0]["score"] = 0.25
    path.write_text(json.dumps(data))
    rows = read_point(folder).accuracy
    assert [(r["source"], r["metric"], r["value"], r["passed"]) for r in rows] == [("client", "score", 0.25, None)]
