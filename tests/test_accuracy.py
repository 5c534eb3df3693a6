"""mlperf_assets.accuracy against the reference procedure (nltk + rouge_score, as MLCommons evaluation.py runs it)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from mlperf_assets import accuracy as acc
from mlperf_assets.accuracy import AccuracyError, AccuracyLogError

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# The MLCommons submission checker's patterns (submission_checker/constants.py ACC_PATTERN) and hash line, verbatim.
CHECKER = {
    "rouge1": r".*'rouge1':\s+'?([\d.]+)'?.*",
    "rouge2": r".*'rouge2':\s+'?([\d.]+)'?.*",
    "rougeL": r".*'rougeL':\s+'?([\d.]+)'?.*",
    "rougeLsum": r".*'rougeLsum':\s+'?([\d.]+)'?.*",
    "gen_len": r".*'gen_len':\s([\d.]+).*",
}
CHECKER_HASH = r"^hash=([\w\d]+)$"


# ------------------------------------------------------------------------------------------- the reference procedure
def reference_evaluation(predictions, references, quoted=True):
    """What language/llama3.1-8b/evaluation.py does after detokenizing, with rouge_score in place of
    evaluate.load('rouge') (which runs the same RougeScorer per pair and returns the F-measures)."""
    import nltk
    import numpy as np
    from rouge_score import rouge_scorer

    from mlperf_assets.harness.sentences import ensure_punkt

    ensure_punkt()  # only makes NLTK's English punkt data findable offline
    preds = ["\n".join(nltk.sent_tokenize(p.strip())) for p in predictions]
    refs = ["\n".join(nltk.sent_tokenize(r.strip())) for r in references]
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    scores = [scorer.score(r, p) for r, p in zip(refs, preds)]
    if quoted:
        result = {k: f"{round(np.mean([s[k].fmeasure for s in scores]) * 100, 4)}" for k in METRICS}
    else:
        result = {k: float(round(np.mean([s[k].fmeasure for s in scores]) * 100, 4)) for k in METRICS}
    result["gen_len"] = int(np.sum([len(p) for p in preds]))
    result["gen_num"] = len(preds)
    return result, scores, preds, refs


@pytest.fixture(scope="module")
def bart(cnn_dir: Path):
    """(predictions, references): the real BART outputs and the CNN/DM test references they summarize."""
    rows = (cnn_dir / "cnndm_test_mini_100.tsv").read_text(encoding="utf-8").split("\n")
    refs = [row.split("\t")[1] for row in rows if row]
    preds = (cnn_dir / "cnndm_test_mini_100.bart_output.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(refs) == len(preds) == 100
    return preds, refs


@pytest.fixture(scope="module")
def bart_reference(bart):
    return reference_evaluation(*bart)


# ------------------------------------------------------------------------------------------------- text-level scores
@pytest.mark.parametrize("engine, workers", [("rouge-score-rs", 1), ("rouge-score-rs", 2), ("rouge-score", 1)])
def test_per_pair_scores_identical_to_rouge_score(bart_reference, engine, workers):
    _, ref_scores, preds, refs = bart_reference
    ours = acc.rouge_pairs(refs, preds, workers=workers, engine=engine)  # workers=2: rs scores the batch natively
    for m in METRICS:
        expected = [(s[m].precision, s[m].recall, s[m].fmeasure) for s in ref_scores]
        assert ours[m] == expected, m  # exact float equality, pair by pair


def test_postprocessing_matches_reference(bart, bart_reference):
    _, _, preds, refs = bart_reference
    assert acc.postprocess_texts(bart[0], workers=1) == preds
    assert acc.postprocess_texts(bart[1], workers=1) == refs
    assert sum(p.count("\n") for p in preds) > 100  # the sentence split really happened


def test_score_texts_equals_reference_result(bart, bart_reference):
    expected = bart_reference[0]
    assert acc.score_texts(*bart) == expected
    assert acc.score_texts(*bart, engine="rouge-score") == expected
    # sanity against the published picture: BART on CNN/DM scores in the 30s-40s for ROUGE-1, far above ROUGE-2
    assert 25 < float(expected["rouge1"]) < 50 and float(expected["rouge2"]) < float(expected["rouge1"])


def test_process_pool_gives_the_same_result(bart, bart_reference, monkeypatch):
    monkeypatch.setattr(acc, "_MIN_TEXTS_FOR_POOL", 10)  # use the pool even for these 100 pairs
    pools = []
    real_pool = acc._pool
    monkeypatch.setattr(acc, "_pool", lambda workers: pools.append(workers) or real_pool(workers))
    preds, refs = bart
    expected = bart_reference[0]
    assert acc.score_texts(preds, refs, workers=2) == expected
    assert acc.score_texts(preds, refs, workers=2, engine="rouge-score") == expected
    pooled = acc.rouge_pairs(bart_reference[3], bart_reference[2], workers=2, engine="rouge-score")
    assert pooled == acc.rouge_pairs(bart_reference[3], bart_reference[2], workers=1, engine="rouge-score")
    assert pools == [2, 2, 2, 2]  # split x2, split + rouge_score, rouge_score: the pool really ran


def _score_in_child(preds, refs, queue):
    try:
        queue.put(acc.score_texts(preds, refs, workers=2))
    except BaseException as exc:  # report, do not hang the parent
        queue.put(f"{type(exc).__name__}: {exc}")


def test_daemonic_process_scores_without_a_pool(bart, bart_reference, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(acc, "_MIN_TEXTS_FOR_POOL", 10)  # inherited by the forked child
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_score_in_child, args=(*bart, queue), daemon=True)  # daemons may not have children
    child.start()
    result = queue.get(timeout=120)
    child.join(timeout=30)
    assert result == bart_reference[0]


@pytest.mark.parametrize(
    "pred, ref",
    [
        ("", "the cat sat on the mat ."),
        ("the cat sat on the mat .", ""),
        ("", ""),
        ("...", "!!! ???"),
        ("   \n  ", "a b c"),
        ("Zürich: Ärzte warnen vor Hitze. Straße gesperrt.", "Zürich Ärzte warnen. Die Straße ist gesperrt."),
        ("東京で地震。被害なし。", "東京 地震 被害"),
        ("Running runners ran. They were running!", "The runner runs. He ran quickly."),
    ],
)
def test_edge_cases_match_reference(pred, ref):
    preds = [pred, "the quick brown fox ."]
    refs = [ref, "a quick brown dog ."]
    expected, ref_scores, *_ = reference_evaluation(preds, refs)
    assert acc.score_texts(preds, refs, workers=1) == expected
    pp = acc.postprocess_texts(preds, workers=1)
    rr = acc.postprocess_texts(refs, workers=1)
    ours = acc.rouge_pairs(rr, pp, workers=1)
    for m in METRICS:
        assert ours[m] == [(s[m].precision, s[m].recall, s[m].fmeasure) for s in ref_scores]


def test_gptj_style_prints_numbers_and_plain_ints(bart):
    expected = reference_evaluation(*bart, quoted=False)[0]
    results = acc.score_texts(*bart, quoted=False)
    assert results == expected
    text = acc.format_results(results)
    assert "np." not in text and "'rouge1': '" not in text
    assert type(results["gen_len"]) is int and type(results["gen_num"]) is int


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(AccuracyError, match="2 predictions but 1 references"):
        acc.score_texts(["a", "b"], ["a"])
    with pytest.raises(AccuracyError, match="no predictions"):
        acc.score_texts([], [])


# ------------------------------------------------------------------------------------------------------------ targets
def test_thresholds_are_the_checker_constants():
    # (metric -> threshold) from the MLCommons checker: reference score x 0.99 (0.999), gen_len x 0.9 / x 1.1
    expected = {
        "llama3.1-8b": {"rouge1": 38.391408, "rouge2": 15.748425, "rougeL": 24.250743, "rougeLsum": 35.43507,
                        "gen_len": (7350879.6, 8984408.4)},
        "llama3.1-8b-edge": {"rouge1": 38.6694, "rouge2": 15.953553, "rougeL": 24.391125, "rougeLsum": 35.76276,
                             "gen_len": (2746001.7, 3356224.3)},
        "gptj-99": {"rouge1": 42.556635, "rouge2": 19.922265, "rougeL": 29.688219, "gen_len": (3615190.2, None)},
        "gptj-99.9": {"rouge1": 42.9435135, "rouge2": 20.1033765, "rougeL": 29.9581119,
                      "gen_len": (3615190.2, None)},
    }
    assert set(acc.TARGETS) == set(expected)
    for name, want in expected.items():
        got = acc.TARGETS[name].thresholds()
        assert set(got) == set(want), name
        for metric, value in want.items():
            if metric == "gen_len":
                assert got[metric][0] == pytest.approx(value[0]) and (
                    got[metric][1] == pytest.approx(value[1]) if value[1] else got[metric][1] is None)
            else:
                assert got[metric] == (pytest.approx(value), None), (name, metric)
    assert acc.TARGETS["llama3.1-8b"].dtype == "int32" and acc.TARGETS["gptj-99"].dtype == "int64"


def test_checks_compare_printed_values_like_the_checker():
    target = acc.resolve_target("llama3.1-8b")
    good = {"rouge1": "38.3915", "rouge2": "15.7485", "rougeL": "24.2508", "rougeLsum": "35.4351",
            "gen_len": 8984408, "gen_num": 13368}
    checks = acc.check_results(good, target)
    assert all(c["passed"] for c in checks.values()), checks
    # 38.3914 prints below 38.7792 * 0.99 = 38.391408: a miss, exactly as the checker's float(acc) >= target
    bad = {**good, "rouge1": "38.3914", "gen_len": 8984409}
    checks = acc.check_results(bad, target)
    assert not checks["rouge1"]["passed"] and not checks["gen_len"]["passed"]
    assert checks["rouge2"]["passed"] and checks["gen_len"]["max"] == pytest.approx(8984408.4)
    assert not acc.check_results({**good, "gen_len": 7350879}, target)["gen_len"]["passed"]
    gptj = acc.check_results({"rouge1": 43.1, "rouge2": 20.11, "rougeL": 29.97, "rougeLsum": 40.2,
                              "gen_len": 99_000_000, "gen_num": 13368}, acc.resolve_target("gptj-99.9"))
    assert gptj["gen_len"]["passed"] and gptj["gen_len"]["max"] is None and "rougeLsum" not in gptj


def test_benchmark_aliases():
    assert acc.resolve_target("llama3_1-8b").benchmark == "llama3.1-8b"
    assert acc.resolve_target("gptj").benchmark == "gptj-99"
    assert acc.resolve_target("llama3_1-8b-edge").benchmark == "llama3.1-8b-edge"
    with pytest.raises(AccuracyError, match="unknown benchmark 'resnet'"):
        acc.resolve_target("resnet")


# ------------------------------------------------------------------------------------- accuracy log round trip (byte)
def _hex(ids, dtype="int32") -> str:
    import numpy as np

    return np.asarray(ids, dtype=dtype).tobytes().hex().upper()


def write_loadgen_log(path: Path, entries: list[tuple[int, list[int]]], dtype="int32", token_count=False) -> Path:
    """An accuracy log exactly as LoadGen's LogAccuracy writes it."""
    lines = []
    for seq, (qsl_idx, ids) in enumerate(entries):
        extra = f', "token_count" : {len(ids)}' if token_count else ""
        lines.append(f'{{ "seq_id" : {seq}, "qsl_idx" : {qsl_idx}, "data" : "{_hex(ids, dtype)}"{extra} }}')
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    return path


