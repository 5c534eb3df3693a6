"""The MLPerf accuracy evaluation for the CNN/DailyMail LLM benchmarks (llama3.1-8b, llama3.1-8b-edge, gpt-j), exactly.

Steps, as the reference ``language/{llama3.1-8b,gpt-j}/evaluation.py`` does them:
1. read ``mlperf_log_accuracy.json`` and keep the first entry of every ``qsl_idx``;
2. ``np.frombuffer(bytes.fromhex(data), dtype)`` with int32 (llama) or int64 (gpt-j);
3. ``tokenizer.batch_decode(ids, skip_special_tokens=True)``; the reference text is the dataset's ``output[qsl_idx]``;
4. predictions and references: ``strip()``, then ``"\\n".join(nltk.sent_tokenize(text))``;
5. ROUGE-1/2/L/Lsum F-measures with the Porter stemmer, one pair at a time (``rouge_score``'s ``RougeScorer``, which
   is what ``evaluate.load("rouge")`` runs with ``use_aggregator=False``);
6. per metric ``round(np.mean(f) * 100, 4)``; ``gen_len`` = total characters of the postprocessed predictions,
   ``gen_num`` = their number.

Speed without changing a digit: sentence splitting (pure Python) runs in a process pool, and ROUGE runs in
``rouge-score-rs`` (a Rust port with identical precision/recall/F, scored on all cores); ``rouge_score`` itself, in the
same process pool, is the fallback when the fast package is missing.

The printed result is the dict the reference prints: llama3.1-8b quotes the scores (``'rouge1': '38.7321'``), the
gpt-j script printed bare numbers (``'rouge1': 43.126``); ``gen_len``/``gen_num`` are plain ints either way (never
``np.int64(...)``, which the submission checker's regexes cannot read). ``accuracy.txt`` is that output plus the
``hash=<sha256 of mlperf_log_accuracy.json>`` line the submission tools append.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mlperf_assets.harness.benchmarks import (
    ACCURACY_TARGETS,
    BENCHMARKS,
    DEFAULT_BENCHMARK,
    AccuracyTarget,
    accuracy_target,
    known_spellings,
)
from mlperf_assets.harness.files import write_atomic

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TRUNCATION_MARKER = "\n\n...\n\n"  # what tools/submission/truncate_accuracy_log.py puts between the kept 4 KiB ends
_MIN_TEXTS_FOR_POOL = 2000  # below this a process pool costs more than it saves


class AccuracyError(ValueError):
    """Bad input to the accuracy evaluation: one message saying what is wrong and where."""


class AccuracyLogError(AccuracyError):
    """The accuracy log cannot be scored (truncated submission form, not JSON, empty, wrong dtype, bad entries)."""


# ------------------------------------------------------------------------------------------------------------ targets
# The rules live in the benchmark registry (harness/benchmarks.py); these names are this module's public interface.
TARGETS: dict[str, AccuracyTarget] = ACCURACY_TARGETS


def resolve_target(benchmark: str) -> AccuracyTarget:
    """The accuracy rules for any spelling of a benchmark (submission, LoadGen or harness name)."""
    target = accuracy_target(benchmark)
    if target is None:
        raise AccuracyError(f"unknown benchmark {benchmark!r}: expected one of {', '.join(known_spellings())}")
    return target


def check_results(results: dict[str, Any], target: AccuracyTarget) -> dict[str, dict[str, Any]]:
    """Per metric ``{value, target, max, passed}``: the printed (rounded) value against the checker's threshold."""
    checks: dict[str, dict[str, Any]] = {}
    for metric, (low, high) in target.thresholds().items():
        value = float(results[metric])
        passed = value >= low and (high is None or value <= high)
        checks[metric] = {"value": value, "target": low, "max": high, "passed": passed}
    return checks


# ------------------------------------------------------------------------------------------------------ text scoring
def postprocess(text: str) -> str:
    """What the reference does to every prediction and reference before ROUGE."""
    from mlperf_assets.harness.sentences import split_sentences

    return "\n".join(split_sentences(text.strip()))


