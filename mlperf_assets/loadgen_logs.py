"""Pure parsers for MLPerf LoadGen output (any LoadGen 4.x to 6.x) and for our harness's run folders.

What is read, and which source wins:

* ``mlperf_log_detail.txt``: ``:::MLLOG {json}`` lines. The authoritative source of every figure.
* ``mlperf_log_summary.txt``: human text whose labels changed between versions. Used to cross-check the detail
  figures, to add precision where the detail log rounded to ~6 significant digits (``102907`` vs ``102906.82``),
  and as the only source when no detail log exists.
* ``mlperf_log_accuracy.json``: a complete JSON list, or the submission-truncated form (first and last 4 KiB
  joined by ``...``), which is recognised and reported, never half-parsed.
* ``accuracy.txt`` (evaluation console output); compliance verification output in every form the MLCommons
  scripts write: TEST06 ``verify_accuracy.txt`` (``... check pass: True``), TEST01 ``verify_accuracy.txt``
  (``num_... = N`` counters, ``TEST PASS``), TEST01/TEST04 ``verify_performance.txt`` (scores, ``TEST PASS``).
  A verification file of no known form is skipped with a reason (:class:`Skipped`); it never stops an ingest.
* Our harness: ``run_manifest.json``, ``progress.jsonl``, ``samples.jsonl`` (``harness/run_folder.py`` names every
  file of a harness run folder).

:func:`discover_runs` finds every LoadGen run below a folder and :func:`parse_run` turns one into a
:class:`ParsedRun` with canonical typed figures (latencies in ns, throughput per second). Nothing here writes.

Which figure is stored: where ``mlperf_log_summary.txt`` prints a figure, the stored value prints the same at the
summary's precision (``round(value, decimals) == summary``): the detail log's value when it has more digits and
rounds to the summary's, the summary's number otherwise. Figures without a summary line come from the detail log.
Every number is range-checked here: a value no column can hold (not finite, beyond 64-bit) is a
:class:`LogFormatError` naming the file, line and key, before anything is written.

Run ids: a harness run is ``<run_manifest.json run_id>-<mode>``; any other run is ``lg-`` + a hash of its
content (:func:`content_key`), so one run folder reached through a symlink, another relative path or a copy is
one run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

from mlperf_assets.harness.benchmarks import BENCHMARKS, LOADGEN_MODELS, submission_name
from mlperf_assets.harness.run_folder import (
    ACCURACY_LOG,
    ACCURACY_TXT,
    DETAIL_LOG,
    PROGRESS,
    PROGRESS_COUNTS,
    RUN_MANIFEST,
    SAMPLES,
    SUMMARY_LOG,
    USER_CONF,
    VERIFY_ACCURACY,
    VERIFY_PERFORMANCE,
)
from mlperf_assets.numbers import NumberError, as_float, checked_float, checked_int, fits, parse_float

MLLOG_PREFIX = ":::MLLOG"
SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream")
SCENARIO_DIRS = {s.lower(): s for s in SCENARIOS} | {"interactive": "Interactive"}
# accuracy_log_rng_seed set by compliance/TEST06/audit.config (the test also sets sampling_target=100).
TEST06_ACCURACY_LOG_SEED = 720381539243781796
# The (TTFT, TPOT) Server latency targets (ns) of the LoadGen models whose Server runs MLPerf calls Interactive
INTERACTIVE_LIMITS_NS = frozenset(
    (limits["ttft_latency_ns"], limits["tpot_latency_ns"])
    for limits in (m.server_limits_ns() for m in LOADGEN_MODELS.values() if m.server_scenario_label == "Interactive")
)


class LogFormatError(ValueError):
    """A file is not what its name says, is truncated or malformed. The message names the file (and line)."""


class NoRunsFoundError(LogFormatError):
    """A folder holds no LoadGen run."""


class SkippedRun(LogFormatError):
    """A run folder whose only files are of no form this parser knows (e.g. an unknown verification file): the
    folder is skipped; :func:`parse_runs` records each file (``skipped``) and goes on with the other folders."""

    def __init__(self, message: str, skipped: list[Skipped] | None = None) -> None:
        super().__init__(message)
        self.skipped = list(skipped or [])


@dataclass(frozen=True)
class Skipped:
    """A file or folder an ingest left out, and why (printed one per line by ``mlperf-dagster ingest``)."""

    path: str
    reason: str


# ----------------------------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    """Decode bytes leniently: real logs carry raw ``\\r`` and stray non-UTF-8 bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return data.decode("utf-8", errors="replace")


def _looks_binary(text: str) -> bool:
    """Random or binary bytes decoded leniently: NULs, or more than 1 % undecodable/control characters."""
    if "\x00" in text:
        return True
    bad = sum(1 for c in text if c == "\ufffd" or (c < " " and c not in "\t\n\r\x0c"))
    return bad >= 2 and bad > len(text) / 100


def _lines(text: str) -> list[str]:
    # Split on \n only; a lone \r (progress-bar residue) stays inside the line and is stripped with whitespace.
    return text.split("\n")


# ------------------------------------------------------------------------------------------ detail log


@dataclass(frozen=True)
class DetailEvent:
    seq: int  # 0-based order in the file
    line_no: int  # 1-based line in the file
    key: str
    value: Any
    time_ms: float | None
    event_type: str | None
    is_error: bool
    is_warning: bool
    src_file: str | None
    src_line: int | None


@dataclass
class DetailLog:
    path: Path
    events: list[DetailEvent]
    non_mllog_lines: int
    values: dict[str, Any] = field(default_factory=dict)  # first occurrence of each key
    lines: dict[str, int] = field(default_factory=dict)  # line of each key's first occurrence

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def where(self, key: str) -> str:
        """``file:line`` of the key's first occurrence, for messages."""
        return f"{self.path}:{self.lines[key]}" if key in self.lines else str(self.path)

    @property
    def warnings(self) -> list[DetailEvent]:
        return [e for e in self.events if e.is_warning]

    @property
    def errors(self) -> list[DetailEvent]:
        return [e for e in self.events if e.is_error]


def parse_detail_log(path: str | os.PathLike) -> DetailLog:
    """Parse ``mlperf_log_detail.txt``. Repeated keys are all kept as events; :attr:`DetailLog.values`
    holds each key's first occurrence (what LoadGen logged for the run; later repeats are re-logs)."""
    path = Path(path)
    text = _read_text(path)
    lines = _lines(text)
    events: list[DetailEvent] = []
    values: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    other = 0
    last_nonempty = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        pos = line.find(MLLOG_PREFIX)
        if pos < 0:
            other += 1
            continue
        payload = line[pos + len(MLLOG_PREFIX):].strip()
        try:
            obj = json.loads(payload)
        except json.JSONDecodeError as exc:
            what = "truncated last line" if i == last_nonempty else "malformed :::MLLOG line"
            raise LogFormatError(f"{path}:{i + 1}: {what} ({exc.msg} at column {exc.pos + 1})") from None
        except RecursionError:
            raise LogFormatError(f"{path}:{i + 1}: malformed :::MLLOG line (nested too deeply)") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or "value" not in obj:
            raise LogFormatError(f"{path}:{i + 1}: :::MLLOG line without a 'key' and 'value'")
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        time_ms = as_float(obj.get("time_ms"))
        if time_ms is not None and not math.isfinite(time_ms):
            raise LogFormatError(f"{path}:{i + 1}: 'time_ms' {obj.get('time_ms')!r} is not a finite number")
        src_line = meta.get("line_no")
        if isinstance(src_line, bool) or not isinstance(src_line, int):
            src_line = None
        elif not fits(src_line, 32):
            raise LogFormatError(
                f"{path}:{i + 1}: metadata 'line_no' {src_line} is out of range for a source line number (max {2**31 - 1})"
            )
        ev = DetailEvent(
            seq=len(events),
            line_no=i + 1,
            key=obj["key"],
            value=obj["value"],
            time_ms=time_ms,
            event_type=_str_or_none(obj.get("event_type")),
            is_error=bool(meta.get("is_error", False)),
            is_warning=bool(meta.get("is_warning", False)),
            src_file=_str_or_none(meta.get("file")),
            src_line=src_line,
        )
        events.append(ev)
        if ev.key not in values:
            values[ev.key] = ev.value
            first_line[ev.key] = i + 1
    if not events:
        what = "binary content, not text" if _looks_binary(text) else "no ':::MLLOG' lines"
        raise LogFormatError(f"{path}: not a LoadGen detail log ({what})")
    return DetailLog(path=path, events=events, non_mllog_lines=other, values=values, lines=first_line)


def _str_or_none(v: Any) -> str | None:
    return None if v is None else v if isinstance(v, str) else json.dumps(v)


# ----------------------------------------------------------------------------------------- summary log

_SUMMARY_LINE = re.compile(r"^([A-Za-z0-9][^:]*?)\s*:\s*(.*?)\s*$")
_PCT = r"(\d+(?:\.\d+)?)(?:th)?"


@dataclass
class SummaryLog:
    path: Path
    fields: dict[str, str]  # label -> raw value string (first occurrence)
    figures: dict[str, str]  # canonical figure name -> raw value string
    scenario: str | None
    mode: str | None
    result_validity: str | None
    warnings_encountered: bool | None
    errors_encountered: bool | None
    labels: dict[str, str] = field(default_factory=dict)  # canonical figure name -> the label it was read from
    truncated: bool = False  # the file ends inside a line (that line is not read)

    def where(self, name: str) -> str:
        """``file ('label')`` of a figure, for messages."""
        return f"{self.path} ('{self.labels[name]}')" if name in self.labels else str(self.path)

    def has_result(self) -> bool:
        """A 'Result is' verdict or at least one result figure: what a summary read alone needs to be a run."""
        return self.result_validity in ("VALID", "INVALID") or any(
            parse_float(self.figures[n]) is not None for n in _RESULT_FIGURES if n in self.figures
        )