def write_dataset(path: Path, references: list[str], benchmark="llama3.1-8b") -> Path:
    samples = [
        {"id": str(i), "input": f"article {i}", "prompt": f"article {i}", "tok_input": [256, 97], "output": ref,
         "tok_output": list(ref.encode("utf-8"))}
        for i, ref in enumerate(references)
    ]
    doc = {"format": "mlperf-dagster-cnndm/1", "benchmark": benchmark, "tokenizer": "byte", "tokenizer_kind": "byte",
           "source": "test", "samples": samples}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture()
def roundtrip(tmp_path, bart):
    """A log of the BART outputs as byte-tokenizer ids (+ EOS 257), in shuffled order, with duplicated qsl_idx whose
    later copies hold other text (only the first counts)."""
    preds, refs = bart
    order = list(range(100))
    random.Random(3).shuffle(order)
    entries = [(i, [*preds[i].encode("utf-8"), 257]) for i in order]
    rng = random.Random(4)
    for i in order[:10]:
        first = next(k for k, (qsl, _) in enumerate(entries) if qsl == i)
        entries.insert(rng.randrange(first + 1, len(entries) + 1), (i, list(b"other text that must be ignored .")))
    log = write_loadgen_log(tmp_path / "mlperf_log_accuracy.json", entries)
    dataset = write_dataset(tmp_path / "dataset.json", refs)
    return log, dataset, order, len(entries)