def _postprocess_chunk(texts: list[str]) -> list[str]:
    return [postprocess(t) for t in texts]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _pool(workers: int):
    """A process pool; fork where it is safe (no other threads), else forkserver/spawn."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def _map_chunks(func, items: Sequence, workers: int) -> list:
    """``[func(chunk) ...]`` over chunks of ``items``, flattened; in a process pool when it pays off and is allowed
    (a daemonic process, e.g. inside some executors, may not start children: then serially)."""
    import multiprocessing

    if workers == 1 or len(items) < _MIN_TEXTS_FOR_POOL or multiprocessing.current_process().daemon:
        return func(list(items))
    with _pool(workers) as pool:
        return [x for part in pool.map(func, _chunks(items, workers * 4)) for x in part]


def _chunks(items: Sequence, n: int) -> list[list]:
    size = max(1, math.ceil(len(items) / n))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def postprocess_texts(texts: Sequence[str], workers: int | None = None) -> list[str]:
    """``postprocess`` over many texts, in a process pool when there are enough of them."""
    from mlperf_assets.harness.sentences import SentenceSplitterUnavailable, ensure_punkt

    try:
        ensure_punkt()  # write the punkt data once, before any worker starts
    except SentenceSplitterUnavailable as exc:
        raise AccuracyError(str(exc)) from None
    workers = default_workers() if workers is None else max(1, workers)
    return _map_chunks(_postprocess_chunk, texts, workers)


def rouge_engine() -> str:
    """``rouge-score-rs`` when installed (identical scores, native and parallel), else ``rouge-score``."""
    try:
        import rouge_score_rs  # noqa: F401
    except ImportError:
        return "rouge-score"
    return "rouge-score-rs"


def _rouge_score_chunk(pairs: list[tuple[str, str]]) -> list[tuple[tuple[float, float, float], ...]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    out = []
    for target, prediction in pairs:
        s = scorer.score(target, prediction)
        out.append(tuple((s[m].precision, s[m].recall, s[m].fmeasure) for m in METRICS))
    return out


def rouge_pairs(
    references: Sequence[str], predictions: Sequence[str], *, workers: int | None = None, engine: str | None = None
) -> dict[str, list[tuple[float, float, float]]]:
    """ROUGE of already-postprocessed texts, one pair at a time: metric -> [(precision, recall, fmeasure), ...]."""
    if len(references) != len(predictions):
        raise AccuracyError(f"{len(predictions)} predictions but {len(references)} references")
    engine = engine or rouge_engine()
    workers = default_workers() if workers is None else max(1, workers)
    per_metric: dict[str, list[tuple[float, float, float]]] = {m: [] for m in METRICS}
    if engine == "rouge-score-rs":
        import rouge_score_rs

        scorer = rouge_score_rs.RougeScorer(list(METRICS), use_stemmer=True)
        if workers == 1:
            scores = [scorer.score(r, p) for r, p in zip(references, predictions)]
        else:
            scores = scorer.score_batch(list(references), list(predictions))
        for s in scores:
            for m in METRICS:
                per_metric[m].append((s[m].precision, s[m].recall, s[m].fmeasure))
        return per_metric
    if engine != "rouge-score":
        raise AccuracyError(f"unknown ROUGE engine {engine!r}: expected rouge-score-rs or rouge-score")
    for row in _map_chunks(_rouge_score_chunk, list(zip(references, predictions)), workers):
        for m, prf in zip(METRICS, row):
            per_metric[m].append(prf)
    return per_metric


def summarize(
    fmeasures: dict[str, Sequence[float]], predictions_postprocessed: Sequence[str], *, quoted: bool = True
) -> dict[str, Any]:
    """The MLPerf result dict from per-pair F-measures: ``round(np.mean(f) * 100, 4)``, gen_len, gen_num."""
    import numpy as np

    if not predictions_postprocessed:
        raise AccuracyError("nothing to score: no predictions")
    results: dict[str, Any] = {}
    for m in METRICS:
        value = float(round(np.mean(fmeasures[m]) * 100, 4))  # numpy's mean and round, as the reference
        results[m] = str(value) if quoted else value
    results["gen_len"] = int(sum(len(p) for p in predictions_postprocessed))
    results["gen_num"] = int(len(predictions_postprocessed))
    return results


def score_texts(
    predictions: Sequence[str],
    references: Sequence[str],
    workers: int | None = None,
    *,
    quoted: bool = True,
    engine: str | None = None,
) -> dict[str, Any]:
    """The MLPerf result dict for raw prediction/reference texts (postprocessing included)."""
    if len(predictions) != len(references):
        raise AccuracyError(f"{len(predictions)} predictions but {len(references)} references: they must pair up")
    if not predictions:
        raise AccuracyError("nothing to score: no predictions")
    processed = postprocess_texts([*predictions, *references], workers)
    preds, refs = processed[: len(predictions)], processed[len(predictions):]
    scores = rouge_pairs(refs, preds, workers=workers, engine=engine)
    return summarize({m: [prf[2] for prf in scores[m]] for m in METRICS}, preds, quoted=quoted)


def format_results(results: dict[str, Any]) -> str:
    """The dict exactly as the reference prints it (Python repr of plain str/float/int values)."""
    return repr(dict(results))


# ------------------------------------------------------------------------------------------------------ accuracy log
@dataclass(frozen=True)
class LogEntry:
    qsl_idx: int
    token_ids: Any  # numpy array


@dataclass(frozen=True)
class AccuracyLog:
    path: Path
    sha256: str
    entries: list[LogEntry]  # deduplicated, first occurrence of every qsl_idx, in log order
    total_entries: int  # before deduplication
    dtype: str


def _other_dtype(dtype: str) -> str:
    return "int64" if dtype == "int32" else "int32"


def read_accuracy_log(path: str | os.PathLike, dtype: str) -> AccuracyLog:
    """Parse and check a LoadGen accuracy log; keep the first entry of each ``qsl_idx``."""
    import numpy as np

    path = Path(path)
    if dtype not in ("int32", "int64"):
        raise AccuracyLogError(f"token dtype must be int32 or int64, not {dtype!r}")
    if not path.exists():
        raise AccuracyLogError(f"{path} does not exist")
    if not path.is_file():
        raise AccuracyLogError(f"{path} is not a file")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        raise AccuracyLogError(f"{path} is empty: LoadGen had not written the accuracy log (run killed early?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if TRUNCATION_MARKER in text and text.lstrip().startswith("["):
            raise AccuracyLogError(
                f"{path} is the truncated submission form of an accuracy log (its first and last 4 KiB joined by "
                "'...', as tools/submission/truncate_accuracy_log.py leaves it): it cannot be scored; evaluate the "
                "complete mlperf_log_accuracy.json kept from the accuracy run"
            ) from None
        raise AccuracyLogError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): an accuracy log cut off "
            "mid-write (interrupted run) or not a LoadGen accuracy log"
        ) from None
    if not isinstance(data, list):
        raise AccuracyLogError(f"{path} is not a LoadGen accuracy log (expected a JSON list of entries)")
    if not data:
        raise AccuracyLogError(
            f"{path} holds no samples: a performance-mode run writes an empty accuracy log; score the log of an "
            "accuracy-mode run"
        )
    np_dtype = np.dtype(dtype).newbyteorder("<")  # LoadGen logs the response bytes as the SUT stored them (little-endian)
    itemsize = np_dtype.itemsize
    entries: list[LogEntry] = []
    seen: set[int] = set()
    count_matches = {dtype: 0, _other_dtype(dtype): 0}
    with_count = 0
    odd_zero = 0
    for i, entry in enumerate(data):
        where = f"{path} entry {i}"
        if not isinstance(entry, dict) or "qsl_idx" not in entry or "data" not in entry:
            raise AccuracyLogError(f"{where}: expected an object with 'qsl_idx' and 'data' (a LoadGen accuracy log)")
        qsl_idx, hexdata = entry["qsl_idx"], entry["data"]
        if not isinstance(qsl_idx, int) or isinstance(qsl_idx, bool) or qsl_idx < 0:
            raise AccuracyLogError(f"{where}: qsl_idx {qsl_idx!r} is not a non-negative integer")
        if not isinstance(hexdata, str):
            raise AccuracyLogError(f"{where} (qsl_idx {qsl_idx}): 'data' is not a hex string")
        try:
            blob = bytes.fromhex(hexdata)
        except ValueError:
            raise AccuracyLogError(f"{where} (qsl_idx {qsl_idx}): 'data' is not valid hex") from None
        if len(blob) % itemsize:
            raise AccuracyLogError(
                f"{where} (qsl_idx {qsl_idx}): {len(blob)} bytes of token data is not a whole number of {dtype} ids; "
                f"is the log {_other_dtype(dtype)}?"
            )
        token_count = entry.get("token_count")
        if isinstance(token_count, int) and not isinstance(token_count, bool):
            with_count += 1
            for dt in count_matches:
                if len(blob) == token_count * np.dtype(dt).itemsize:
                    count_matches[dt] += 1
        if qsl_idx in seen:
            continue
        seen.add(qsl_idx)
        ids = np.frombuffer(blob, np_dtype)
        if dtype == "int32" and len(ids) >= 2 and not ids[1::2].any() and ids[0::2].any():
            odd_zero += 1
        entries.append(LogEntry(qsl_idx, ids))
    if with_count and count_matches[dtype] == 0 and count_matches[_other_dtype(dtype)] == with_count:
        raise AccuracyLogError(
            f"{path}: the token data is {_other_dtype(dtype)}, not {dtype} (every entry's byte length matches "
            f"'token_count' {_other_dtype(dtype)} ids): llama logs are int32, gpt-j logs int64; pass the right "
            "benchmark or --dtype"
        )
    if dtype == "int32" and odd_zero == len(entries) and not with_count:
        raise AccuracyLogError(
            f"{path}: every second int32 id is 0 in every entry: the token data looks like int64 (gpt-j); "
            "pass the right benchmark or --dtype int64"
        )
    for e in entries:
        if len(e.token_ids) and int(e.token_ids.min()) < 0:
            raise AccuracyLogError(
                f"{path} (qsl_idx {e.qsl_idx}): negative token id {int(e.token_ids.min())}; wrong dtype ({dtype})?"
            )
    return AccuracyLog(path, hashlib.sha256(raw).hexdigest(), entries, len(data), dtype)


# ----------------------------------------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class References:
    path: Path
    texts: list[str]
    benchmark: str | None  # the harness benchmark name the file was prepared for, when it says
    tokenizer: str | None


def load_references(path: str | os.PathLike) -> References:
    """Reference summaries (``output``) of a prepared dataset file or a bare MLCommons ``cnn_eval.json``."""
    path = Path(path)
    if not path.is_file():
        raise AccuracyError(f"dataset {path} does not exist" if not path.exists() else f"dataset {path} is not a file")
    try:
        with path.open(encoding="utf-8") as fh:
            doc = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AccuracyError(f"dataset {path} is not JSON ({exc})") from None
    from mlperf_assets.harness.dataset import prepared_meta

    meta = prepared_meta(doc)  # prepare-dataset's metadata, either format; {} for MLCommons' file
    benchmark, tokenizer = meta.get("benchmark"), meta.get("tokenizer")
    if isinstance(doc, dict) and isinstance(doc.get("samples"), list):
        samples = doc["samples"]
    elif isinstance(doc, list):
        samples = doc
    else:
        raise AccuracyError(f"dataset {path}: expected a prepared dataset (with 'samples') or an MLCommons JSON list")
    if not samples:
        raise AccuracyError(f"dataset {path} holds no samples")
    texts = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or not isinstance(s.get("output"), str):
            raise AccuracyError(f"dataset {path} sample {i}: no 'output' string (the reference summary)")
        texts.append(s["output"])
    return References(path, texts, benchmark, tokenizer)


def _default_tokenizer(target: AccuracyTarget, refs: References) -> str:
    if refs.tokenizer:
        return refs.tokenizer
    return BENCHMARKS[target.family].reference_tokenizer


# ------------------------------------------------------------------------------------------------------------ report
@dataclass
class AccuracyReport:
    benchmark: str
    results: dict[str, Any]
    checks: dict[str, dict[str, Any]]
    log_path: Path
    log_sha256: str
    dataset_path: Path
    tokenizer: str
    dtype: str
    dataset_size: int  # samples in the dataset file
    log_entries: int  # entries in the log, duplicates included
    engine: str = field(default_factory=rouge_engine)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks.values())

    @property
    def duplicates_dropped(self) -> int:
        return self.log_entries - int(self.results["gen_num"])

    @property
    def complete(self) -> bool:
        """Every sample of the benchmark's full dataset was scored (targets are defined on the full set)."""
        return int(self.results["gen_num"]) == resolve_target(self.benchmark).dataset_size

    def to_accuracy_txt(self) -> str:
        """``accuracy.txt`` as the reference script prints it, plus the submission tools' ``hash=`` line."""
        return f"\nResults\n\n{format_results(self.results)}\nhash={self.log_sha256}\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "results": self.results,
            "checks": self.checks,
            "passed": self.passed,
            "complete": self.complete,
            "log": str(self.log_path),
            "log_sha256": self.log_sha256,
            "log_entries": self.log_entries,
            "duplicates_dropped": self.duplicates_dropped,
            "dataset": str(self.dataset_path),
            "dataset_size": self.dataset_size,
            "tokenizer": self.tokenizer,
            "dtype": self.dtype,
            "rouge_engine": self.engine,
        }

    def to_text(self) -> str:
        """A human summary: the result dict, then one line per check."""
        lines = [format_results(self.results), ""]
        for metric, c in self.checks.items():
            bound = f">= {c['target']:.4f}" if c["max"] is None else f"in [{c['target']:.0f}, {c['max']:.0f}]"
            lines.append(f"{metric:<10} {c['value']:>14g}  {bound:<24} {'PASS' if c['passed'] else 'FAIL'}")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"{self.benchmark}: accuracy {verdict} ({self.results['gen_num']} samples, tokenizer "
                     f"{self.tokenizer}, {self.dtype})")
        if not self.complete:
            lines.append(f"note: the targets are defined on all {resolve_target(self.benchmark).dataset_size} "
                         "samples; this log covers a subset")
        return "\n".join(lines) + "\n"


