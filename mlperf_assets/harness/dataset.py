"""CNN/DailyMail validation data: read from any supported source, template prompts, tokenize, write, load back.

Prepared file (format ``mlperf-dagster-cnndm/2``): the file IS an MLCommons ``cnn_eval.json``, a JSON list of
samples ``{id, input, instruction, prompt, tok_input, output, tok_output, mlperf_dagster}`` with the MLCommons fields
(``input`` = article, ``output`` = highlights, ``tok_input`` = prompt ids), so MLCommons'
``language/llama3.1-8b/evaluation.py`` (pandas ``read_json``) reads it as is. What the harness needs besides
(benchmark, tokenizer, source, ...) rides in every sample's ``mlperf_dagster`` object, which MLCommons' code ignores:
one file stays enough (runners upload it alone) and any slice of it is still a prepared file.
``load_prepared`` also reads a bare MLCommons ``cnn_eval.json`` and the earlier format ``mlperf-dagster-cnndm/1``
(``{"format", "benchmark", "tokenizer", ..., "samples": [...]}``). Prompt templates, truncation and the reference
tokenizers are the benchmark's (``harness/benchmarks.py``).

Sources, all yielding ``(id, article, highlights)``:
- ``huggingface``: ``datasets.load_dataset("abisee/cnn_dailymail", "3.0.0", split="validation")``; ``--path`` may be a
  ``save_to_disk`` folder, a local parquet / JSON / JSON-lines / arrow file of the same columns, or a cache folder.
- ``mlcommons-json``: an MLCommons ``cnn_eval.json`` (``input`` article, ``output`` highlights).
- ``stories``: a folder of original CNN/DM ``.story`` files, turned into article/highlights exactly as the Hugging Face
  ``cnn_dailymail`` 3.0.0 builder does (lines stripped, a " ." added to lines without end punctuation, article lines
  joined by spaces, highlights by newlines). The id is the file name without ``.story``.
- ``jsonl``: one ``{"id", "article", "highlights"}`` object per line.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .benchmarks import BENCHMARKS, DEFAULT_BENCHMARK, HF_DATASET, Benchmark
from . import interrupts
from .errors import DatasetError, OutputError
from .files import NotUTF8, decode_utf8, write_json_atomic
from .tokenizers import Tokenizer, load_tokenizer

FORMAT = "mlperf-dagster-cnndm/2"
FORMAT_V1 = "mlperf-dagster-cnndm/1"  # {"format", ..., "samples": [...]}: still read
META_KEY = "mlperf_dagster"  # the per-sample object holding the file's metadata
SOURCES = ("huggingface", "mlcommons-json", "stories", "jsonl")

_END_TOKENS = (".", "!", "?", "...", "'", "`", '"', "\u2019", "\u201d", ")")


@dataclass(frozen=True)
class RawSample:
    id: str
    article: str
    highlights: str


def check_benchmark(benchmark: str) -> Benchmark:
    try:
        return BENCHMARKS[benchmark]
    except KeyError:
        raise DatasetError(f"unknown benchmark {benchmark!r}: expected one of {', '.join(BENCHMARKS)}") from None


def format_prompt(benchmark: str, article: str) -> str:
    """The reference prompt text (no chat template)."""
    return check_benchmark(benchmark).format_prompt(article)


# ----------------------------------------------------------------------------------------------------------- sources
def parse_story(text: str, where: str) -> tuple[str, str]:
    """Article and highlights of one ``.story`` file, as the Hugging Face cnn_dailymail 3.0.0 builder makes them."""
    article: list[str] = []
    highlights: list[str] = []
    next_is_highlight = False
    for raw in text.split("\n"):  # as file iteration splits (not str.splitlines, which also splits at \x0b etc.)
        line = raw.strip()
        if not line:
            continue
        if line.startswith("@highlight"):
            next_is_highlight = True
            continue
        if "@highlight" not in line and line[-1] not in _END_TOKENS:
            line += " ."
        (highlights if next_is_highlight else article).append(line)
    if not highlights:
        raise DatasetError(f"{where}: story has no @highlight lines (no reference summary)")
    if not article:
        raise DatasetError(f"{where}: story has an empty article")
    return " ".join(article), "\n".join(highlights)


def read_stories(path: Path) -> list[RawSample]:
    if not path.is_dir():
        raise DatasetError(f"stories folder {path} does not exist" if not path.exists() else f"{path} is not a folder")
    files = sorted(path.glob("*.story"))
    if not files:
        raise DatasetError(f"stories folder {path} holds no .story files")
    out = []
    for f in files:
        article, highlights = parse_story(_read_text(f, "a CNN .story file"), str(f))
        out.append(RawSample(f.stem, article, highlights))
    return out


def read_jsonl(path: Path) -> list[RawSample]:
    _need_file(path)
    out = []
    for n, line in enumerate(_read_text(path, "JSON lines").split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise DatasetError(f"{path}:{n}: JSON nested too deeply") from None
        out.append(_raw_from_record(obj, f"{path}:{n}", "article", "highlights", default_id=str(n)))
    if not out:
        raise DatasetError(f"{path} holds no samples")
    return out


def read_mlcommons_json(path: Path) -> list[RawSample]:
    records = _load_json_list(path)
    return [
        _raw_from_record(obj, f"{path} sample {i}", "input", "output", default_id=str(i)) for i, obj in enumerate(records)
    ]


def read_huggingface(path: Path | None) -> list[RawSample]:
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError("--source huggingface needs the 'datasets' package (pip install 'mlperf-dagster[hf]')") from exc
    name, config, split = HF_DATASET
    where = str(path) if path else f"{name} {config} {split}"
    try:
        if path is None:
            ds = datasets.load_dataset(name, config, split=split)
        elif path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                                or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DatasetError(f"{path}: saved dataset has splits {sorted(ds)}, no {split!r}")
                ds = ds[split]
        elif path.is_dir():
            ds = datasets.load_dataset(name, config, split=split, cache_dir=str(path))
        elif path.is_file():
            builder = _local_builder(path)
            if builder is None:
                raise DatasetError(f"{path}: unsupported local file type (use .parquet, .json, .jsonl, .arrow, .csv)")
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        else:
            raise DatasetError(f"{path} does not exist")
    except DatasetError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatasetError(f"cannot load {where} through datasets: {first}") from exc
    missing = {"article", "highlights"} - set(ds.column_names)
    if missing:
        raise DatasetError(f"{where}: columns {sorted(missing)} missing (have {ds.column_names})")
    ids = ds["id"] if "id" in ds.column_names else [str(i) for i in range(len(ds))]
    return [
        _raw_from_record({"id": i, "article": a, "highlights": h}, f"{where} row {n}", "article", "highlights", str(n))
        for n, (i, a, h) in enumerate(zip(ids, ds["article"], ds["highlights"]))
    ]


def _local_builder(path: Path) -> str | None:
    name = path.name.lower()
    for compressed in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(compressed)
    for ext, builder in ((".parquet", "parquet"), (".jsonl", "json"), (".json", "json"), (".arrow", "arrow"),
                         (".csv", "csv")):
        if name.endswith(ext):
            return builder
    return None


def read_source(source: str, path: str | os.PathLike | None) -> list[RawSample]:
    p = Path(path).expanduser() if path else None
    if source == "huggingface":
        return read_huggingface(p)
    if p is None:
        raise DatasetError(f"--source {source} needs --path")
    if source == "stories":
        return read_stories(p)
    if source == "jsonl":
        return read_jsonl(p)
    if source == "mlcommons-json":
        return read_mlcommons_json(p)
    raise DatasetError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")


def _need_file(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if not path.is_file():
        raise DatasetError(f"{path} is not a file")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 file's text; a DatasetError naming the file, line and byte otherwise."""
    data = _read_bytes(path)
    try:
        return decode_utf8(data)
    except NotUTF8 as exc:
        raise DatasetError(f"{path}:{exc.line}: {exc}; expected {what}") from None