def test_roundtrip_llama_log_with_byte_tokenizer(roundtrip, bart):
    log, dataset, order, n_entries = roundtrip
    preds, refs = bart
    report = acc.evaluate_accuracy_log(log, dataset, workers=1)
    expected = reference_evaluation([preds[i] for i in order], [refs[i] for i in order])[0]
    assert report.results == expected
    assert report.benchmark == "llama3.1-8b" and report.tokenizer == "byte" and report.dtype == "int32"
    assert report.log_entries == n_entries == 110 and report.duplicates_dropped == 10
    assert report.log_sha256 == hashlib.sha256(log.read_bytes()).hexdigest()
    assert not report.passed and not report.complete  # 100 BART summaries of other articles miss llama's targets
    assert not report.checks["rouge1"]["passed"] and not report.checks["gen_len"]["passed"]


def test_accuracy_txt_matches_checker_regexes(roundtrip, tmp_path):
    log, dataset, *_ = roundtrip
    report = acc.evaluate_accuracy_log(log, dataset, workers=1)
    out = acc.write_accuracy_txt(report, tmp_path / "accuracy" / "accuracy.txt")
    lines = out.read_text(encoding="utf-8").splitlines()
    found, hashes = {}, []
    for line in lines:  # as the checker reads it: re.match per line
        for metric, pattern in CHECKER.items():
            m = re.match(pattern, line)
            if m:
                found[metric] = m.group(1)
        m = re.match(CHECKER_HASH, line)
        if m:
            hashes.append(m.group(1))
    assert found == {m: str(report.results[m]) for m in CHECKER}
    assert hashes == [hashlib.sha256(log.read_bytes()).hexdigest()]
    assert "Results" in lines and "np." not in out.read_text()
    import ast

    result_line = next(line for line in lines if line.startswith("{"))
    assert ast.literal_eval(result_line) == report.results  # parses back to the same dict
    assert [p.name for p in out.parent.iterdir()] == ["accuracy.txt"]  # no temporary file left