def evaluate_accuracy_log(
    log_path: str | os.PathLike,
    dataset_path: str | os.PathLike,
    *,
    benchmark: str | None = None,
    tokenizer: str | None = None,
    workers: int | None = None,
    dtype: str | None = None,
) -> AccuracyReport:
    """Score a LoadGen accuracy log against a dataset the MLPerf way. ``benchmark`` and ``tokenizer`` default to what
    the prepared dataset file says (a bare cnn_eval.json: the registry's default benchmark and its reference
    tokenizer)."""
    refs = load_references(dataset_path)
    target = resolve_target(benchmark or refs.benchmark or DEFAULT_BENCHMARK)
    dtype = dtype or target.dtype
    log = read_accuracy_log(log_path, dtype)
    for e in log.entries:
        if e.qsl_idx >= len(refs.texts):
            raise AccuracyLogError(
                f"{log.path}: qsl_idx {e.qsl_idx} is outside the dataset ({len(refs.texts)} samples in "
                f"{refs.path}): wrong --dataset for this log?"
            )
    tokenizer_name = tokenizer or _default_tokenizer(target, refs)
    from mlperf_assets.harness.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer_name)
    decoded = tok.batch_decode([e.token_ids for e in log.entries], skip_special_tokens=True)
    targets = [refs.texts[e.qsl_idx] for e in log.entries]
    processed = postprocess_texts([*decoded, *targets], workers)
    preds, trefs = processed[: len(decoded)], processed[len(decoded):]
    scores = rouge_pairs(trefs, preds, workers=workers)
    results = summarize({m: [prf[2] for prf in scores[m]] for m in METRICS}, preds, quoted=target.quoted_scores)
    return AccuracyReport(
        benchmark=target.benchmark,
        results=results,
        checks=check_results(results, target),
        log_path=log.path,
        log_sha256=log.sha256,
        dataset_path=refs.path,
        tokenizer=getattr(tok, "name", tokenizer_name),
        dtype=dtype,
        dataset_size=len(refs.texts),
        log_entries=log.total_entries,
    )