def _pct_name(p: str) -> str:
    v = float(p)
    return f"p{int(v)}" if v == int(v) else f"p{v:g}".replace(".", "")


# (regex over the label, canonical-name template). Order matters only for readability; labels are disjoint.
_SUMMARY_FIGURES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^Samples per second$"), "samples_per_second"),
    (re.compile(r"^Tokens per second$"), "tokens_per_second"),
    (re.compile(r"^Tokens per second \(inferred\)$"), "inferred_tokens_per_second"),
    (re.compile(r"^Completed samples per second$"), "completed_samples_per_second"),
    (re.compile(r"^Completed tokens per second$"), "completed_tokens_per_second"),
    (re.compile(r"^Completed tokens per second \(inferred\)$"), "inferred_completed_tokens_per_second"),
    (re.compile(r"^Scheduled samples per second$"), "scheduled_samples_per_second"),
    (re.compile(r"^QPS w/ loadgen overhead$"), "qps_with_loadgen_overhead"),
    (re.compile(r"^QPS w/o loadgen overhead$"), "qps_without_loadgen_overhead"),
    (re.compile(r"^TPS w/ loadgen overhead$"), "tps_with_loadgen_overhead"),
    (re.compile(r"^TPS w/o loadgen overhead$"), "tps_without_loadgen_overhead"),
    (re.compile(r"^(Min|Max|Mean) latency \(ns\)$"), "latency_{0}_ns"),
    (re.compile(rf"^{_PCT} percentile latency \(ns\)$"), "latency_{p}_ns"),
    (re.compile(r"^(Min|Max|Mean) First Token latency \(ns\)$"), "ttft_{0}_ns"),
    (re.compile(rf"^{_PCT} percentile first token latency \(ns\)$"), "ttft_{p}_ns"),
    (re.compile(rf"^{_PCT} first token percentile latency \(ns\)$"), "ttft_{p}_ns"),
    (re.compile(r"^(Min|Max|Mean) Time (?:to|per) Output Token \(ns\)$"), "tpot_{0}_ns"),
    (re.compile(rf"^{_PCT} percentile time (?:to|per) output token \(ns\)$"), "tpot_{p}_ns"),
    (re.compile(r"^samples_per_query$"), "samples_per_query"),
    (re.compile(r"^target_qps$"), "target_qps"),
    (re.compile(r"^target_latency \(ns\)$"), "target_latency_ns"),
    (re.compile(r"^ttft_latency \(ns\)$"), "ttft_latency_ns"),
    (re.compile(r"^tpot_latency \(ns\)$"), "tpot_latency_ns"),
    (re.compile(r"^min_duration \(ms\)$"), "min_duration_ms"),
    (re.compile(r"^min_query_count$"), "min_query_count"),
    (re.compile(r"^performance_sample_count$"), "performance_sample_count"),
]
_SUMMARY_FLAGS = {
    "Performance constraints satisfied": "perf_constraints_met",
    "Min duration satisfied": "min_duration_met",
    "Min queries satisfied": "min_queries_met",
    "Early stopping satisfied": "early_stopping_met",
}


def parse_summary_log(path: str | os.PathLike) -> SummaryLog:
    """Parse ``mlperf_log_summary.txt`` by its label rules (LoadGen 4.0 .. 6.x wordings).

    Binary content is refused; a file that ends inside a line (cut while copying) has that last line ignored
    and ``truncated`` set. Whether the file holds a result at all is :meth:`SummaryLog.has_result`: required by
    :func:`parse_run` when no detail log is beside it."""
    path = Path(path)
    text = _read_text(path)
    if _looks_binary(text):
        raise LogFormatError(f"{path}: not a LoadGen summary log (binary content, not text)")
    fields: dict[str, str] = {}
    figures: dict[str, str] = {}
    labels: dict[str, str] = {}
    banner = "MLPerf Results Summary" in text
    warn = None
    err = None
    lines = _lines(text)
    truncated = bool(text) and not text.endswith("\n")
    if truncated:
        lines = lines[:-1]
    for raw in lines:
        line = raw.strip()
        if line == "No warnings encountered during test.":
            warn = False
        elif line == "No errors encountered during test.":
            err = False
        elif line.startswith("WARNING") and "encountered" in line:
            warn = True
        elif line.startswith("ERROR") and "encountered" in line:
            err = True
        m = _SUMMARY_LINE.match(line)
        if not m or line.startswith("*"):
            continue
        label, value = m.group(1).strip(), m.group(2).strip()
        if not value:
            continue
        fields.setdefault(label, value)
        for rx, name in _SUMMARY_FIGURES:
            fm = rx.match(label)
            if fm:
                if "{p}" in name:
                    name = name.format(p=_pct_name(fm.group(1)))
                elif "{0}" in name:
                    name = name.format(fm.group(1).lower())
                if name not in figures:
                    figures[name] = value
                    labels[name] = label
                break
        if label in _SUMMARY_FLAGS:
            figures.setdefault(_SUMMARY_FLAGS[label], value)
    if not banner and not fields and warn is None and err is None:
        raise LogFormatError(f"{path}: not a LoadGen summary log (no 'MLPerf Results Summary' banner or result lines)")
    if banner and "Scenario" not in fields:
        raise LogFormatError(f"{path}: summary log without a 'Scenario :' line (truncated?)")
    return SummaryLog(
        path=path,
        fields=fields,
        figures=figures,
        scenario=fields.get("Scenario"),
        mode=fields.get("Mode"),
        result_validity=fields.get("Result is"),
        warnings_encountered=warn,
        errors_encountered=err,
        labels=labels,
        truncated=truncated,
    )


# ---------------------------------------------------------------------------------------- accuracy log


@dataclass
class AccuracyLog:
    path: Path
    state: str  # "complete" | "empty" | "submission-truncated"
    seq_id: list[int] = field(default_factory=list)
    qsl_idx: list[int] = field(default_factory=list)
    data_bytes: list[int] = field(default_factory=list)  # len(bytes.fromhex(data))
    token_count: list[int | None] = field(default_factory=list)
    has_token_data: bool = False

    @property
    def samples(self) -> int:
        return len(self.qsl_idx)

    @property
    def unique_samples(self) -> int:
        return len(set(self.qsl_idx))


_TRUNCATION_MARK = "\n\n...\n\n"


