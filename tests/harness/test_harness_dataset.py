"""Dataset preparation from every source format (real CNN .story files from ../shared), prompts, tokens, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.harness.dataset import (
    prepared_meta,
    prepared_samples,
    DatasetError,
    load_prepared,
    parse_story,
    prepare_dataset,
)
from mlperf_assets.harness.tokenizers import ByteTokenizer, load_tokenizer

PROJECT = Path(__file__).resolve().parents[2]
BUSH_STORY = "017d27d00eb43678c15cb4a8dd4723a035323219"
# Written out by hand from the .story file: each highlight gets " ." (no end punctuation), joined by newlines.
BUSH_HIGHLIGHTS = (
    "President Bush to address the Veterans of Foreign Wars on Wednesday .\n"
    "Bush to say that withdrawing from Vietnam emboldened today's terrorists .\n"
    "Speech will be latest White House attempt to try to reframe the debate over Iraq ."
)
LLAMA_PREFIX = (
    "Summarize the following news article in 128 tokens. Please output the summary only, without any other text."
    "\n\nArticle:\n"
)
GPTJ_PREFIX = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.\n\n### Instruction:\nSummarize the following news article:"
    "\n\n### Input:\n"
)


@pytest.fixture(scope="module")
def raw_records(stories_dir: Path) -> list[dict]:
    """(id, article, highlights) of the real stories, parsed once; used to write the other formats."""
    out = []
    for f in sorted(stories_dir.glob("*.story")):
        article, highlights = parse_story(f.read_text(encoding="utf-8"), str(f))
        out.append({"id": f.stem, "article": article, "highlights": highlights})
    return out


def _doc(path: Path) -> dict:
    """A prepared file's metadata and samples (the file itself is the list of samples)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {**prepared_meta(raw), "samples": prepared_samples(raw)}


def test_stories_llama_prompt_tokens_and_reference(stories_dir: Path, tmp_path: Path):
    out = prepare_dataset("stories", stories_dir, tmp_path / "ds.json", benchmark="llama3.1-8b", tokenizer="byte")
    doc = _doc(out)
    assert (doc["format"], doc["benchmark"], doc["tokenizer"], doc["tokenizer_kind"], doc["source"]) == (
        "mlperf-dagster-cnndm/2", "llama3.1-8b", "byte", "byte", "stories")
    raw = json.loads(out.read_text(encoding="utf-8"))  # an MLCommons cnn_eval.json: a list of samples
    assert isinstance(raw, list) and all(r["mlperf_dagster"]["benchmark"] == "llama3.1-8b" for r in raw)
    assert {"input", "output", "tok_input", "instruction", "id"} <= set(raw[0])
    samples = doc["samples"]
    assert len(samples) == 20
    bush = next(s for s in samples if s["id"] == BUSH_STORY)
    assert bush["output"] == BUSH_HIGHLIGHTS
    assert bush["input"].startswith("WASHINGTON (CNN) -- As he awaits a crucial progress report on Iraq, President")
    assert "@highlight" not in bush["input"] and "\n" not in bush["input"]
    assert bush["input"].endswith("millions of South Koreans would now be living under a brutal and repressive "
                                  "regime.\" E-mail to a friend .")
    assert bush["prompt"] == LLAMA_PREFIX + bush["input"] + "\n\nSummary:"
    # byte tokenizer: BOS (256) then the UTF-8 bytes of the prompt; outputs carry no BOS
    assert bush["tok_input"][0] == 256
    assert bytes(bush["tok_input"][1:]).decode("utf-8") == bush["prompt"]
    assert bytes(bush["tok_output"]).decode("utf-8") == BUSH_HIGHLIGHTS
    assert bush["instruction"] == {"llama": LLAMA_PREFIX + "{input}\n\nSummary:"}


def test_gptj_alpaca_prompt_truncated_to_1919_tokens(stories_dir: Path, tmp_path: Path):
    doc = _doc(prepare_dataset("stories", stories_dir, tmp_path / "g.json", benchmark="gptj"))
    s = doc["samples"][0]
    assert s["prompt"] == GPTJ_PREFIX + s["input"] + "\n\n### Response:"
    assert s["instruction"] == "Summarize the following news article:"
    lengths = [len(x["tok_input"]) for x in doc["samples"]]
    assert max(lengths) == 1919  # every CNN article here is longer than 1919 bytes
    assert s["tok_input"][:1919] == ([256] + list(s["prompt"].encode()))[:1919]