def _read_json(path: Path, what: str) -> Any:
    _need_file(path)
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}); expected {what}") from None
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply; expected {what}") from None


def _check_unicode(text: str, where: str, key: str) -> None:
    """Text that cannot be written as UTF-8 (a lone surrogate from a JSON escape such as \\ud800) is refused here,
    naming the sample, instead of failing later in a tokenizer, a backend or the atomic write."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DatasetError(f"{where}: {key!r} holds an unpaired surrogate {ascii(text[exc.start])} at character "
                           f"{exc.start} (not valid Unicode text)") from None


def _load_json_list(path: Path) -> list:
    data = _read_json(path, "an MLCommons cnn_eval.json (a JSON list of samples)")
    if isinstance(data, dict) and "samples" in data:  # a prepared file of format 1
        data = data["samples"]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of samples")
    if not data:
        raise DatasetError(f"{path} holds no samples")
    return data


def _raw_from_record(obj: Any, where: str, article_key: str, summary_key: str, default_id: str) -> RawSample:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected an object with {article_key!r} and {summary_key!r}")
    article, summary = obj.get(article_key), obj.get(summary_key)
    if not isinstance(article, str) or not article.strip():
        raise DatasetError(f"{where}: empty or missing {article_key!r} (the article)")
    if not isinstance(summary, str) or not summary.strip():
        raise DatasetError(f"{where}: empty or missing {summary_key!r} (the reference summary)")
    sample_id = str(obj.get("id", default_id))
    for key, text in ((article_key, article), (summary_key, summary), ("id", sample_id)):
        _check_unicode(text, where, key)
    return RawSample(sample_id, article, summary)


# ------------------------------------------------------------------------------------------------------- preparation
def select_subset(n_total: int, max_samples: int | None, seed: int | None) -> list[int]:
    """First ``max_samples`` rows, or with ``seed`` a seeded random choice of them (kept in dataset order)."""
    if max_samples is None or max_samples >= n_total:
        return list(range(n_total))
    if max_samples < 1:
        raise DatasetError(f"--max-samples must be >= 1 (got {max_samples})")
    if seed is None:
        return list(range(max_samples))
    return sorted(random.Random(seed).sample(range(n_total), max_samples))


def prepare_samples(raw: list[RawSample], benchmark: str, tokenizer: Tokenizer) -> list[dict]:
    spec = check_benchmark(benchmark)
    samples = []
    for r in raw:
        prompt = spec.format_prompt(r.article)
        samples.append({
            "id": r.id,
            "input": r.article,
            "instruction": spec.dataset_metadata,
            "prompt": prompt,
            "tok_input": spec.truncate_prompt(tokenizer.encode(prompt, add_special_tokens=True)),
            "output": r.highlights,
            "tok_output": tokenizer.encode(r.highlights, add_special_tokens=False),
        })
    return samples


def prepare_dataset(
    source: str,
    path: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    benchmark: str = DEFAULT_BENCHMARK,
    tokenizer: str = "byte",
    max_samples: int | None = None,
    seed: int | None = None,
) -> Path:
    """Read, subset, template and tokenize; write the prepared file atomically. Returns its path.

    Bad input or an unusable ``out`` path: :class:`DatasetError` naming the file; ``out`` that cannot be written (disk
    full): :class:`OutputError`. Either way no file is left at ``out`` (nor a temporary one beside it)."""
    check_benchmark(benchmark)
    if source not in SOURCES:
        raise DatasetError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    out = Path(out)
    check_output_file(out, "--out")
    tok = load_tokenizer(tokenizer)
    raw = read_source(source, path)
    chosen = select_subset(len(raw), max_samples, seed)
    samples = prepare_samples([raw[i] for i in chosen], benchmark, tok)
    meta = {
        "format": FORMAT,
        "benchmark": benchmark,
        "tokenizer": tok.name,
        "tokenizer_kind": tok.kind,
        "source": source,
        "source_path": str(path) if path else "/".join(HF_DATASET),
        "source_samples": len(raw),
        "max_samples": max_samples,
        "seed": seed,
    }
    doc = [{**s, META_KEY: meta} for s in samples]
    try:
        # A signal until the file replaces ``out`` leaves nothing (the temporary file is removed); one after it is
        # only recorded and the file stands (exit 0).
        write_json_atomic(out, doc, before_commit=interrupts.commit_point)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise OutputError(out, exc) from None
        raise DatasetError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
    return out


def check_output_file(out: Path, flag: str) -> None:
    """``out`` can become a file: it is not a folder and no existing parent of it is a file."""
    if out.is_dir():
        raise DatasetError(f"{flag} {out} is a folder: give a file name, e.g. {out / 'cnn_eval.json'}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DatasetError(f"{flag} {out}: {parent} is a file, not a folder")
            break


# ----------------------------------------------------------------------------------------------- the official set
_CNNDM_ID = re.compile(r"[0-9a-f]{40}")  # a CNN/DM story id (the SHA-1 of its URL): HF's `id`, a .story file's name


def official_set(samples: list[dict], benchmark: str, max_samples: int | None) -> tuple[bool, dict[str, Any]]:
    """Whether a full prepared dataset can be the benchmark's official evaluation set (MLCommons' ``cnn_eval.json``:
    the 13,368 CNN/DM validation articles; 5,000 for edge), as far as its contents tell: that many samples, each a
    different article, and that many different CNN/DM ids where the source kept them (the Hugging Face split and
    .story files do; ``cnn_eval.json`` has none, and no fingerprint of it is known offline). A set that is not
    (20 articles repeated to 13,368) fails with a note saying what differs. A subset (``max_samples`` below the
    official size) is a smoke set by choice: passed, not checked. Returns (passed, metadata with ``note``)."""
    size = BENCHMARKS[benchmark].dataset_size
    n = len(samples)
    articles = len({str(s.get("input", "")) for s in samples})
    ids = [s.get("id") for s in samples]
    cnndm_ids = len(set(ids)) if all(isinstance(i, str) and _CNNDM_ID.fullmatch(i) for i in ids) else None
    metadata: dict[str, Any] = {"samples": n, "official_samples": size, "distinct_articles": articles,
                                "distinct_cnndm_ids": cnndm_ids if cnndm_ids is not None else "not kept"}
    if max_samples is not None and max_samples < size:
        return True, {**metadata, "note": f"a subset (dataset.max_samples {max_samples}): not checked"}
    differs = [f"{n} samples" if n != size else "",
               f"{articles} distinct articles" if articles != size else "",
               f"{cnndm_ids} distinct CNN/DM ids" if cnndm_ids is not None and cnndm_ids != size else ""]
    differs = [d for d in differs if d]
    if differs:
        note = (f"not the official {benchmark} evaluation set ({size:,} distinct CNN/DM validation articles): "
                f"{', '.join(differs)}; its results are not comparable with MLPerf's")
        return False, {**metadata, "note": note}
    return True, {**metadata, "note": f"{size:,} distinct articles" + (", each with its own CNN/DM id"
                                                                          if cnndm_ids is not None else "")}


# ------------------------------------------------------------------------------------------------------------ loading
@dataclass
class PreparedDataset:
    """A prepared file in memory; implements the backends' ``DatasetView``."""

    path: Path
    benchmark: str
    tokenizer_name: str
    tokenizer_kind: str
    source: str
    samples: list[dict]
    _tok_input: list[list[int]] = field(repr=False, default_factory=list)
    meta: dict = field(repr=False, default_factory=dict)  # the file's metadata (prepare-dataset's), {} for MLCommons'

    @property
    def source_samples(self) -> int | None:
        """How many samples the source held before --max-samples (None when unknown)."""
        n = self.meta.get("source_samples")
        return n if isinstance(n, int) else None

    def __post_init__(self) -> None:
        self._tok_input = [s["tok_input"] for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def prompt_token_ids(self, index: int) -> list[int]:
        return self._tok_input[index]

    def article(self, index: int) -> str:
        return self.samples[index]["input"]

    def prompt(self, index: int) -> str:
        s = self.samples[index]
        return s.get("prompt") or format_prompt(self.benchmark, s["input"])

    def reference_text(self, index: int) -> str:
        return self.samples[index]["output"]

    def reference_token_ids(self, index: int) -> list[int]:
        ids = self.samples[index].get("tok_output")
        if ids is None:
            raise DatasetError(f"{self.path}: sample {index} has no 'tok_output' (prepare the file with prepare-dataset)")
        return ids

    def sample_id(self, index: int) -> str:
        return str(self.samples[index].get("id", index))

    def head(self, n: int | None) -> "PreparedDataset":
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise DatasetError(f"--max-samples must be >= 1 (got {n})")
        return PreparedDataset(self.path, self.benchmark, self.tokenizer_name, self.tokenizer_kind, self.source,
                               self.samples[:n], meta=self.meta)


def load_prepared(path: str | os.PathLike, *, benchmark: str | None = None, tokenizer: str | None = None) -> PreparedDataset:
    """Read a prepared file, or a bare MLCommons ``cnn_eval.json`` (then ``benchmark`` defaults to the registry's
    default benchmark and the tokenizer to that benchmark's reference model)."""
    path = Path(path)
    doc = _read_json(path, "a prepared dataset (prepare-dataset) or an MLCommons cnn_eval.json")
    meta = prepared_meta(doc)
    if isinstance(doc, dict):
        if doc.get("format") != FORMAT_V1:
            raise DatasetError(f"{path}: not a prepared dataset (format {doc.get('format')!r}, expected a JSON list "
                               f"of samples or {FORMAT_V1!r})")
        samples = doc.get("samples") or []
    elif isinstance(doc, list) and meta:
        samples = doc
    elif isinstance(doc, list):
        samples, source = doc, "mlcommons-json"
        bench = benchmark or DEFAULT_BENCHMARK
        tok_name = tokenizer or check_benchmark(bench).reference_tokenizer
        tok_kind = "byte" if tok_name == "byte" else "hf"
    else:
        raise DatasetError(f"{path}: expected a prepared dataset object or an MLCommons JSON list")
    if meta:
        bench = meta.get("benchmark", DEFAULT_BENCHMARK)
        tok_name, tok_kind, source = meta.get("tokenizer", "byte"), meta.get("tokenizer_kind", "byte"), \
            meta.get("source", "?")
    check_benchmark(bench)
    if not samples:
        raise DatasetError(f"{path} holds no samples")
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or not isinstance(s.get("tok_input"), list) or not s["tok_input"]:
            raise DatasetError(f"{path} sample {i}: missing or empty 'tok_input' (prompt token ids)")
        if not isinstance(s.get("input"), str) or not isinstance(s.get("output"), str):
            raise DatasetError(f"{path} sample {i}: 'input' (article) and 'output' (reference) must be strings")
        for key in ("input", "output", "prompt"):
            if isinstance(s.get(key), str):
                _check_unicode(s[key], f"{path} sample {i}", key)
    return PreparedDataset(path, bench, tok_name, tok_kind, source, samples, meta=meta)


def prepared_meta(doc: Any) -> dict:
    """A prepared file's metadata (benchmark, tokenizer, tokenizer_kind, source, source_samples, ...) from its parsed
    JSON, either format; ``{}`` for a bare MLCommons ``cnn_eval.json``."""
    if isinstance(doc, dict) and doc.get("format") == FORMAT_V1:
        return {k: v for k, v in doc.items() if k != "samples"}
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and isinstance(doc[0].get(META_KEY), dict):
        meta = doc[0][META_KEY]
        if meta.get("format") == FORMAT:
            return dict(meta)
    return {}


def prepared_samples(doc: Any) -> list:
    """The sample records of a parsed prepared file (either format) or MLCommons ``cnn_eval.json``."""
    if isinstance(doc, dict) and isinstance(doc.get("samples"), list):
        return doc["samples"]
    return doc if isinstance(doc, list) else []