def parse_accuracy_log(path: str | os.PathLike) -> AccuracyLog:
    """Parse ``mlperf_log_accuracy.json``. The submission checker's truncated copy (first and last 4 KiB joined
    by a ``...`` line) gives ``state="submission-truncated"`` and no samples; any other invalid JSON is an error."""
    path = Path(path)
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if _TRUNCATION_MARK in text.replace("\r\n", "\n") and text.lstrip().startswith("["):
            return AccuracyLog(path=path, state="submission-truncated")
        line = text.count("\n", 0, exc.pos) + 1
        what = "truncated (ends before the closing ']')" if exc.pos >= len(text.rstrip()) else exc.msg
        raise LogFormatError(f"{path}:{line}: not a complete LoadGen accuracy log: {what}") from None
    if not isinstance(obj, list):
        raise LogFormatError(f"{path}: not a LoadGen accuracy log (top level is not a JSON list)")
    log = AccuracyLog(path=path, state="complete" if obj else "empty")
    try:  # the common, well-formed case in bulk; the loop below names the first bad entry otherwise
        datas = [item["data"] for item in obj]
        lens = [len(d) for d in datas]
        if not any(n % 2 for n in lens) and all(isinstance(d, str) for d in datas):
            qsl = [item["qsl_idx"] for item in obj]
            seq = [item.get("seq_id", n) for n, item in enumerate(obj)]
            tcs = [item.get("token_count") for item in obj]
            if all(type(v) is int for v in qsl + seq) and all(tc is None or type(tc) is int for tc in tcs) and (
                _int_columns_fit(qsl, seq, bits=64) and _int_columns_fit([tc for tc in tcs if tc is not None], bits=32)
            ):
                log.qsl_idx, log.seq_id, log.token_count = qsl, seq, tcs
                log.data_bytes = [n // 2 for n in lens]
                log.has_token_data = any("token_data" in item for item in obj)
                return log
    except (TypeError, KeyError, ValueError, AttributeError):
        pass
    log = AccuracyLog(path=path, state="complete" if obj else "empty")
    for n, item in enumerate(obj):
        if not isinstance(item, dict) or "qsl_idx" not in item or "data" not in item:
            raise LogFormatError(f"{path}: entry {n} lacks 'qsl_idx'/'data': not a LoadGen accuracy log")
        data = item["data"]
        if not isinstance(data, str) or len(data) % 2:
            raise LogFormatError(f"{path}: entry {n} (qsl_idx {item['qsl_idx']}): 'data' is not a hex string")
        try:
            qsl_idx = checked_int(item["qsl_idx"])
            seq_id = checked_int(item.get("seq_id", n))
            tc = item.get("token_count")
            token_count = checked_int(tc, bits=32) if isinstance(tc, (int, float)) else None
        except NumberError as exc:
            raise LogFormatError(f"{path}: entry {n}: {exc}") from None
        if qsl_idx is None or seq_id is None:
            raise LogFormatError(f"{path}: entry {n}: 'qsl_idx'/'seq_id' is not an integer")
        log.seq_id.append(seq_id)
        log.qsl_idx.append(qsl_idx)
        log.data_bytes.append(len(data) // 2)
        log.token_count.append(token_count)
        if "token_data" in item:
            log.has_token_data = True
    return log


def _int_columns_fit(*columns: list[int], bits: int) -> bool:
    return all(fits(min(c), bits) and fits(max(c), bits) for c in columns if c)


# ---------------------------------------------------------------------------------------- accuracy.txt


@dataclass
class AccuracyTxt:
    path: Path
    results: dict[str, float | int]  # metric -> number
    raw: dict[str, str]  # metric -> the literal as printed ('38.732' keeps its form)
    hash: str | None


# Metrics the store keeps as integers (run_summary's gen_len, gen_num).
ACCURACY_INT_METRICS = ("gen_len", "gen_num")
_RESULTS_DICT = re.compile(r"\{[^{}]*'rouge1'[^{}]*\}")
_DICT_ITEM = re.compile(r"'([A-Za-z0-9_]+)'\s*:\s*(?:np\.\w+\()?'?(-?[0-9][0-9.eE+-]*)'?\)?")
_HASH = re.compile(r"hash\s*=\s*([0-9a-fA-F]{64})")


def parse_accuracy_txt(path: str | os.PathLike) -> AccuracyTxt:
    """Find the ``Results`` dict (quoted or bare values) and the ``hash=`` line amid console noise."""
    path = Path(path)
    text = _read_text(path)
    matches = _RESULTS_DICT.findall(text)
    if not matches:
        raise LogFormatError(f"{path}: no Results dict with 'rouge1' found (not an MLPerf accuracy.txt?)")
    found = matches[-1]
    raw = {k: v for k, v in _DICT_ITEM.findall(found)}
    results: dict[str, float | int] = {}
    for k, v in raw.items():
        try:
            results[k] = int(v) if re.fullmatch(r"-?\d+", v) else float(v)
        except ValueError:
            raise LogFormatError(f"{path}: Results value for {k!r} is not a number: {v!r}") from None
        try:  # what the store can hold: finite, and the integer metrics within 64 bits
            checked_int(v) if k in ACCURACY_INT_METRICS else checked_float(v)
        except NumberError as exc:
            raise LogFormatError(f"{path}: Results value for {k!r}: {exc}") from None
    hm = _HASH.findall(text)
    return AccuracyTxt(path=path, results=results, raw=raw, hash=hm[-1].lower() if hm else None)


# ------------------------------------------------------------------------------------ verify_accuracy


@dataclass
class VerifyAccuracy:
    """A compliance verification file (any form the MLCommons scripts write; the name is historical).

    ``checks``: check name -> ``"True" | "False" | "Skipped"`` (TEST06: ``First token check``...; TEST01/TEST04
    ``TEST PASS``/``TEST FAIL`` become ``Accuracy check`` or ``Performance check``). ``values``: the counters and
    scores printed beside them (``num_perf_log_data_mismatch``, ``reference score``...). ``test``: ``TEST06``,
    ``TEST01`` when the text says so, else None (the folder name decides)."""

    path: Path
    checks: dict[str, str]
    complete: bool
    test: str | None = None
    kind: str = "accuracy"  # "accuracy" | "performance": which verification the file holds
    values: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.complete and bool(self.checks) and all(v in ("True", "Skipped") for v in self.checks.values())


_TEST06_CHECKS = {"First token check", "EOS check", "Sample length check"}  # compliance/TEST06/run_verification.py
_VERIFY_CHECK = re.compile(r"^(.+?) pass:\s*(\S+)")
_VERIFY_DONE = re.compile(r"^(TEST\d+) verification (complete|failed)", re.IGNORECASE)
_VERIFY_VERDICT = re.compile(r"^TEST (PASS|FAIL)\b:?\s*(.*)$")
_VERIFY_VALUE = re.compile(r"^(num_[a-z_]+|[Rr]eference score|[Tt]est score)\s*=\s*(\S+)\s*$")


def parse_verify_accuracy(path: str | os.PathLike) -> VerifyAccuracy:
    """Parse a compliance verification file: TEST06 ``verify_accuracy.txt`` (``... check pass: True`` lines and
    ``TEST06 verification complete|failed``), TEST01 ``verify_accuracy.txt`` (``num_... = N`` counters and a
    ``TEST PASS``/``TEST FAIL`` line), TEST01/TEST04 ``verify_performance.txt`` (``reference score = X``,
    ``test score = Y``, ``TEST PASS``/``TEST FAIL: why``), or the summary ``run_verification.py`` prints
    (``Accuracy check pass: True`` ... ``TEST01 verification complete``). Anything else is a
    :class:`LogFormatError` naming the file (the caller skips the file with that reason)."""
    path = Path(path)
    text = _read_text(path)
    if _looks_binary(text):
        raise LogFormatError(f"{path}: not a compliance verification file (binary content, not text)")
    kind = "performance" if path.name == VERIFY_PERFORMANCE else "accuracy"
    checks: dict[str, str] = {}
    values: dict[str, str] = {}
    complete = False
    test: str | None = None
    for raw in _lines(text):
        line = raw.strip()
        if m := _VERIFY_CHECK.match(line):
            checks[m.group(1).strip()] = m.group(2)
        elif m := _VERIFY_DONE.match(line):
            complete = True
            test = m.group(1).upper()
            if m.group(2).lower() == "failed":
                checks.setdefault("verification", "False")
        elif m := _VERIFY_VERDICT.match(line):
            complete = True
            checks[f"{kind.capitalize()} check"] = "True" if m.group(1) == "PASS" else "False"
            if m.group(2):
                values["fail_reason"] = m.group(2)
        elif m := _VERIFY_VALUE.match(line):
            values[m.group(1).lower()] = m.group(2)
    if test is None and any(k.startswith("num_") for k in values):
        test = "TEST01"  # the counters TEST01's verify_accuracy.py prints
    if test is None and set(checks) & _TEST06_CHECKS:
        test = "TEST06"
    if not checks and not complete:
        raise LogFormatError(
            f"{path}: not a compliance verification file of a known form (no '... pass:', 'TEST PASS'/'TEST FAIL' "
            "or 'TESTnn verification' line)"
        )
    return VerifyAccuracy(path=path, checks=checks, complete=complete, test=test, kind=kind, values=values)


# ------------------------------------------------------------------------------- harness files


def parse_run_manifest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        obj = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, dict) or "run_id" not in obj:
        raise LogFormatError(f"{path}: not a harness run manifest (no 'run_id')")
    return obj


def jsonl_records(path: Path, *, lenient_tail: bool, parse_constant=None,
                  bad_line: str = "malformed JSON line") -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
    """The JSON objects of a .jsonl file as (1-based line number, object), and the number of a last line left out
    because it was cut short (only with ``lenient_tail``: an interrupted writer, no newline after it), else None.
    Any other line that is not a JSON object raises :class:`LogFormatError` naming the file and line (``bad_line``
    says what it is not); ``parse_constant`` as for ``json.loads`` (e.g. to refuse NaN and Infinity)."""
    text = _read_text(path)
    numbered = [(i + 1, ln) for i, ln in enumerate(_lines(text)) if ln.strip()]
    try:  # fast path: one C-level decode for the whole file; line-by-line only to locate a problem
        fast = json.loads("[" + ",".join(ln for _, ln in numbered) + "]", parse_constant=parse_constant)
        if len(fast) == len(numbered) and all(isinstance(o, dict) for o in fast):
            return [(n, o) for (n, _), o in zip(numbered, fast)], None
    except (ValueError, RecursionError):  # RecursionError: a line nested too deeply for the decoder
        pass
    out: list[tuple[int, dict[str, Any]]] = []
    for k, (n, raw) in enumerate(numbered):
        try:
            obj = json.loads(raw, parse_constant=parse_constant)
        except RecursionError:
            raise LogFormatError(f"{path}:{n}: {bad_line} (nested too deeply)") from None
        except ValueError as exc:
            if lenient_tail and k == len(numbered) - 1 and not text.endswith("\n"):
                return out, n
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise LogFormatError(f"{path}:{n}: {bad_line} ({msg})") from None
        if not isinstance(obj, dict):
            raise LogFormatError(f"{path}:{n}: expected a JSON object per line")
        out.append((n, obj))
    return out, None


def _jsonl(path: Path, *, lenient_tail: bool) -> list[dict[str, Any]]:
    return [obj for _, obj in jsonl_records(path, lenient_tail=lenient_tail)[0]]


@dataclass
class SampleTimings:
    qsl_idx: list[int]
    issue_ns: list[int]
    first_token_ns: list[int | None]
    complete_ns: list[int]
    output_tokens: list[int | None]


def parse_samples_jsonl(path: str | os.PathLike, *, lenient_tail: bool = False) -> SampleTimings:
    path = Path(path)
    fields = {"qsl_idx": "int64", "issue_ns": "int64", "first_token_ns": "int64", "complete_ns": "int64",
              "output_tokens": "int64"}
    rows = _jsonl(path, lenient_tail=lenient_tail)
    try:  # bulk conversion; the loop below names the first bad record otherwise
        cols = [[o[k] if k in ("qsl_idx", "issue_ns", "complete_ns") else o.get(k) for o in rows] for k in fields]
        if all(type(v) is int for c in cols[:2] + cols[3:4] for v in c) and all(
            v is None or type(v) is int for c in (cols[2], cols[4]) for v in c
        ) and _int_columns_fit(cols[0], cols[1], cols[3], [v for v in cols[2] if v is not None], bits=64) and (
            _int_columns_fit([v for v in cols[4] if v is not None], bits=32)
        ):
            return SampleTimings(*cols)
    except (KeyError, TypeError, ValueError):
        pass
    st = SampleTimings([], [], [], [], [])
    for n, o in enumerate(rows):
        values: dict[str, int | None] = {}
        for key in fields:
            v = o.get(key)
            if v is None and key not in ("first_token_ns", "output_tokens"):
                raise LogFormatError(f"{path}: record {n + 1}: missing field {key!r}")
            try:
                values[key] = checked_int(v, bits=32 if key == "output_tokens" else 64)
            except NumberError as exc:
                raise LogFormatError(f"{path}: record {n + 1}: {key!r} {exc}") from None
            if v is not None and values[key] is None:
                raise LogFormatError(f"{path}: record {n + 1}: {key!r} is not an integer ({v!r})")
        st.qsl_idx.append(values["qsl_idx"])  # type: ignore[arg-type]
        st.issue_ns.append(values["issue_ns"])  # type: ignore[arg-type]
        st.first_token_ns.append(values["first_token_ns"])
        st.complete_ns.append(values["complete_ns"])  # type: ignore[arg-type]
        st.output_tokens.append(values["output_tokens"])
    return st


def parse_progress_jsonl(path: str | os.PathLike, *, lenient_tail: bool = False) -> list[dict[str, Any]]:
    path = Path(path)
    rows = _jsonl(path, lenient_tail=lenient_tail)
    for n, o in enumerate(rows):
        if "elapsed_s" not in o:
            raise LogFormatError(f"{path}: record {n + 1}: no 'elapsed_s' (not a harness {PROGRESS})")
        for key in PROGRESS_COUNTS:
            try:
                checked_int(o.get(key)) if isinstance(o.get(key), (int, float)) else None
            except NumberError as exc:
                raise LogFormatError(f"{path}: record {n + 1}: {key!r} {exc}") from None
    return rows


# ------------------------------------------------------------------------------ paths: what a folder is


@dataclass(frozen=True)
class PathInfo:
    division: str | None = None
    submitter: str | None = None
    system: str | None = None
    benchmark: str | None = None  # submission spelling, e.g. "llama3.1-8b"
    scenario_dir: str | None = None  # "Offline" | "Server" | "SingleStream" | "MultiStream" | "Interactive"
    group_key: str | None = None  # the scenario folder (results and compliance of one scenario share it)


def normalize_benchmark(name: str) -> str:
    """Submission spelling of a benchmark name from a folder, a manifest or a LoadGen model name.

    Names of the benchmark registry (``harness/benchmarks.py``) get its :func:`submission_name`
    (``llama3_1-8b`` -> ``llama3.1-8b``, ``llama3_1-8b-interactive`` -> ``llama3.1-8b-interactive``), except a
    harness benchmark that has several submission names (``gptj``/``gpt-j``: gptj-99 or gptj-99.9), which keeps
    the harness name (``gptj``): the run alone does not say which target it was for. Names the registry does not
    know (llama2-70b, mixtral...) only get the ``_`` -> ``.``/``-`` spellings of Intel-style folders."""
    n = name.strip()
    for bench in BENCHMARKS.values():
        if len(bench.accuracy_targets) > 1 and n.lower() in (bench.name, *bench.aliases):
            return bench.name
    canonical = submission_name(n)
    if canonical is not None:
        return canonical
    n = re.sub(r"^llama3_1", "llama3.1", n)
    n = re.sub(r"^llama2_70b", "llama2-70b", n)
    return n


def path_info(folder: str | os.PathLike) -> PathInfo:
    """Labels from a submission tree path: ``<division>/<submitter>/(results|compliance)/<system>/<bench>/<Scenario>``."""
    parts = Path(os.path.abspath(folder)).parts
    for i in range(len(parts) - 1, 2, -1):
        scen = SCENARIO_DIRS.get(parts[i].lower())
        if scen is None:
            continue
        if i >= 3 and parts[i - 3] in ("results", "compliance"):
            root = parts[: i - 3]
            division = root[-2] if len(root) >= 2 else None
            submitter = root[-1] if root else None
            key = os.path.join(*root, "results", *parts[i - 2: i + 1])
            return PathInfo(division, submitter, parts[i - 2], normalize_benchmark(parts[i - 1]), scen, key)
    # Not a submission tree: the nearest scenario-named folder still labels the scenario.
    for i in range(len(parts) - 1, 0, -1):
        scen = SCENARIO_DIRS.get(parts[i].lower())
        if scen is not None:
            return PathInfo(scenario_dir=scen, group_key=os.path.join(*parts[: i + 1]))
    return PathInfo()


_ROLE_DIR = re.compile(r"^(run_\d+|ranging|performance|accuracy|compliance|TEST\d+)$", re.IGNORECASE)


def run_group_folder(run_folder: str | os.PathLike) -> str:
    """The scenario folder of a run folder: strip ``performance/run_1``, ``accuracy``, ``compliance/TEST06``...."""
    p = Path(os.path.abspath(run_folder))
    while _ROLE_DIR.match(p.name) and p.parent != p:
        p = p.parent
    return str(p)


def compliance_test_from_path(run_folder: str | os.PathLike) -> str | None:
    for part in reversed(Path(os.path.abspath(run_folder)).parts):
        if re.fullmatch(r"TEST\d+", part, re.IGNORECASE):
            return part.upper()
    return None


def _under_compliance(run_folder: str | os.PathLike) -> bool:
    return any(p.lower() == "compliance" for p in Path(os.path.abspath(run_folder)).parts)


# ------------------------------------------------------------------ systems JSON: what the run ran on, which round

SYSTEMS_DIR = "systems"
_SYSTEM_JSON_MAX_BYTES = 1 << 20
# `.../inference_results_v5.1/...`, a `v5.1` folder, or a flattened copy named `<source>-v5.1__<system>__...`
_ROUND_PATTERNS = (re.compile(r"^inference_results_(v\d+\.\d+)$", re.IGNORECASE),
                   re.compile(r"^(v\d+\.\d+)$", re.IGNORECASE),
                   re.compile(r"^[A-Za-z0-9_.]*-(v\d+\.\d+)__", re.IGNORECASE))
_NO_VALUE = {"", "n/a", "na", "none", "null", "-", "not applicable"}


def results_round(folder: str | os.PathLike) -> str | None:
    """The MLPerf round (`v5.1`) a run folder's path names, nearest folder first; None when none does."""
    for part in reversed(Path(os.path.abspath(folder)).parts):
        for pattern in _ROUND_PATTERNS:
            if (m := pattern.match(part)) is not None:
                return m.group(1).lower()
    return None


def parse_system_json(path: str | os.PathLike) -> dict[str, Any]:
    """A submission's ``systems/<system>.json`` as a dict. Raises :class:`LogFormatError` (naming the file) for a
    file that is too big, not UTF-8, not JSON, or not a JSON object."""
    p = Path(path)
    try:
        raw = p.read_bytes()[: _SYSTEM_JSON_MAX_BYTES + 1]
    except OSError as exc:
        raise LogFormatError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > _SYSTEM_JSON_MAX_BYTES:
        raise LogFormatError(f"{p}: larger than {_SYSTEM_JSON_MAX_BYTES} bytes, not a systems description")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise LogFormatError(f"{p}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"{p}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise LogFormatError(f"{p}: not a JSON object (a {type(data).__name__})")
    return data


def _system_text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = " ".join(str(value).split())
    return None if text.lower() in _NO_VALUE else text


def _system_count(value: Any) -> int | None:
    """A count given as a number or a string of digits ("8"); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**31 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and 0 <= value < 2**31 else None
    if isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
        return n if n < 2**31 else None
    return None


def run_gpus(manifest: dict[str, Any]) -> tuple[list[Any], str]:
    """The GPUs a harness run used, and where that came from: its telemetry's GPU list (the GPUs NVML sampled:
    ``CUDA_VISIBLE_DEVICES``'s, so only the run's own), else the manifest's ``gpus`` (nvidia-smi; manifests written
    before it was narrowed to ``CUDA_VISIBLE_DEVICES`` list every GPU of the host)."""
    telemetry = manifest.get("telemetry")
    used = telemetry.get("gpus") if isinstance(telemetry, dict) else None
    if isinstance(used, list) and any(isinstance(g, dict) and _system_text(g.get("name")) for g in used):
        return used, f"{RUN_MANIFEST} (telemetry)"
    gpus = manifest.get("gpus")
    return (gpus if isinstance(gpus, list) else []), f"{RUN_MANIFEST} (nvidia-smi)"


def system_context(folder: str | os.PathLike, manifest: dict[str, Any] | None = None,
                   info: PathInfo | None = None) -> dict[str, Any]:
    """What a run ran on and where it was published, as the ``run_systems`` columns: from the submission tree's
    ``<division>/<submitter>/systems/<system>.json`` (accelerator model and count per node, nodes, host CPU,
    framework, division), or for a harness run from the GPUs its ``run_manifest.json`` says it used (:func:`run_gpus`);
    the results round from the path. Never raises: a missing or malformed systems JSON leaves the accelerator
    unknown and says why in ``system_note``."""
    folder = Path(os.path.abspath(folder))
    info = info if info is not None else path_info(folder)
    row: dict[str, Any] = {
        "system_source": None, "system_json": None, "system_name": info.system, "accelerator": None,
        "accelerators_per_node": None, "number_of_nodes": None, "host_processor": None, "framework": None,
        "division": info.division, "round": results_round(folder), "system_note": None,
    }
    notes: list[str] = []
    if manifest:
        gpus, source = run_gpus(manifest)
        names = [n for g in gpus if isinstance(g, dict) and (n := _system_text(g.get("name")))]
        backend = manifest.get("backend") if isinstance(manifest.get("backend"), dict) else {}
        name = _system_text(backend.get("name"))
        versions = backend.get("versions") if isinstance(backend.get("versions"), dict) else {}
        row["framework"] = f"{name} {versions[name]}" if name and _system_text(versions.get(name)) else name
        if names:
            row.update(system_source=source, accelerators_per_node=len(names),
                       number_of_nodes=1, accelerator=names[0] if len(set(names)) == 1 else
                       " + ".join(sorted(set(names))))
        else:
            notes.append(f"{RUN_MANIFEST} lists no GPU (no nvidia-smi on the node, or it found none)")
    elif info.system is None:
        notes.append("not in a results tree (<division>/<submitter>/results/<system>/...), so no systems JSON")
    else:
        parts = folder.parts
        roots = [i for i in range(len(parts) - 1) if parts[i] in ("results", "compliance") and parts[i + 1] == info.system]
        systems = Path(*parts[: roots[-1]]) / SYSTEMS_DIR if roots else None
        path = systems / f"{info.system}.json" if systems is not None else None
        if path is None or not path.is_file():
            notes.append(f"no {SYSTEMS_DIR}/{info.system}.json in the results tree")
        else:
            row["system_json"] = str(path)
            try:
                data = parse_system_json(path)
            except LogFormatError as exc:
                notes.append(f"{SYSTEMS_DIR}/{info.system}.json unusable: {_reason(exc, path)}")
                data = None
            if data is not None:
                row["system_source"] = "systems JSON"
                row["system_name"] = _system_text(data.get("system_name")) or info.system
                row["host_processor"] = _system_text(data.get("host_processor_model_name"))
                row["framework"] = _system_text(data.get("framework"))
                row["division"] = info.division or _system_text(data.get("division"))
                row["number_of_nodes"] = _system_count(data.get("number_of_nodes"))
                accelerator = _system_text(data.get("accelerator_model_name"))
                count = _system_count(data.get("accelerators_per_node"))
                if accelerator is None:
                    notes.append(f"{SYSTEMS_DIR}/{info.system}.json names no accelerator (accelerator_model_name "
                                 f"{data.get('accelerator_model_name')!r})")
                elif count is None or count == 0:
                    notes.append(f"{SYSTEMS_DIR}/{info.system}.json: accelerators_per_node "
                                 f"{data.get('accelerators_per_node')!r} is not a count of accelerators")
                    row["accelerator"] = accelerator
                else:
                    row["accelerator"], row["accelerators_per_node"] = accelerator, count
    row["system_note"] = "; ".join(notes) or None
    return row


# ------------------------------------------------------------------------------------------ discovery


_RUN_MARKERS = (DETAIL_LOG, SUMMARY_LOG, RUN_MANIFEST, VERIFY_ACCURACY, VERIFY_PERFORMANCE)


def discover_runs(path: str | os.PathLike) -> list[Path]:
    """Every run folder at or below ``path``: folders holding a detail or summary log, a harness
    ``run_manifest.json``, or a compliance ``verify_accuracy.txt`` / ``verify_performance.txt``. Sorted, absolute
    (symlinks kept: the run ids do not depend on the path, see :func:`content_key`)."""
    root = Path(os.path.abspath(path))
    if not root.exists():
        raise NoRunsFoundError(f"{root}: no such file or folder")
    if root.is_file():
        if root.name in _RUN_MARKERS:
            return [root.parent]
        raise NoRunsFoundError(f"{root}: give a run folder (or a folder above runs), not a single file")
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle, or the same folder reached twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(m in filenames for m in _RUN_MARKERS):
            found.append(Path(dirpath))
    if not found:
        raise NoRunsFoundError(
            f"{root}: no LoadGen run found (looked for {', '.join(_RUN_MARKERS)})"
        )
    return sorted(found)


# --------------------------------------------------------------------------------------- parsed run

# Canonical figure -> detail keys (first present wins). Latencies ns; throughput per second.
_PCTS = {"p50": "50.00", "p90": "90.00", "p95": "95.00", "p97": "97.00", "p99": "99.00", "p999": "99.90"}
DETAIL_FIGURES: dict[str, tuple[str, ...]] = {
    "scheduled_samples_per_second": ("result_scheduled_samples_per_sec",),
    "completed_samples_per_second": ("result_completed_samples_per_sec",),
    "offline_samples_per_second": ("result_samples_per_second",),
    "qps_without_loadgen_overhead": ("result_qps_without_loadgen_overhead",),
    "qps_with_loadgen_overhead": ("result_qps_with_loadgen_overhead",),
    "offline_tokens_per_second": ("result_tokens_per_second",),
    "inferred_tokens_per_second": ("result_inferred_tokens_per_second",),
    "completed_tokens_per_second_raw": ("result_completed_tokens_per_second",),
    "inferred_completed_tokens_per_second": ("result_inferred_completed_tokens_per_second",),
    "token_throughput_with_loadgen_overhead": ("result_token_throughput_with_loadgen_overhead",),
    # SingleStream "TPS w/o loadgen overhead": LoadGen logs it per nanosecond as result_token_throughput
    # (tokens / (mean latency ns x samples)); scaled to per second in _detail_value.
    "tps_without_loadgen_overhead": ("result_token_throughput",),
    "latency_min_ns": ("result_min_latency_ns",),
    "latency_max_ns": ("result_max_latency_ns",),
    "latency_mean_ns": ("result_mean_latency_ns",),
    **{f"latency_{p}_ns": (f"result_{v}_percentile_latency_ns",) for p, v in _PCTS.items()},
    "ttft_min_ns": ("result_first_token_min_latency_ns",),
    "ttft_max_ns": ("result_first_token_max_latency_ns",),
    "ttft_mean_ns": ("result_first_token_mean_latency_ns",),
    **{f"ttft_{p}_ns": (f"result_first_token_{v}_percentile_latency_ns",) for p, v in _PCTS.items()},
    "tpot_min_ns": ("result_time_to_output_token_min", "result_time_per_output_token_min"),
    "tpot_max_ns": ("result_time_to_output_token_max", "result_time_per_output_token_max"),
    "tpot_mean_ns": ("result_time_to_output_token_mean", "result_time_per_output_token_mean"),
    **{f"tpot_{p}_ns": (f"result_time_per_output_token_{v}_percentile_ns",) for p, v in _PCTS.items()},
}
# Summary figure names that print the same quantity as each canonical figure (LoadGen's results.cc computes
# both from one variable). A detail figure without an entry here has no summary line.
SUMMARY_FOR: dict[str, tuple[str, ...]] = {
    "scheduled_samples_per_second": ("scheduled_samples_per_second",),
    "completed_samples_per_second": ("completed_samples_per_second",),
    "offline_samples_per_second": ("samples_per_second",),
    "qps_without_loadgen_overhead": ("qps_without_loadgen_overhead",),
    "qps_with_loadgen_overhead": ("qps_with_loadgen_overhead",),
    "offline_tokens_per_second": ("tokens_per_second",),
    "inferred_tokens_per_second": ("inferred_tokens_per_second",),
    "completed_tokens_per_second_raw": ("completed_tokens_per_second",),
    "inferred_completed_tokens_per_second": ("inferred_completed_tokens_per_second",),
    "token_throughput_with_loadgen_overhead": ("tps_with_loadgen_overhead",),
    "tps_without_loadgen_overhead": ("tps_without_loadgen_overhead",),
    **{k: (k,) for k in DETAIL_FIGURES if k.startswith(("latency_", "ttft_", "tpot_"))},
}
INT_FIGURES = {k for k in DETAIL_FIGURES if k.endswith("_ns")}
_RESULT_FIGURES = {n for names in SUMMARY_FOR.values() for n in names}


@dataclass
class ParsedRun:
    """Everything known about one run folder, parsed and typed; ``row`` holds the ``runs`` table columns."""

    folder: Path
    row: dict[str, Any]
    events: list[DetailEvent]
    settings: list[tuple[str, str, str]]  # (kind, key, value_json)
    accuracy_txt: AccuracyTxt | None
    accuracy_log: AccuracyLog | None
    samples: SampleTimings | None
    progress: list[dict[str, Any]]
    manifest: dict[str, Any] | None
    files: list[dict[str, Any]]  # provenance: name, bytes, sha256
    user_conf: str | None
    notes: list[str]
    skipped: list[Skipped] = field(default_factory=list)  # files of the folder left out, with the reason
    system: dict[str, Any] | None = None  # what it ran on and where it was published (:func:`system_context`)


# ------------------------------------------------------------------------------------- figures


def _sig_digits(s: str) -> int:
    digits = re.sub(r"[^0-9]", "", s.split("e")[0].split("E")[0]).lstrip("0")
    return len(digits)


def prints_as(value: float | int, literal: str) -> bool:
    """True when ``value`` reads as the summary's ``literal`` at the literal's precision: integers exactly,
    ``1.23457e+06`` at its significant digits, ``797.80`` as ``round(value, 2) == 797.80``."""
    lit = literal.strip()
    try:
        target = float(lit)
    except ValueError:
        return False
    if "e" in lit.lower():
        mantissa = lit.lower().split("e")[0]
        digits = max(_sig_digits(mantissa), 1)
        return float(f"{float(value):.{digits - 1}e}") == target
    if "." not in lit:
        return round(float(value)) == target if isinstance(value, float) else value == int(target)
    return round(float(value), len(lit.split(".")[1])) == target


def _checked(value: Any, name: str, where: str, key: str) -> float | int:
    """A figure as the store will hold it (int for ``*_ns``), or a LogFormatError naming file and key."""
    try:
        if name in INT_FIGURES:
            return checked_int(value)  # type: ignore[return-value]
        return checked_float(value)  # type: ignore[return-value]
    except NumberError as exc:
        raise LogFormatError(f"{where}: {key!r} {exc}") from None


def _detail_value(name: str, detail: DetailLog | None, notes: list[str]) -> tuple[Any, str | None]:
    """(value, key) of a canonical figure in the detail log; (None, None) when absent or not a number."""
    if detail is None:
        return None, None
    key = next((k for k in DETAIL_FIGURES[name] if k in detail.values), None)
    if key is None:
        return None, None
    v = detail.values[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        notes.append(f"detail {name}={v!r} is not a number")
        return None, None
    if isinstance(v, float) and math.isnan(v):
        notes.append(f"detail {name}={v!r} is not a number")
        return None, None
    v = _checked(v, name, detail.where(key), key)
    if name == "tps_without_loadgen_overhead":
        v = _per_second(v, detail.values.get("result_token_throughput_with_loadgen_overhead"))
    return v, key


def _per_second(per_ns: float, with_overhead: Any) -> float:
    """result_token_throughput is tokens per ns in LoadGen 4.x-6.x; scale it (to 6 significant digits, the
    detail log's precision) unless it already reads as per second next to the with-overhead figure."""
    scaled = float(f"{per_ns * 1e9:.6g}")
    w = as_float(with_overhead)
    if w and w > 0 and per_ns > 0:
        return scaled if abs(math.log10(scaled / w)) < abs(math.log10(per_ns / w)) else per_ns
    return scaled if abs(per_ns) < 1e-3 else per_ns


def _merge_figure(name: str, detail: DetailLog | None, summary: SummaryLog | None, notes: list[str]) -> float | int | None:
    """One canonical figure. Where the summary prints it, the result prints the same (:func:`prints_as`): the
    detail value when it has more digits and rounds to the summary's, else the summary's number (a real
    disagreement is also noted). Without a summary line, the detail value."""
    d, _ = _detail_value(name, detail, notes)
    s_name = next((k for k in SUMMARY_FOR.get(name, ()) if summary and k in summary.figures), None)
    literal = summary.figures[s_name] if summary and s_name else None
    s_val: float | int | None = None
    if literal is not None:
        if parse_float(literal) is None:
            notes.append(f"summary {name}={literal!r} is not a number")
            literal = None
        else:
            s_val = _checked(literal, name, summary.where(s_name), summary.labels.get(s_name, s_name))  # type: ignore[union-attr, arg-type]
    if literal is None or s_val is None:
        return d
    if d is None:
        return s_val
    if prints_as(d, literal):
        return d if _sig_digits(repr(d)) > _sig_digits(literal) else s_val
    if not _close(d, literal):
        notes.append(f"{name}: detail {d} disagrees with summary {literal} (the summary's figure is kept)")
    return s_val


def _close(d: float | int, literal: str) -> bool:
    decimals = len(literal.split(".")[1]) if "." in literal and "e" not in literal.lower() else 0
    return abs(float(literal) - float(d)) <= 0.5 * 10 ** (-decimals) + 1e-5 * abs(float(d))


def _yes(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v.strip().lower() in ("yes", "true"):
            return True
        if v.strip().lower() in ("no", "false"):
            return False
    return None


def _parse_time(v: Any) -> datetime | None:
    """ISO 8601 -> naive UTC datetime (the store keeps UTC without a zone)."""
    if not isinstance(v, str) or not v.strip():
        return None
    s = v.strip().replace("Z", "+00:00")
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is not None:
        try:
            t = t.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:
            return None
    return t


def _file_entry(path: Path, name: str | None = None) -> dict[str, Any]:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        size = path.stat().st_size
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return {"name": name or path.name, "bytes": size, "sha256": h.hexdigest()}


def lg_mode(loadgen_mode: str | None) -> str | None:
    return {
        "PerformanceOnly": "performance",
        "AccuracyOnly": "accuracy",
        "SubmissionRun": "submission",
        "FindPeakPerformance": "find_peak_performance",
    }.get(loadgen_mode or "", (loadgen_mode or "").lower() or None)


# --------------------------------------------------------------------------------------- run identity


def _sibling_logs(folder: Path) -> list[Path]:
    """The LoadGen logs of the results runs of ``folder``'s scenario folder (performance/*, accuracy, run_*):
    what identifies a verification folder that has no log of its own. Compliance subfolders are not looked at."""
    group = Path(path_info(folder).group_key or run_group_folder(folder))
    found: list[Path] = []
    candidates = [*sorted(group.glob("performance/*")), group / "accuracy", *sorted(group.glob("run_*")), group]
    for d in candidates:
        if d == folder or not d.is_dir():
            continue
        log = next((d / n for n in (DETAIL_LOG, SUMMARY_LOG) if (d / n).is_file()), None)
        if log is not None:
            found.append(log)
    return found


def content_key(files: list[dict[str, Any]], folder: str | os.PathLike) -> str:
    """The run id of a run folder without a harness manifest: ``lg-`` + a hash of its content.

    The content is every file the run is read from (names and sha256: the LoadGen logs, ``accuracy.txt``,
    verification files...), so every copy of a folder, through any path, gets the same id, and runs that differ
    in any file never share one (LoadGen writes timestamps into its logs). A folder with no LoadGen log of its
    own (a compliance verification) is identified by its files together with the logs of the results runs of its
    scenario folder (identical TEST06 verdicts of different systems stay apart); with none beside it, by its
    real path. ``files`` is the provenance list of :func:`parse_run`; the store's migration reuses this.
    (Ingesting a folder whose content changed, e.g. an ``accuracy.txt`` added, replaces that folder's earlier
    row: the store matches it by real path.)"""
    sha = {f["name"]: f["sha256"] for f in files if f.get("name") and f.get("sha256")}
    basis = [f"{n}:{sha[n]}" for n in sorted(sha)]
    if DETAIL_LOG not in sha and SUMMARY_LOG not in sha:
        folder = Path(os.path.abspath(folder))
        siblings = [f"sibling:{_file_entry(p)['sha256']}" for p in _sibling_logs(folder)]
        basis += siblings or [f"path:{os.path.realpath(folder)}"]
    return "lg-" + hashlib.sha256("\n".join(basis).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- one run folder


@dataclass
class _Sources:
    """The parsed files of one run folder."""

    folder: Path
    manifest: dict[str, Any] | None = None
    detail: DetailLog | None = None
    summary: SummaryLog | None = None
    acc_log: AccuracyLog | None = None
    acc_log_path: Path | None = None
    acc_txt: AccuracyTxt | None = None
    verify: list[VerifyAccuracy] = field(default_factory=list)
    samples: SampleTimings | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    user_conf: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def dv(self) -> dict[str, Any]:
        return self.detail.values if self.detail else {}

    @property
    def sf(self) -> dict[str, str]:
        return self.summary.figures if self.summary else {}


# Files a TEST01 folder carries besides its verification files: recorded in provenance, not parsed.
_COMPLIANCE_EXTRAS = ("accuracy/baseline_accuracy.txt", "accuracy/compliance_accuracy.txt")


def _read_sources(folder: Path) -> _Sources:
    def present(name: str) -> Path | None:
        p = folder / name
        return p if p.is_file() else None

    src = _Sources(folder=folder)
    src.manifest = parse_run_manifest(p) if (p := present(RUN_MANIFEST)) else None
    interrupted = bool(src.manifest) and src.manifest.get("exit_status") != "completed"  # type: ignore[union-attr]
    src.detail = parse_detail_log(p) if (p := present(DETAIL_LOG)) else None
    src.summary = parse_summary_log(p) if (p := present(SUMMARY_LOG)) else None
    nested = folder / "accuracy" / ACCURACY_LOG
    src.acc_log_path = present(ACCURACY_LOG) or (
        nested if nested.is_file() and not (folder / "accuracy" / DETAIL_LOG).exists() else None
    )
    src.acc_log = parse_accuracy_log(src.acc_log_path) if src.acc_log_path else None
    src.acc_txt = parse_accuracy_txt(p) if (p := present(ACCURACY_TXT)) else None
    for name in (VERIFY_ACCURACY, VERIFY_PERFORMANCE):
        if (p := present(name)) is not None:
            try:
                src.verify.append(parse_verify_accuracy(p))
            except LogFormatError as exc:  # free-form script output: skip the file, never the ingest
                src.skipped.append(Skipped(str(p), _reason(exc, p)))
    src.samples = parse_samples_jsonl(p, lenient_tail=interrupted) if (p := present(SAMPLES)) else None
    src.progress = parse_progress_jsonl(p, lenient_tail=interrupted) if (p := present(PROGRESS)) else []
    src.user_conf = _read_text(p) if (p := present(USER_CONF)) else None
    if src.detail is None and src.summary is None and src.manifest is None and not src.verify:
        if src.skipped:
            raise SkippedRun("; ".join(f"{s.path}: {s.reason}" for s in src.skipped), src.skipped)
        raise LogFormatError(
            f"{folder}: not a run folder (no {DETAIL_LOG}, {SUMMARY_LOG}, {RUN_MANIFEST}, {VERIFY_ACCURACY} "
            f"or {VERIFY_PERFORMANCE})"
        )
    if src.detail is None and src.manifest is None and src.summary is not None and not src.summary.has_result():
        raise LogFormatError(
            f"{src.summary.path}: summary log with no result ('Result is :' line) and no figure, and no "
            f"{DETAIL_LOG} beside it (truncated, or not a LoadGen summary)"
        )
    for name in (RUN_MANIFEST, DETAIL_LOG, SUMMARY_LOG, ACCURACY_TXT, VERIFY_ACCURACY, VERIFY_PERFORMANCE, SAMPLES,
                 PROGRESS, USER_CONF, *_COMPLIANCE_EXTRAS):
        if (p := present(name)) is not None:
            src.files.append(_file_entry(p, name if "/" in name else None))
    if src.acc_log_path is not None:
        src.files.append(_file_entry(src.acc_log_path, str(src.acc_log_path.relative_to(folder))))
    return src


def _reason(exc: LogFormatError, path: Path) -> str:
    msg = str(exc)
    return msg[len(str(path)) + 2:] if msg.startswith(f"{path}: ") else msg


def _labels(src: _Sources, info: PathInfo, benchmark: str | None, notes: list[str]) -> dict[str, Any]:
    """Scenario, submission scenario label, mode, compliance test, benchmark."""
    folder, dv, summary, manifest = src.folder, src.dv, src.summary, src.manifest or {}
    scenario = dv.get("effective_scenario") or (summary.scenario if summary else None) or manifest.get("scenario")
    if scenario is None and info.scenario_dir:
        scenario = "Server" if info.scenario_dir == "Interactive" else info.scenario_dir
    loadgen_mode = dv.get("effective_test_mode") or (summary.mode if summary else None)
    if summary and src.detail and summary.scenario and summary.scenario != scenario:
        notes.append(f"summary scenario {summary.scenario} differs from detail {scenario}")

    verify_test = next((v.test for v in src.verify if v.test), None)
    recorded = manifest.get("compliance")  # a harness run says itself whether it is a compliance run
    if isinstance(recorded, dict) and recorded.get("test"):
        compliance_test = str(recorded["test"])
    elif manifest.get("mode"):
        compliance_test = None
    else:
        compliance_test = compliance_test_from_path(folder)
    audit = any(e.is_warning and "audit.config" in str(e.value) for e in (src.detail.events if src.detail else []))
    under = _under_compliance(folder)
    if compliance_test is None and (audit or under or src.verify):
        seed = dv.get("effective_accuracy_log_rng_seed")
        compliance_test = verify_test or ("TEST06" if seed == TEST06_ACCURACY_LOG_SEED else None)
    if manifest.get("mode") and compliance_test is None:
        mode = str(manifest["mode"])
    elif compliance_test is not None or audit or under or src.verify:
        mode = "compliance"
    elif folder.name.lower() == "ranging":
        mode = "ranging"
    else:
        mode = lg_mode(loadgen_mode) or ("accuracy" if src.acc_txt or src.acc_log else None) or "unknown"

    lg_model = manifest.get("lg_model_name")
    bench = benchmark or manifest.get("benchmark") or info.benchmark
    bench = normalize_benchmark(bench) if bench else None
    ttft_target = _setting_int(src, "requested_server_ttft_latency", "ttft_latency_ns")
    tpot_target = _setting_int(src, "requested_server_tpot_latency", "tpot_latency_ns")
    if info.scenario_dir == "Interactive" or (lg_model and str(lg_model).endswith("-interactive")) or (
        bench and bench.endswith("-interactive")
    ):
        scenario_label = "Interactive"
    elif (
        scenario == "Server"
        and info.scenario_dir is None
        and not lg_model
        and (ttft_target, tpot_target) in INTERACTIVE_LIMITS_NS
    ):
        scenario_label = "Interactive"  # an Interactive model's targets, no path or manifest to say otherwise
    else:
        scenario_label = scenario
    return {
        "scenario": scenario, "scenario_label": scenario_label, "mode": mode, "loadgen_mode": loadgen_mode,
        "compliance_test": compliance_test, "benchmark": bench, "lg_model_name": lg_model,
        "ttft_latency_ns": ttft_target, "tpot_latency_ns": tpot_target,
    }


def _setting_int(src: _Sources, detail_key: str, summary_name: str | None = None, bits: int = 64) -> int | None:
    """An integer setting or count: the detail key, else the summary figure; range-checked (file and key named)."""
    if detail_key in src.dv:
        value, where, key = src.dv[detail_key], src.detail.where(detail_key), detail_key  # type: ignore[union-attr]
    elif summary_name and summary_name in src.sf:
        value, where, key = src.sf[summary_name], src.summary.where(summary_name), summary_name  # type: ignore[union-attr]
    else:
        return None
    try:
        return checked_int(value, bits=bits)
    except NumberError as exc:
        raise LogFormatError(f"{where}: {key!r} {exc}") from None


def _setting_float(src: _Sources, detail_key: str, summary_name: str) -> float | None:
    if detail_key in src.dv:
        value, where, key = src.dv[detail_key], src.detail.where(detail_key), detail_key  # type: ignore[union-attr]
    elif summary_name in src.sf:
        value, where, key = src.sf[summary_name], src.summary.where(summary_name), summary_name  # type: ignore[union-attr]
    else:
        return None
    try:
        return checked_float(value)
    except NumberError as exc:
        raise LogFormatError(f"{where}: {key!r} {exc}") from None


def _figures(src: _Sources, scenario: str | None, notes: list[str]) -> dict[str, Any]:
    """The throughput and latency columns, by scenario (see SUMMARY_FOR for which summary line each equals)."""
    fig = {name: _merge_figure(name, src.detail, src.summary, notes) for name in DETAIL_FIGURES}
    inferred = fig["inferred_tokens_per_second"] is not None or fig["inferred_completed_tokens_per_second"] is not None
    completed_tps = _first(fig["completed_tokens_per_second_raw"], fig["inferred_completed_tokens_per_second"])
    if scenario == "Offline":
        sps = fig["offline_samples_per_second"]
        tps = _first(fig["offline_tokens_per_second"], fig["inferred_tokens_per_second"])
    elif scenario == "Server":
        sps = fig["completed_samples_per_second"]
        tps = completed_tps
    else:  # SingleStream / MultiStream: QPS and TPS without LoadGen overhead (the summary's lines)
        sps = fig["qps_without_loadgen_overhead"]
        tps = _first(fig["tps_without_loadgen_overhead"], completed_tps)
    return {
        "samples_per_second": sps,
        "scheduled_samples_per_second": fig["scheduled_samples_per_second"],
        "completed_samples_per_second": fig["completed_samples_per_second"],
        "tokens_per_second": tps,
        "completed_tokens_per_second": completed_tps,
        "tokens_per_second_inferred": inferred,
        "token_throughput_with_loadgen_overhead": fig["token_throughput_with_loadgen_overhead"],
        "qps_with_loadgen_overhead": fig["qps_with_loadgen_overhead"],
        **{k: fig[k] for k in DETAIL_FIGURES if k.startswith(("latency_", "ttft_", "tpot_"))},
    }


def summary_headline(summary: SummaryLog) -> dict[str, Any]:
    """The throughput and latency figures of a run from LoadGen's one-page summary alone (no detail log), chosen per
    scenario exactly as :func:`parse_run` chooses them (:func:`_figures`); None where the summary lacks one.
    :class:`LogFormatError` for a figure that is out of range."""
    return _figures(_Sources(folder=summary.path.parent, summary=summary), summary.scenario, [])


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _times(src: _Sources) -> tuple[datetime | None, datetime | None]:
    manifest, dv = src.manifest or {}, src.dv
    started = _parse_time(manifest.get("started_at")) or _parse_time(dv.get("test_datetime"))
    finished = _parse_time(manifest.get("finished_at"))
    if finished is None and src.detail is not None and dv.get("test_datetime"):
        t0 = _parse_time(dv["test_datetime"])
        last = max((e for e in src.detail.events if e.time_ms is not None), key=lambda e: e.time_ms, default=None)
        if t0 is not None and last is not None:
            try:
                finished = t0 + timedelta(milliseconds=last.time_ms)  # type: ignore[arg-type]
            except OverflowError:
                raise LogFormatError(
                    f"{src.detail.path}:{last.line_no}: 'time_ms' {last.time_ms!r} puts the run's end out of range"
                ) from None
    return started, finished


def _settings(src: _Sources) -> list[tuple[str, str, str]]:
    settings: list[tuple[str, str, str]] = []
    if src.detail:
        for k, v in src.dv.items():
            if k.startswith("requested_"):
                settings.append(("requested", k[len("requested_"):], json.dumps(v)))
            elif k.startswith("effective_"):
                settings.append(("effective", k[len("effective_"):], json.dumps(v)))
    elif src.summary:
        for k in ("samples_per_query", "target_qps", "target_latency_ns", "ttft_latency_ns", "tpot_latency_ns",
                  "min_duration_ms", "min_query_count", "performance_sample_count"):
            if k in src.sf:
                settings.append(("summary", k, json.dumps(src.sf[k])))
    if src.manifest and isinstance(src.manifest.get("settings"), dict):
        for k, v in src.manifest["settings"].items():
            settings.append(("manifest", str(k), json.dumps(v)))
    for verify in src.verify:
        kind = "verify_accuracy" if verify.path.name == VERIFY_ACCURACY else "verify_performance"
        for k, v in verify.checks.items():
            settings.append((kind, k, json.dumps(v)))
        for k, v in verify.values.items():
            settings.append((kind, k, json.dumps(v)))
    return settings


def parse_run(
    folder: str | os.PathLike,
    *,
    node: str | None = None,
    backend: str | None = None,
    benchmark: str | None = None,
    dagster_run_id: str | None = None,
) -> ParsedRun:
    """Parse every file of one run folder. Raises :class:`LogFormatError` on anything malformed (naming the file
    and, for a value no column can hold, the line and key), :class:`SkippedRun` for a folder whose only files are
    verification files of no known form."""
    folder = Path(os.path.abspath(folder))
    notes: list[str] = []
    src = _read_sources(folder)
    dv, manifest = src.dv, src.manifest or {}
    info = path_info(folder)
    labels = _labels(src, info, benchmark, notes)
    figures = _figures(src, labels["scenario"], notes)
    started, finished = _times(src)

    m_backend = manifest.get("backend") or {}
    if not isinstance(m_backend, dict):
        m_backend = {"name": str(m_backend)}
    harness_run_id = manifest.get("run_id")
    group = str(harness_run_id) if harness_run_id else (info.group_key or run_group_folder(folder))
    run_id = f"{harness_run_id}-{labels['mode']}" if harness_run_id else content_key(src.files, folder)

    validity = dv.get("result_validity") or (src.summary.result_validity if src.summary else None)
    if src.summary and src.detail and src.summary.result_validity and dv.get("result_validity") and (
        src.summary.result_validity != dv["result_validity"]
    ):
        notes.append(f"summary says {src.summary.result_validity}, detail says {dv['result_validity']}")

    def flag(detail_key: str, summary_key: str) -> bool | None:
        return _yes(dv[detail_key]) if detail_key in dv else _yes(src.sf.get(summary_key))

    for s in src.skipped:
        notes.append(f"{Path(s.path).name} skipped: {s.reason}")
    if src.summary is not None and src.summary.truncated:
        notes.append(f"{SUMMARY_LOG} ends inside a line (cut short); that last line was not read")
    acc_log = src.acc_log
    counted = acc_log is not None and acc_log.state != "submission-truncated"
    verdicts = [v.passed for v in src.verify]
    row: dict[str, Any] = {
        "run_id": run_id,
        "group_id": group,
        "harness_run_id": str(harness_run_id) if harness_run_id else None,
        "dagster_run_id": dagster_run_id or manifest.get("dagster_run_id"),
        "source_path": str(folder),
        "source_kind": "harness" if src.manifest else ("submission" if info.submitter else "loadgen"),
        "node": node or manifest.get("node"),
        "backend": backend or m_backend.get("name"),
        "backend_kind": m_backend.get("kind"),
        "benchmark": labels["benchmark"],
        "lg_model_name": labels["lg_model_name"],
        "division": info.division,
        "submitter": info.submitter,
        "system": info.system,
        "scenario": labels["scenario"],
        "scenario_label": labels["scenario_label"],
        "mode": labels["mode"],
        "compliance_test": labels["compliance_test"],
        "loadgen_mode": labels["loadgen_mode"],
        "result_validity": validity,
        "invalid_reason": dv.get("result_invalid_reason"),
        "perf_constraints_met": flag("result_perf_constraints_met", "perf_constraints_met"),
        "min_duration_met": flag("result_min_duration_met", "min_duration_met"),
        "min_queries_met": flag("result_min_queries_met", "min_queries_met"),
        "early_stopping_met": flag("early_stopping_met", "early_stopping_met"),
        **figures,
        "query_count": _setting_int(src, "result_query_count"),
        "samples_per_query": _setting_int(src, "effective_samples_per_query", "samples_per_query"),
        "target_qps": _setting_float(src, "effective_target_qps", "target_qps"),
        "target_latency_ns": _setting_int(src, "effective_target_latency_ns", "target_latency_ns"),
        "ttft_latency_ns": labels["ttft_latency_ns"],
        "tpot_latency_ns": labels["tpot_latency_ns"],
        "min_duration_ms": _setting_int(src, "effective_min_duration_ms", "min_duration_ms"),
        "min_query_count": _setting_int(src, "effective_min_query_count", "min_query_count"),
        "performance_sample_count": _setting_int(src, "effective_performance_sample_count", "performance_sample_count"),
        "qsl_total_count": _setting_int(src, "qsl_reported_total_count"),
        "num_errors": (_setting_int(src, "num_errors", bits=32) if "num_errors" in dv
                       else len(src.detail.errors) if src.detail else None),
        "num_warnings": len(src.detail.warnings) if src.detail else None,
        "loadgen_version": _str_or_none(dv.get("loadgen_version") or manifest.get("loadgen_version")),
        "sut_name": _str_or_none(dv.get("sut_name") or (src.summary.fields.get("SUT name") if src.summary else None)),
        "test_datetime": _parse_time(dv.get("test_datetime")),
        "started_at": started,
        "finished_at": finished,
        "exit_status": manifest.get("exit_status"),
        "accuracy_log_state": acc_log.state if acc_log else None,
        "accuracy_log_samples": acc_log.samples if counted else None,  # type: ignore[union-attr]
        "accuracy_log_unique_samples": acc_log.unique_samples if counted else None,  # type: ignore[union-attr]
        "compliance_passed": all(verdicts) if verdicts else None,
        "figures_source": "detail" if src.detail else ("summary" if src.summary else None),
        "parse_notes": "; ".join(notes) or None,
    }
    return ParsedRun(
        folder=folder,
        row=row,
        events=src.detail.events if src.detail else [],
        settings=_settings(src),
        accuracy_txt=src.acc_txt,
        accuracy_log=acc_log,
        samples=src.samples,
        progress=src.progress,
        manifest=src.manifest,
        files=src.files,
        user_conf=src.user_conf,
        notes=notes,
        skipped=list(src.skipped),
        system=system_context(folder, src.manifest, info),
    )


def headline(row: dict[str, Any], accuracy: dict[str, Any] | None = None) -> str:
    """The figure a submission is scored on, as text: tokens/s (Offline, Server), p90 latency (SingleStream),
    ROUGE-1 for accuracy runs, pass/fail for compliance checks."""
    scen = row.get("scenario")
    if row.get("mode") == "accuracy" and accuracy and accuracy.get("rouge1") is not None:
        return f"rouge1 {accuracy['rouge1']}" + (f", gen_len {accuracy['gen_len']}" if accuracy.get("gen_len") is not None else "")
    if row.get("mode") == "compliance" and row.get("compliance_passed") is not None:
        return f"{row.get('compliance_test') or 'compliance'} {'passed' if row['compliance_passed'] else 'FAILED'}"
    if scen in ("SingleStream", "MultiStream") and row.get("latency_p90_ns") is not None:
        return f"p90 latency {row['latency_p90_ns'] / 1e6:.1f} ms"
    if row.get("tokens_per_second") is not None:
        suffix = " (inferred)" if row.get("tokens_per_second_inferred") else ""
        return f"{row['tokens_per_second']:.2f} tokens/s{suffix}"
    if row.get("samples_per_second") is not None:
        return f"{row['samples_per_second']:.3f} samples/s"
    if row.get("accuracy_log_state"):
        return f"accuracy log {row['accuracy_log_state']}" + (
            f" ({row['accuracy_log_samples']} samples)" if row.get("accuracy_log_samples") is not None else ""
        )
    return "-"


def parse_runs(paths: Iterable[Path], *, skipped: list[Skipped] | None = None, **kw: Any) -> list[ParsedRun]:
    """Parse several run folders, then fill labels a run cannot know alone (a TEST06 verification folder has no
    LoadGen log) from the other runs of its scenario folder.

    Left out, and appended to ``skipped`` with the reason when given: a folder whose only files are verification
    files of no known form (:class:`SkippedRun`), a verification file of no known form inside a run folder (the
    run itself is kept), and a second copy of a run already found (same run id, identical files: a folder reached
    twice or copied). Two folders with the same run id and different files are a :class:`LogFormatError`."""
    runs: list[ParsedRun] = []
    out = skipped if skipped is not None else []
    by_id: dict[str, ParsedRun] = {}
    for p in paths:
        try:
            run = parse_run(p, **kw)
        except SkippedRun as exc:
            out.extend(exc.skipped or [Skipped(str(Path(os.path.abspath(p))), str(exc))])
            continue
        out.extend(run.skipped)
        first = by_id.get(run.row["run_id"])
        if first is not None:
            if _same_files(first, run):
                out.append(Skipped(run.row["source_path"], f"the same run as {first.row['source_path']} (identical files); stored once"))
                continue
            raise LogFormatError(
                f"two run folders map to the same run id {run.row['run_id']} but their files differ: "
                f"{first.row['source_path']} and {run.row['source_path']}"
            )
        by_id[run.row["run_id"]] = run
        runs.append(run)
    by_group: dict[str, list[ParsedRun]] = {}
    for r in runs:
        by_group.setdefault(r.row["group_id"], []).append(r)
    for r in runs:
        for col in ("scenario", "scenario_label", "benchmark"):
            if r.row[col] is None:
                donor = next((o.row[col] for o in by_group[r.row["group_id"]] if o.row[col] is not None), None)
                r.row[col] = donor
    return runs


def _same_files(a: ParsedRun, b: ParsedRun) -> bool:
    def key(r: ParsedRun) -> list[tuple[str, str]]:
        return sorted((f["name"], f["sha256"]) for f in r.files)

    return key(a) == key(b)