def test_jsonl_and_mlcommons_json_sources_match_stories(raw_records, tmp_path: Path):
    jl = tmp_path / "in.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in raw_records), encoding="utf-8")
    mc = tmp_path / "cnn_eval.json"
    mc.write_text(json.dumps([{"instruction": "x", "input": r["article"], "output": r["highlights"], "id": r["id"]}
                              for r in raw_records]), encoding="utf-8")
    a = _doc(prepare_dataset("jsonl", jl, tmp_path / "a.json"))["samples"]
    b = _doc(prepare_dataset("mlcommons-json", mc, tmp_path / "b.json"))["samples"]
    assert [s["id"] for s in a] == [r["id"] for r in raw_records] == [s["id"] for s in b]
    assert [s["tok_input"] for s in a] == [s["tok_input"] for s in b]
    assert [s["output"] for s in b] == [r["highlights"] for r in raw_records]


@pytest.mark.parametrize("kind", ["parquet", "json", "save_to_disk"])
def test_huggingface_source_through_datasets_on_local_copies(raw_records, tmp_path: Path, kind: str):
    datasets = pytest.importorskip("datasets")
    table = {k: [r[k] for r in raw_records] for k in ("article", "highlights", "id")}
    ds = datasets.Dataset.from_dict(table)
    if kind == "parquet":
        path = tmp_path / "validation.parquet"
        ds.to_parquet(str(path))
    elif kind == "json":
        path = tmp_path / "validation.jsonl"
        ds.to_json(str(path))
    else:
        path = tmp_path / "saved"
        datasets.DatasetDict({"validation": ds}).save_to_disk(str(path))
    doc = _doc(prepare_dataset("huggingface", path, tmp_path / "hf.json", max_samples=5))
    assert doc["source"] == "huggingface"
    assert [s["id"] for s in doc["samples"]] == [r["id"] for r in raw_records[:5]]
    assert [s["output"] for s in doc["samples"]] == [r["highlights"] for r in raw_records[:5]]


def test_max_samples_and_seeded_subset(stories_dir: Path, tmp_path: Path):
    ids = sorted(p.stem for p in stories_dir.glob("*.story"))
    first = _doc(prepare_dataset("stories", stories_dir, tmp_path / "f.json", max_samples=4))["samples"]
    assert [s["id"] for s in first] == ids[:4]
    s1 = [s["id"] for s in _doc(prepare_dataset("stories", stories_dir, tmp_path / "s1.json", max_samples=6,
                                                seed=7))["samples"]]
    s2 = [s["id"] for s in _doc(prepare_dataset("stories", stories_dir, tmp_path / "s2.json", max_samples=6,
                                                seed=7))["samples"]]
    s3 = [s["id"] for s in _doc(prepare_dataset("stories", stories_dir, tmp_path / "s3.json", max_samples=6,
                                                seed=8))["samples"]]
    assert s1 == s2 and len(s1) == 6 and len(set(s1)) == 6
    assert s1 == sorted(s1, key=ids.index)  # kept in dataset order
    assert s1 != ids[:6] or s3 != ids[:6]


def test_load_prepared_reads_back_and_accepts_bare_mlcommons_list(stories_dir: Path, tmp_path: Path):
    p = prepare_dataset("stories", stories_dir, tmp_path / "ds.json", max_samples=3)
    d = load_prepared(p)
    assert (len(d), d.benchmark, d.tokenizer_name, d.tokenizer_kind) == (3, "llama3.1-8b", "byte", "byte")
    assert d.prompt_token_ids(1) == _doc(p)["samples"][1]["tok_input"]
    bare = tmp_path / "cnn_eval.json"
    bare.write_text(json.dumps([{"input": "A. B.", "output": "C .", "tok_input": [128000, 5, 6]}]))
    b = load_prepared(bare)
    assert (len(b), b.benchmark, b.tokenizer_kind, b.source) == (1, "llama3.1-8b", "hf", "mlcommons-json")
    assert d.source_samples == 20 and b.source_samples is None
    with pytest.raises(DatasetError, match="tok_output"):
        b.reference_token_ids(0)