def write_accuracy_txt(report: AccuracyReport, path: str | os.PathLike) -> Path:
    """Write ``report.to_accuracy_txt()`` atomically (temporary file in the same folder, then rename)."""
    return write_atomic(path, report.to_accuracy_txt())


# ------------------------------------------------------------------------------------------ MLCommons' own evaluation
# What evaluation.py imports (besides its sibling dataset.py), as Python module names and the packages giving them.
REFERENCE_EVALUATION_MODULES = {"numpy": "numpy", "nltk": "nltk", "evaluate": "evaluate",
                                "rouge_score": "rouge-score", "torch": "torch", "transformers": "transformers",
                                "pandas": "pandas"}
_RESULT_ITEM = re.compile(r"'(\w+)':\s*(?:np\.\w+\()?'?(-?[\d.]+)'?\)?")


@dataclass
class ReferenceEvaluation:
    """The figures MLCommons' evaluation.py printed, and the command that printed them."""

    script: Path
    argv: list[str]
    results: dict[str, float]
    output: str  # its stdout, verbatim

    def comparison(self, ours: dict[str, Any]) -> list[tuple[str, float | None, float | None, float | None]]:
        """(metric, ours, reference script, ours - reference) for every metric either printed."""
        rows = []
        for key in dict.fromkeys([*ours, *self.results]):
            a = float(ours[key]) if key in ours else None
            b = self.results.get(key)
            rows.append((key, a, b, None if a is None or b is None else round(a - b, 4)))
        return rows

    def comparison_text(self, ours: dict[str, Any]) -> str:
        lines = [f"{'metric':<10} {'mlperf-dagster':>16} {'evaluation.py':>16} {'difference':>12}"]
        for key, a, b, d in self.comparison(ours):
            def cell(v: float | None, w: int) -> str:
                return f"{'-':>{w}}" if v is None else f"{v:>{w}g}"
            lines.append(f"{key:<10} {cell(a, 16)} {cell(b, 16)} {cell(d, 12)}")
        return "\n".join(lines) + "\n"