def test_roundtrip_gptj_int64_prints_numbers(tmp_path, bart):
    preds, refs = bart
    log = write_loadgen_log(tmp_path / "log.json", [(i, list(preds[i].encode())) for i in range(20)], dtype="int64")
    dataset = write_dataset(tmp_path / "ds.json", refs, benchmark="gptj")
    report = acc.evaluate_accuracy_log(log, dataset, benchmark="gptj-99.9", workers=1)
    assert report.dtype == "int64" and report.benchmark == "gptj-99.9"
    assert report.results == reference_evaluation(preds[:20], refs[:20], quoted=False)[0]
    line = report.to_accuracy_txt().splitlines()[3]
    assert re.match(r"^\{'rouge1': \d+\.\d+, 'rouge2': ", line), line
    assert re.match(CHECKER["gen_len"], line).group(1) == str(report.results["gen_len"])


def test_identical_predictions_pass_rouge_targets(tmp_path, bart):
    _, refs = bart
    log = write_loadgen_log(tmp_path / "log.json", [(i, list(refs[i].encode())) for i in range(100)])
    report = acc.evaluate_accuracy_log(log, write_dataset(tmp_path / "ds.json", refs), workers=1)
    assert report.results["rouge1"] == "100.0" and report.results["rougeLsum"] == "100.0"
    assert all(report.checks[m]["passed"] for m in METRICS) and not report.checks["gen_len"]["passed"]


