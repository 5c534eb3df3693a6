"""`mlperf-dagster accuracy` and `mlperf-dagster rouge` end to end (the real dispatcher, real files)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets.cli import main

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def reference_result(predictions, references):
    """The MLCommons evaluation.py computation (nltk split, rouge_score with stemming, numpy mean/round)."""
    import nltk
    from rouge_score import rouge_scorer

    from mlperf_assets.harness.sentences import ensure_punkt

    ensure_punkt()
    preds = ["\n".join(nltk.sent_tokenize(p.strip())) for p in predictions]
    refs = ["\n".join(nltk.sent_tokenize(r.strip())) for r in references]
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    scores = [scorer.score(r, p) for r, p in zip(refs, preds)]
    result = {k: f"{round(np.mean([s[k].fmeasure for s in scores]) * 100, 4)}" for k in METRICS}
    result["gen_len"] = int(np.sum([len(p) for p in preds]))
    result["gen_num"] = len(preds)
    return result


@pytest.fixture(scope="module")
def files(cnn_dir, tmp_path_factory):
    """The BART outputs file as is, and the references (second TSV column) written one per line."""
    tmp = tmp_path_factory.mktemp("rouge")
    rows = (cnn_dir / "cnndm_test_mini_100.tsv").read_text(encoding="utf-8").split("\n")
    refs = [row.split("\t")[1] for row in rows if row]
    references = tmp / "references.txt"
    references.write_text("\n".join(refs) + "\n", encoding="utf-8")
    predictions = cnn_dir / "cnndm_test_mini_100.bart_output.txt"
    preds = predictions.read_text(encoding="utf-8").split("\n")[:-1]
    return predictions, references, preds, refs


def test_rouge_text_prints_the_reference_dict(files, capsys):
    predictions, references, preds, refs = files
    assert main(["rouge", "--predictions", str(predictions), "--references", str(references)]) == 0
    out = capsys.readouterr().out.strip()
    assert ast.literal_eval(out) == reference_result(preds, refs)
    assert re.match(r"^\{'rouge1': '\d+\.\d+', 'rouge2': '\d+\.\d+', 'rougeL': '\d+\.\d+', 'rougeLsum': '\d+\.\d+', "
                    r"'gen_len': \d+, 'gen_num': 100\}$", out)


def test_rouge_json(files, capsys):
    predictions, references, preds, refs = files
    assert main(["rouge", "--predictions", str(predictions), "--references", str(references), "--format", "json",
                 "--workers", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = reference_result(preds, refs)
    assert got == {k: float(v) if k in METRICS else v for k, v in want.items()}


def test_rouge_line_count_mismatch_is_one_clear_error(files, tmp_path, capsys):
    predictions, _, _, refs = files
    short = tmp_path / "short.txt"
    short.write_text("\n".join(refs[:99]) + "\n", encoding="utf-8")
    assert main(["rouge", "--predictions", str(predictions), "--references", str(short)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has 100 lines but" in err and "has 99" in err


def test_rouge_missing_and_empty_files(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main(["rouge", "--predictions", str(tmp_path / "nope.txt"), "--references", str(empty)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["rouge", "--predictions", str(empty), "--references", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err


def _byte_log_and_dataset(tmp_path: Path, preds, refs, n=30):
    lines = [
        f'{{ "seq_id" : {k}, "qsl_idx" : {i}, "data" : "{np.asarray(list(preds[i].encode()) + [257], np.int32).tobytes().hex().upper()}" }}'
        for k, i in enumerate([*range(n), 0, 1])  # two duplicates at the end
    ]
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    samples = [{"id": str(i), "input": "a", "prompt": "a", "tok_input": [256], "output": r, "tok_output": []}
               for i, r in enumerate(refs)]
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"format": "mlperf-dagster-cnndm/1", "benchmark": "llama3.1-8b", "tokenizer": "byte",
                                   "tokenizer_kind": "byte", "source": "test", "samples": samples}), encoding="utf-8")
    return log, dataset


def test_accuracy_command_writes_accuracy_txt_and_exits_1_on_missed_targets(files, tmp_path, capsys):
    _, _, preds, refs = files
    log, dataset = _byte_log_and_dataset(tmp_path, preds, refs)
    out = tmp_path / "accuracy" / "accuracy.txt"
    code = main(["accuracy", "--log", str(log), "--dataset", str(dataset), "--out", str(out), "--workers", "1"])
    printed = capsys.readouterr().out
    assert code == 1  # 30 BART summaries miss the llama3.1-8b targets (and the full-set gen_len)
    assert "FAIL" in printed and "accuracy FAILED" in printed and "covers a subset" in printed
    text = out.read_text(encoding="utf-8")
    want = reference_result(preds[:30], refs[:30])
    assert re.search(r"'rouge1':\s+'?([\d.]+)", text).group(1) == want["rouge1"]
    assert re.search(r"'gen_len':\s([\d.]+)", text).group(1) == str(want["gen_len"])
    assert re.search(r"(?m)^hash=([\w\d]+)$", text).group(1) == hashlib.sha256(log.read_bytes()).hexdigest()


def test_accuracy_command_json(files, tmp_path, capsys):
    _, _, preds, refs = files
    log, dataset = _byte_log_and_dataset(tmp_path, preds, refs, n=10)
    assert main(["accuracy", "--log", str(log), "--dataset", str(dataset), "--format", "json", "--workers", "1",
                 "--benchmark", "llama3.1-8b-edge"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["benchmark"] == "llama3.1-8b-edge" and doc["passed"] is False and doc["complete"] is False
    assert doc["results"] == reference_result(preds[:10], refs[:10])
    assert doc["log_entries"] == 12 and doc["duplicates_dropped"] == 2 and doc["tokenizer"] == "byte"
    assert doc["checks"]["rouge1"]["target"] == pytest.approx(39.06 * 0.99)


def test_accuracy_command_refuses_truncated_submission_log(mlperf_logs_dir, files, tmp_path, capsys):
    _, _, preds, refs = files
    _, dataset = _byte_log_and_dataset(tmp_path, preds, refs, n=1)
    truncated = mlperf_logs_dir / "mlc-v4.1__NVIDIA-DGX-H100_H100-SXM-80GBx8_TRT__gptj-99.9__Offline" / "accuracy" / \
        "mlperf_log_accuracy.json"
    if not truncated.exists():
        pytest.skip(f"{truncated} is absent")
    out = tmp_path / "acc.txt"
    assert main(["accuracy", "--log", str(truncated), "--dataset", str(dataset), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlperf-dagster accuracy: error: ") and "truncated submission form" in err
    assert err.count("\n") == 0 and not out.exists()


def test_accuracy_help_teaches(capsys):
    with pytest.raises(SystemExit) as info:
        main(["accuracy", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--log" in text and "int32" in text and "hash=" in text and "truncated" in text


def test_installed_entry_point_runs(files):
    predictions, references, preds, refs = files
    exe = Path(sys.executable).with_name("mlperf-dagster")
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    result = subprocess.run([str(exe), "rouge", "--predictions", str(predictions), "--references", str(references)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout.strip()) == reference_result(preds, refs)