def parse_reference_output(text: str) -> dict[str, float]:
    """The result dict evaluation.py prints last (``{'rouge1': '38.7321', ..., 'gen_len': np.int64(8209736), ...}``)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and "rouge1" in line:
            return {k: float(v) for k, v in _RESULT_ITEM.findall(line)}
    return {}


def reference_evaluation_argv(checkout: str | os.PathLike, log_path: str | os.PathLike,
                              dataset_path: str | os.PathLike, *, family: str, tokenizer: str, dtype: str,
                              total_samples: int) -> list[str]:
    """The command that runs ``checkout``'s evaluation.py as its README says; :class:`AccuracyError` (one line)
    when the checkout, the script's sibling files, the tokenizer or the Python packages it imports are missing."""
    import importlib.util
    import sys

    root = Path(checkout)
    if not root.is_dir():
        raise AccuracyError(f"--reference-evaluation {root} does not exist (a checkout of mlcommons/inference)")
    folder = root / BENCHMARKS[family].reference_evaluation_dir
    script = folder / "evaluation.py"
    if not script.is_file():
        raise AccuracyError(f"--reference-evaluation {root}: {script.relative_to(root)} not found (a checkout of "
                            "mlcommons/inference)")
    if not (folder / "dataset.py").is_file():
        raise AccuracyError(f"--reference-evaluation {root}: {folder.relative_to(root)}/dataset.py, which "
                            "evaluation.py imports, is missing (an incomplete checkout)")
    if tokenizer == "byte":
        raise AccuracyError("--reference-evaluation decodes with a Hugging Face tokenizer (AutoTokenizer); this "
                            "dataset was prepared with the byte tokenizer: give --tokenizer NAME_OR_FOLDER")
    missing = [pkg for mod, pkg in REFERENCE_EVALUATION_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise AccuracyError(f"--reference-evaluation: {script.name} imports packages not installed here: "
                            f"{', '.join(missing)} (pip install {' '.join(missing)})")
    return [sys.executable, str(script.resolve()), "--mlperf-accuracy-file", str(Path(log_path).resolve()),
            "--dataset-file", str(Path(dataset_path).resolve()), "--dtype", dtype, "--model-name", tokenizer,
            "--total-sample-count", str(total_samples)]


def run_reference_evaluation(checkout: str | os.PathLike, report: AccuracyReport,
                             timeout_s: float = 3600.0) -> ReferenceEvaluation:
    """Run the user's MLCommons ``evaluation.py`` on the log and dataset ``report`` scored (same tokenizer and dtype)
    and read its figures. It needs what it imports (``evaluate`` loads its ROUGE metric from the Hugging Face Hub
    and NLTK downloads punkt unless they are cached): its failure is an :class:`AccuracyError` with its last line."""
    import subprocess

    family = resolve_target(report.benchmark).family
    argv = reference_evaluation_argv(checkout, report.log_path, report.dataset_path, family=family,
                                     tokenizer=report.tokenizer, dtype=report.dtype,
                                     total_samples=report.dataset_size)
    script = Path(argv[1])
    try:
        proc = subprocess.run(argv, cwd=script.parent, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise AccuracyError(f"{script} did not finish within {timeout_s:.0f} s") from None
    results = parse_reference_output(proc.stdout)
    if proc.returncode != 0 or not results:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise AccuracyError(f"{script} failed (exit {proc.returncode}): {last}")
    return ReferenceEvaluation(script, argv, results, proc.stdout)