def test_earlier_format_1_files_still_load(stories_dir: Path, tmp_path: Path):
    p = prepare_dataset("stories", stories_dir, tmp_path / "ds.json", benchmark="gptj", max_samples=3)
    raw = json.loads(p.read_text())
    meta = {k: v for k, v in raw[0]["mlperf_dagster"].items() if k != "format"}
    old = tmp_path / "v1.json"
    old.write_text(json.dumps({"format": "mlperf-dagster-cnndm/1", **meta,
                               "samples": [{k: v for k, v in r.items() if k != "mlperf_dagster"} for r in raw]}))
    a, b = load_prepared(p), load_prepared(old)
    assert (b.benchmark, b.tokenizer_kind, b.source, len(b), b.source_samples) == ("gptj", "byte", "stories", 3, 20)
    assert [b.prompt_token_ids(i) for i in range(3)] == [a.prompt_token_ids(i) for i in range(3)]
    # a slice of a prepared file is still one (every sample carries the metadata)
    part = tmp_path / "part.json"
    part.write_text(json.dumps(raw[1:]))
    assert (load_prepared(part).benchmark, len(load_prepared(part))) == ("gptj", 2)


def test_prepared_file_reads_as_mlcommons_evaluation_reads_it(stories_dir: Path, tmp_path: Path):
    """language/llama3.1-8b's dataset.py reads the file with pandas.read_json and takes columns input, tok_input and
    output: the prepared file must give them as they are."""
    pd = pytest.importorskip("pandas")
    p = prepare_dataset("stories", stories_dir, tmp_path / "ds.json", max_samples=4)
    frame = pd.read_json(p)
    d = load_prepared(p)
    assert frame.input.tolist() == [d.article(i) for i in range(4)]
    assert frame.output.tolist() == [d.reference_text(i) for i in range(4)]
    assert frame.tok_input.tolist() == [d.prompt_token_ids(i) for i in range(4)]


def test_hf_tokenizer_adds_bos_like_llama(tmp_path: Path):
    """A tiny real Hugging Face fast tokenizer with a BOS post-processor, as Llama 3's; loaded lazily from disk."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"<|begin_of_text|>": 0, "<|end_of_text|>": 1, "[UNK]": 2, "hello": 3, "world": 4, ".": 5}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                                eos_token="<|end_of_text|>", unk_token="[UNK]")
    fast.save_pretrained(tmp_path / "tok")
    t = load_tokenizer(str(tmp_path / "tok"))
    assert (t.kind, t.eos_token_id) == ("hf", 1)
    assert t.encode("hello world .") == [0, 3, 4, 5]
    assert t.encode("hello world", add_special_tokens=False) == [3, 4]
    assert t.batch_decode([[0, 3, 4]]) == ["hello world"]


def test_byte_tokenizer_round_trip():
    t = ByteTokenizer()
    ids = t.encode("Zürich — ok")
    assert ids[0] == 256 and t.decode(ids) == "Zürich — ok"
    assert t.decode(ids + [257], skip_special_tokens=False).endswith("</s>")


def _write_story(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.story").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    "setup, source, message",
    [
        (lambda d: d / "nope", "stories", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "stories", "no .story files"),
        (lambda d: _write_story(d / "s", "a", "Just an article.\n") or d / "s", "stories", "no @highlight"),
        (lambda d: _write_story(d / "s", "b", "\n\n@highlight\n\nA summary\n") or d / "s", "stories", "empty article"),
        (lambda d: (d / "x.jsonl").write_text('{"id": "1", "article": "  ", "highlights": "h"}\n') and d / "x.jsonl",
         "jsonl", "empty or missing 'article'"),
        (lambda d: (d / "y.jsonl").write_text('{"id": "1", "article": "a"}\n') and d / "y.jsonl",
         "jsonl", "missing 'highlights'"),
        (lambda d: (d / "z.jsonl").write_text("{oops\n") and d / "z.jsonl", "jsonl", "z.jsonl:1: not JSON"),
        (lambda d: d, "tfds", "unknown source 'tfds'"),
    ],
)
def test_bad_input_one_clear_error_and_no_file(tmp_path: Path, setup, source: str, message: str):
    path = setup(tmp_path)
    out = tmp_path / "out.json"
    with pytest.raises(DatasetError, match=message):
        prepare_dataset(source, path, out)
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))


def test_cli_prepare_dataset_and_errors(stories_dir: Path, tmp_path: Path):
    out = tmp_path / "cli.json"
    cmd = [sys.executable, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "stories", "--path",
           str(stories_dir), "--out", str(out), "--max-samples", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT)
    assert r.returncode == 0, r.stderr
    assert len(_doc(out)["samples"]) == 2
    r = subprocess.run(cmd[:7] + [str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")], capture_output=True,
                       text=True, cwd=PROJECT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: stories folder {tmp_path / 'missing'} does not exist"]
    r = subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "prepare-dataset", "--help"],
                       capture_output=True, text=True, cwd=PROJECT)
    assert r.returncode == 0 and "Examples:" in r.stdout and "--source huggingface" in r.stdout