# ---------------------------------------------------------------------------------------------------------- bad input
def _truncated_logs(mlperf_logs_dir: Path) -> list[Path]:
    found = []
    for p in sorted(mlperf_logs_dir.glob("*/accuracy/mlperf_log_accuracy.json")):
        try:
            json.loads(p.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError:
            found.append(p)
    return found


def test_truncated_submission_log_is_refused_clearly(mlperf_logs_dir, tmp_path, bart):
    truncated = _truncated_logs(mlperf_logs_dir)
    assert truncated, "the shared logs should include a submission-truncated accuracy log"
    dataset = write_dataset(tmp_path / "ds.json", bart[1])
    for path in truncated:
        with pytest.raises(AccuracyLogError, match="truncated submission form") as info:
            acc.evaluate_accuracy_log(path, dataset, benchmark="gptj-99", workers=1)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_complete_test06_logs_decode_with_the_right_dtype(mlperf_logs_dir):
    logs = sorted(mlperf_logs_dir.glob("*llama3*8b*/compliance/TEST06/accuracy/mlperf_log_accuracy.json"))
    assert logs, "the shared logs should include a complete llama3.1-8b TEST06 accuracy log"
    for path in logs:
        raw = json.loads(path.read_text(encoding="utf-8"))
        log = acc.read_accuracy_log(path, "int32")
        assert log.total_entries == len(raw) and len(log.entries) == len({e["qsl_idx"] for e in raw})
        counts = {e["qsl_idx"]: e["token_count"] for e in raw}
        assert all(len(e.token_ids) == counts[e.qsl_idx] for e in log.entries)  # LoadGen's own token counts
        assert all(0 <= int(e.token_ids.max()) < 128_256 for e in log.entries)  # inside Llama 3's vocabulary
        with pytest.raises(AccuracyLogError, match="token data is int32, not int64"):
            acc.read_accuracy_log(path, "int64")


def test_qsl_idx_outside_dataset(mlperf_logs_dir, tmp_path, bart):
    path = next(iter(sorted(mlperf_logs_dir.glob("*llama3*8b*/compliance/TEST06/accuracy/mlperf_log_accuracy.json"))))
    dataset = write_dataset(tmp_path / "ds.json", bart[1])
    with pytest.raises(AccuracyLogError, match=r"qsl_idx \d+ is outside the dataset \(100 samples"):
        acc.evaluate_accuracy_log(path, dataset, tokenizer="byte", workers=1)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("[\n]\n", "holds no samples: a performance-mode run"),
        ('[\n{ "seq_id" : 0, "qsl_idx" : 0, "data" : "41000000" },\n{ "seq_id" : 1, "qsl', "not valid JSON"),
        ('{"a": 1}', "expected a JSON list"),
        ('[{"seq_id": 0, "data": "41000000"}]', "expected an object with 'qsl_idx' and 'data'"),
        ('[{"seq_id": 0, "qsl_idx": 0, "data": "4100000"}]', "not valid hex"),
        ('[{"seq_id": 0, "qsl_idx": 0, "data": "410000"}]', "not a whole number of int32 ids"),
        ('[{"seq_id": 0, "qsl_idx": -1, "data": "41000000"}]', "not a non-negative integer"),
        ('[{"seq_id": 0, "qsl_idx": 0, "data": "FFFFFFFF"}]', "negative token id"),
        ('[{"seq_id": 0, "qsl_idx": 0, "data": "4100000000000000"}]', "looks like int64"),
    ],
)
def test_bad_logs_give_one_clear_error(tmp_path, content, message, bart):
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(content, encoding="utf-8")
    dataset = write_dataset(tmp_path / "ds.json", bart[1][:3])
    with pytest.raises(AccuracyLogError, match=re.escape(message)) as info:
        acc.evaluate_accuracy_log(log, dataset, workers=1)
    assert str(log) in str(info.value)


def test_missing_files_and_bad_dataset(tmp_path):
    log = write_loadgen_log(tmp_path / "log.json", [(0, list(b"hello ."))])
    with pytest.raises(AccuracyError, match="does not exist"):
        acc.evaluate_accuracy_log(tmp_path / "nope.json", write_dataset(tmp_path / "ds.json", ["hi ."]))
    with pytest.raises(AccuracyError, match="dataset .* does not exist"):
        acc.evaluate_accuracy_log(log, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"input": "x"}]', encoding="utf-8")
    with pytest.raises(AccuracyError, match="sample 0: no 'output' string"):
        acc.evaluate_accuracy_log(log, bad)
