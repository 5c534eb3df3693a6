"""Pure parsers for MLPerf LoadGen output (any LoadGen 4.x to 6.x) and for our harness's run folders.

What is read, and which source wins:

* ``mlperf_log_detail.txt``: ``:::MLLOG {json}`` lines. The authoritative source of every figure.
* ``mlperf_log_summary.txt``: human text whose labels changed between versions. Used to cross-check the detail
  figures, to add precision where the detail log rounded to ~6 significant digits (``102907`` vs ``102906.82``),
  and as the only source when no detail log exists.
* ``mlperf_log_accuracy.json``: a complete JSON list, or the submission-truncated form (first and last 4 KiB
  joined by ``...``), which is recognised and reported, never half-parsed.
* ``accuracy.txt`` (evaluation console output), TEST06 ``verify_accuracy.txt``.
* Our harness (contract A): ``run_manifest.json``, ``progress.jsonl``, ``samples.jsonl``.

:func:`discover_runs` finds every LoadGen run below a folder and :func:`parse_run` turns one into a
:class:`ParsedRun` with canonical typed figures (latencies in ns, throughput per second). Nothing here writes.
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

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"
ACCURACY_TXT = "accuracy.txt"
VERIFY_ACCURACY = "verify_accuracy.txt"
RUN_MANIFEST = "run_manifest.json"
PROGRESS = "progress.jsonl"
SAMPLES = "samples.jsonl"
USER_CONF = "user.conf"

MLLOG_PREFIX = ":::MLLOG"
SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream")
SCENARIO_DIRS = {s.lower(): s for s in SCENARIOS} | {"interactive": "Interactive"}
# accuracy_log_rng_seed set by compliance/TEST06/audit.config (the test also sets sampling_target=100).
TEST06_ACCURACY_LOG_SEED = 720381539243781796
# The llama3_1-8b-interactive Server latency targets in mlperf.conf (ns).
INTERACTIVE_TTFT_NS = 500_000_000
INTERACTIVE_TPOT_NS = 30_000_000


class LogFormatError(ValueError):
    """A file is not what its name says, is truncated or malformed. The message names the file (and line)."""


class NoRunsFoundError(LogFormatError):
    """A folder holds no LoadGen run."""


# ----------------------------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    """Decode bytes leniently: real logs carry raw ``\\r`` and stray non-UTF-8 bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return data.decode("utf-8", errors="replace")


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

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

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
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or "value" not in obj:
            raise LogFormatError(f"{path}:{i + 1}: :::MLLOG line without a 'key' and 'value'")
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        ev = DetailEvent(
            seq=len(events),
            line_no=i + 1,
            key=obj["key"],
            value=obj["value"],
            time_ms=_float_or_none(obj.get("time_ms")),
            event_type=obj.get("event_type"),
            is_error=bool(meta.get("is_error", False)),
            is_warning=bool(meta.get("is_warning", False)),
            src_file=meta.get("file"),
            src_line=meta.get("line_no") if isinstance(meta.get("line_no"), int) else None,
        )
        events.append(ev)
        values.setdefault(ev.key, ev.value)
    if not events:
        raise LogFormatError(f"{path}: not a LoadGen detail log (no ':::MLLOG' lines)")
    return DetailLog(path=path, events=events, non_mllog_lines=other, values=values)


def _float_or_none(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


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
    """Parse ``mlperf_log_summary.txt`` by its label rules (LoadGen 4.0 .. 6.x wordings)."""
    path = Path(path)
    text = _read_text(path)
    fields: dict[str, str] = {}
    figures: dict[str, str] = {}
    banner = "MLPerf Results Summary" in text
    warn = None
    err = None
    for raw in _lines(text):
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
                figures.setdefault(name, value)
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
            log.qsl_idx = [int(item["qsl_idx"]) for item in obj]
            log.seq_id = [int(item.get("seq_id", n)) for n, item in enumerate(obj)]
            log.data_bytes = [n // 2 for n in lens]
            tcs = [item.get("token_count") for item in obj]
            log.token_count = [tc if type(tc) is int else _int_or_none(tc) for tc in tcs]
            log.has_token_data = any("token_data" in item for item in obj)
            return log
    except (TypeError, KeyError, ValueError, AttributeError):
        log = AccuracyLog(path=path, state="complete" if obj else "empty")
    for n, item in enumerate(obj):
        if not isinstance(item, dict) or "qsl_idx" not in item or "data" not in item:
            raise LogFormatError(f"{path}: entry {n} lacks 'qsl_idx'/'data': not a LoadGen accuracy log")
        data = item["data"]
        if not isinstance(data, str) or len(data) % 2:
            raise LogFormatError(f"{path}: entry {n} (qsl_idx {item['qsl_idx']}): 'data' is not a hex string")
        log.seq_id.append(int(item.get("seq_id", n)))
        log.qsl_idx.append(int(item["qsl_idx"]))
        log.data_bytes.append(len(data) // 2)
        tc = item.get("token_count")
        log.token_count.append(int(tc) if isinstance(tc, (int, float)) and not isinstance(tc, bool) else None)
        if "token_data" in item:
            log.has_token_data = True
    return log


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# ---------------------------------------------------------------------------------------- accuracy.txt


@dataclass
class AccuracyTxt:
    path: Path
    results: dict[str, float | int]  # metric -> number
    raw: dict[str, str]  # metric -> the literal as printed ('38.732' keeps its form)
    hash: str | None


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
    hm = _HASH.findall(text)
    return AccuracyTxt(path=path, results=results, raw=raw, hash=hm[-1].lower() if hm else None)


# ------------------------------------------------------------------------------------ verify_accuracy


@dataclass
class VerifyAccuracy:
    path: Path
    checks: dict[str, str]  # "First token check" -> "True" | "Skipped" | "False"
    complete: bool

    @property
    def passed(self) -> bool:
        return self.complete and bool(self.checks) and all(v in ("True", "Skipped") for v in self.checks.values())


def parse_verify_accuracy(path: str | os.PathLike) -> VerifyAccuracy:
    path = Path(path)
    checks: dict[str, str] = {}
    complete = False
    for raw in _lines(_read_text(path)):
        line = raw.strip()
        m = re.match(r"^(.+?) pass:\s*(\S+)", line)
        if m:
            checks[m.group(1).strip()] = m.group(2)
        elif re.match(r"^TEST\d+ verification complete", line):
            complete = True
    if not checks and not complete:
        raise LogFormatError(f"{path}: not a compliance verify_accuracy.txt (no '... pass:' lines)")
    return VerifyAccuracy(path=path, checks=checks, complete=complete)


# ------------------------------------------------------------------------------- harness files (contract A)


def parse_run_manifest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        obj = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, dict) or "run_id" not in obj:
        raise LogFormatError(f"{path}: not a harness run manifest (no 'run_id')")
    return obj


def _jsonl(path: Path, *, lenient_tail: bool) -> list[dict[str, Any]]:
    text = _read_text(path)
    lines = _lines(text)
    body = [ln for ln in lines if ln.strip()]
    try:  # fast path: one C-level decode for the whole file; line-by-line only to locate a problem
        fast = json.loads("[" + ",".join(body) + "]")
        if all(isinstance(o, dict) for o in fast) and len(fast) == len(body):
            return fast
    except json.JSONDecodeError:
        pass
    out: list[dict[str, Any]] = []
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            # An interrupted run may end in a half-written line; only then is it dropped.
            if i == last and lenient_tail and not text.endswith("\n"):
                break
            raise LogFormatError(f"{path}:{i + 1}: malformed JSON line ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise LogFormatError(f"{path}:{i + 1}: expected a JSON object per line")
        out.append(obj)
    return out


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
        ):
            return SampleTimings(*cols)
    except (KeyError, TypeError):
        pass
    st = SampleTimings([], [], [], [], [])
    for n, o in enumerate(rows):
        try:
            st.qsl_idx.append(int(o["qsl_idx"]))
            st.issue_ns.append(int(o["issue_ns"]))
            ft = o.get("first_token_ns")
            st.first_token_ns.append(None if ft is None else int(ft))
            st.complete_ns.append(int(o["complete_ns"]))
            ot = o.get("output_tokens")
            st.output_tokens.append(None if ot is None else int(ot))
        except (KeyError, TypeError, ValueError) as exc:
            raise LogFormatError(f"{path}: record {n + 1}: missing or non-integer field ({exc})") from None
    return st


def parse_progress_jsonl(path: str | os.PathLike, *, lenient_tail: bool = False) -> list[dict[str, Any]]:
    path = Path(path)
    rows = _jsonl(path, lenient_tail=lenient_tail)
    for n, o in enumerate(rows):
        if "elapsed_s" not in o:
            raise LogFormatError(f"{path}: record {n + 1}: no 'elapsed_s' (not a harness progress.jsonl)")
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
    """Submission spelling: ``llama3_1-8b`` -> ``llama3.1-8b`` (Intel-style dirs, LoadGen model names)."""
    n = name.strip()
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


# ------------------------------------------------------------------------------------------ discovery

_RUN_MARKERS = (DETAIL_LOG, SUMMARY_LOG, RUN_MANIFEST, VERIFY_ACCURACY)


def discover_runs(path: str | os.PathLike) -> list[Path]:
    """Every run folder at or below ``path``: folders holding a detail or summary log, a harness
    ``run_manifest.json``, or a compliance ``verify_accuracy.txt``. Sorted, absolute (symlinks kept)."""
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
            f"{root}: no LoadGen run found (looked for {DETAIL_LOG}, {SUMMARY_LOG}, {RUN_MANIFEST}, {VERIFY_ACCURACY})"
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
# Summary figure names that correspond to each canonical figure (for cross-check and fallback).
SUMMARY_FOR: dict[str, tuple[str, ...]] = {
    "scheduled_samples_per_second": ("scheduled_samples_per_second",),
    "completed_samples_per_second": ("completed_samples_per_second",),
    "offline_samples_per_second": ("samples_per_second",),
    "qps_without_loadgen_overhead": ("qps_without_loadgen_overhead",),
    "qps_with_loadgen_overhead": ("qps_with_loadgen_overhead",),
    "offline_tokens_per_second": ("tokens_per_second",),
    "inferred_tokens_per_second": ("inferred_tokens_per_second",),
    "completed_tokens_per_second_raw": ("completed_tokens_per_second", "tps_without_loadgen_overhead"),
    "inferred_completed_tokens_per_second": ("inferred_completed_tokens_per_second",),
    "token_throughput_with_loadgen_overhead": ("tps_with_loadgen_overhead",),
    **{k: (k,) for k in DETAIL_FIGURES if k.startswith(("latency_", "ttft_", "tpot_"))},
}
INT_FIGURES = {k for k in DETAIL_FIGURES if k.endswith("_ns")}


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


def _sig_digits(s: str) -> int:
    digits = re.sub(r"[^0-9]", "", s.split("e")[0].split("E")[0]).lstrip("0")
    return len(digits)


def _merge_figure(name: str, detail: Any, summary: str | None, notes: list[str]) -> float | int | None:
    """Detail value is authoritative; the summary string adds precision when it agrees within rounding."""
    d = None if isinstance(detail, bool) else detail
    s_val: float | None = None
    if summary is not None:
        try:
            s_val = float(summary)
        except ValueError:
            notes.append(f"summary {name}={summary!r} is not a number")
    if d is None and s_val is None:
        return None
    if d is None:
        return int(s_val) if name in INT_FIGURES else s_val  # type: ignore[arg-type]
    if not isinstance(d, (int, float)) or (isinstance(d, float) and math.isnan(d)):
        notes.append(f"detail {name}={d!r} is not a number")
        return None
    if s_val is not None:
        decimals = len(summary.split(".")[1]) if summary and "." in summary and "e" not in summary.lower() else 0
        tol = 0.5 * 10 ** (-decimals) + 1e-5 * abs(float(d))
        if abs(s_val - float(d)) > tol:
            notes.append(f"{name}: detail {d} disagrees with summary {summary}")
        elif _sig_digits(summary) > _sig_digits(repr(d)):  # type: ignore[arg-type]
            return int(s_val) if name in INT_FIGURES else s_val
    return int(d) if name in INT_FIGURES else float(d)


def _yes(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v.strip().lower() in ("yes", "true"):
            return True
        if v.strip().lower() in ("no", "false"):
            return False
    return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return None


def _int(v: Any) -> int | None:
    n = _num(v)
    return None if n is None or math.isnan(n) else int(n)


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
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


def _file_entry(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}


def lg_mode(loadgen_mode: str | None) -> str | None:
    return {
        "PerformanceOnly": "performance",
        "AccuracyOnly": "accuracy",
        "SubmissionRun": "submission",
        "FindPeakPerformance": "find_peak_performance",
    }.get(loadgen_mode or "", (loadgen_mode or "").lower() or None)


def parse_run(
    folder: str | os.PathLike,
    *,
    node: str | None = None,
    backend: str | None = None,
    benchmark: str | None = None,
    dagster_run_id: str | None = None,
) -> ParsedRun:
    """Parse every file of one run folder. Raises :class:`LogFormatError` on anything malformed."""
    folder = Path(os.path.abspath(folder))
    notes: list[str] = []
    files: list[dict[str, Any]] = []

    def present(name: str) -> Path | None:
        p = folder / name
        return p if p.is_file() else None

    manifest = parse_run_manifest(p) if (p := present(RUN_MANIFEST)) else None
    interrupted = bool(manifest) and manifest.get("exit_status") != "completed"
    detail = parse_detail_log(p) if (p := present(DETAIL_LOG)) else None
    summary = parse_summary_log(p) if (p := present(SUMMARY_LOG)) else None
    acc_log_path = present(ACCURACY_LOG) or (folder / "accuracy" / ACCURACY_LOG if (folder / "accuracy" / ACCURACY_LOG).is_file() and not (folder / "accuracy" / DETAIL_LOG).exists() else None)
    acc_log = parse_accuracy_log(acc_log_path) if acc_log_path else None
    acc_txt = parse_accuracy_txt(p) if (p := present(ACCURACY_TXT)) else None
    verify = parse_verify_accuracy(p) if (p := present(VERIFY_ACCURACY)) else None
    samples = parse_samples_jsonl(p, lenient_tail=interrupted) if (p := present(SAMPLES)) else None
    progress = parse_progress_jsonl(p, lenient_tail=interrupted) if (p := present(PROGRESS)) else []
    user_conf = _read_text(p) if (p := present(USER_CONF)) else None
    if detail is None and summary is None and manifest is None and verify is None:
        raise LogFormatError(f"{folder}: not a run folder (no {DETAIL_LOG}, {SUMMARY_LOG}, {RUN_MANIFEST} or {VERIFY_ACCURACY})")
    for name in (RUN_MANIFEST, DETAIL_LOG, SUMMARY_LOG, ACCURACY_TXT, VERIFY_ACCURACY, SAMPLES, PROGRESS, USER_CONF):
        if (p := present(name)) is not None:
            files.append(_file_entry(p))
    if acc_log_path is not None:
        entry = _file_entry(acc_log_path)
        entry["name"] = str(acc_log_path.relative_to(folder))
        files.append(entry)

    dv = detail.values if detail else {}
    sf = summary.figures if summary else {}
    info = path_info(folder)

    # --- scenario, mode, labels
    scenario = dv.get("effective_scenario") or (summary.scenario if summary else None)
    if scenario is None and manifest:
        scenario = manifest.get("scenario")
    if scenario is None and info.scenario_dir:
        scenario = "Server" if info.scenario_dir == "Interactive" else info.scenario_dir
    loadgen_mode = dv.get("effective_test_mode") or (summary.mode if summary else None)
    if summary and detail and summary.scenario and summary.scenario != scenario:
        notes.append(f"summary scenario {summary.scenario} differs from detail {scenario}")

    compliance_test = compliance_test_from_path(folder)
    audit = any(e.is_warning and "audit.config" in str(e.value) for e in (detail.events if detail else []))
    if compliance_test is None and (audit or _under_compliance(folder) or verify is not None):
        seed = dv.get("effective_accuracy_log_rng_seed")
        compliance_test = "TEST06" if seed == TEST06_ACCURACY_LOG_SEED or verify is not None else None
    if manifest and manifest.get("mode"):
        mode = str(manifest["mode"])
    elif compliance_test is not None or audit or _under_compliance(folder) or verify is not None:
        mode = "compliance"
    elif folder.name.lower() == "ranging":
        mode = "ranging"
    else:
        mode = lg_mode(loadgen_mode) or ("accuracy" if acc_txt or acc_log else None)
    if mode is None:
        mode = "unknown"

    m_backend = (manifest or {}).get("backend") or {}
    if not isinstance(m_backend, dict):
        m_backend = {"name": str(m_backend)}
    lg_model = (manifest or {}).get("lg_model_name")
    bench = benchmark or (manifest or {}).get("benchmark") or info.benchmark
    bench = normalize_benchmark(bench) if bench else None

    ttft_target = _int(dv.get("requested_server_ttft_latency", sf.get("ttft_latency_ns")))
    tpot_target = _int(dv.get("requested_server_tpot_latency", sf.get("tpot_latency_ns")))
    if info.scenario_dir == "Interactive" or (lg_model and str(lg_model).endswith("-interactive")) or (
        bench and bench.endswith("-interactive")
    ):
        scenario_label = "Interactive"
    elif (
        scenario == "Server"
        and info.scenario_dir is None
        and not lg_model
        and ttft_target == INTERACTIVE_TTFT_NS
        and tpot_target == INTERACTIVE_TPOT_NS
    ):
        scenario_label = "Interactive"  # the llama3_1-8b-interactive targets, no path or manifest to say otherwise
    else:
        scenario_label = scenario

    # --- figures: detail first, summary for precision/fallback
    fig: dict[str, Any] = {}
    for name, keys in DETAIL_FIGURES.items():
        d = next((dv[k] for k in keys if k in dv), None)
        s = next((sf[k] for k in SUMMARY_FOR.get(name, ()) if k in sf), None)
        fig[name] = _merge_figure(name, d, s, notes)
    inferred = fig["inferred_tokens_per_second"] is not None or fig["inferred_completed_tokens_per_second"] is not None
    completed_tps = fig["completed_tokens_per_second_raw"] or fig["inferred_completed_tokens_per_second"]
    if scenario == "Offline":
        sps = fig["offline_samples_per_second"]
        tps = fig["offline_tokens_per_second"] or fig["inferred_tokens_per_second"]
    elif scenario == "Server":
        sps = fig["completed_samples_per_second"]
        tps = completed_tps
    else:  # SingleStream / MultiStream: queries/s without LoadGen overhead
        sps = fig["qps_without_loadgen_overhead"]
        tps = completed_tps

    validity = dv.get("result_validity") or (summary.result_validity if summary else None)
    if summary and detail and summary.result_validity and dv.get("result_validity") and summary.result_validity != dv["result_validity"]:
        notes.append(f"summary says {summary.result_validity}, detail says {dv['result_validity']}")

    def flag(detail_key: str, summary_key: str) -> bool | None:
        if detail_key in dv:
            return _yes(dv[detail_key])
        return _yes(sf.get(summary_key))

    # --- times
    started = _parse_time((manifest or {}).get("started_at")) or _parse_time(dv.get("test_datetime"))
    finished = _parse_time((manifest or {}).get("finished_at"))
    if finished is None and detail is not None and dv.get("test_datetime"):
        t0 = _parse_time(dv["test_datetime"])
        last_ms = max((e.time_ms for e in detail.events if e.time_ms is not None), default=None)
        if t0 is not None and last_ms is not None:
            finished = t0 + timedelta(milliseconds=last_ms)

    harness_run_id = (manifest or {}).get("run_id")
    group = str(harness_run_id) if harness_run_id else (info.group_key or run_group_folder(folder))
    if harness_run_id:
        run_id = f"{harness_run_id}-{mode}"
    else:
        run_id = "lg-" + hashlib.sha1(str(folder).encode()).hexdigest()[:16]

    warnings = len(detail.warnings) if detail else 0
    errors = len(detail.errors) if detail else 0
    row: dict[str, Any] = {
        "run_id": run_id,
        "group_id": group,
        "harness_run_id": str(harness_run_id) if harness_run_id else None,
        "dagster_run_id": dagster_run_id or (manifest or {}).get("dagster_run_id"),
        "source_path": str(folder),
        "source_kind": "harness" if manifest else ("submission" if info.submitter else "loadgen"),
        "node": node or (manifest or {}).get("node"),
        "backend": backend or m_backend.get("name"),
        "backend_kind": m_backend.get("kind"),
        "benchmark": bench,
        "lg_model_name": lg_model,
        "division": info.division,
        "submitter": info.submitter,
        "system": info.system,
        "scenario": scenario,
        "scenario_label": scenario_label,
        "mode": mode,
        "compliance_test": compliance_test,
        "loadgen_mode": loadgen_mode,
        "result_validity": validity,
        "invalid_reason": dv.get("result_invalid_reason"),
        "perf_constraints_met": flag("result_perf_constraints_met", "perf_constraints_met"),
        "min_duration_met": flag("result_min_duration_met", "min_duration_met"),
        "min_queries_met": flag("result_min_queries_met", "min_queries_met"),
        "early_stopping_met": flag("early_stopping_met", "early_stopping_met"),
        "samples_per_second": sps,
        "scheduled_samples_per_second": fig["scheduled_samples_per_second"],
        "completed_samples_per_second": fig["completed_samples_per_second"],
        "tokens_per_second": tps,
        "completed_tokens_per_second": completed_tps,
        "tokens_per_second_inferred": inferred,
        "token_throughput_with_loadgen_overhead": fig["token_throughput_with_loadgen_overhead"],
        "qps_with_loadgen_overhead": fig["qps_with_loadgen_overhead"],
        **{k: fig[k] for k in DETAIL_FIGURES if k.startswith(("latency_", "ttft_", "tpot_"))},
        "query_count": _int(dv.get("result_query_count")),
        "samples_per_query": _int(dv.get("effective_samples_per_query", sf.get("samples_per_query"))),
        "target_qps": _num(dv.get("effective_target_qps", sf.get("target_qps"))),
        "target_latency_ns": _int(dv.get("effective_target_latency_ns", sf.get("target_latency_ns"))),
        "ttft_latency_ns": ttft_target,
        "tpot_latency_ns": tpot_target,
        "min_duration_ms": _int(dv.get("effective_min_duration_ms", sf.get("min_duration_ms"))),
        "min_query_count": _int(dv.get("effective_min_query_count", sf.get("min_query_count"))),
        "performance_sample_count": _int(dv.get("effective_performance_sample_count", sf.get("performance_sample_count"))),
        "qsl_total_count": _int(dv.get("qsl_reported_total_count")),
        "num_errors": _int(dv.get("num_errors")) if "num_errors" in dv else (errors if detail else None),
        "num_warnings": warnings if detail else None,
        "loadgen_version": dv.get("loadgen_version") or (manifest or {}).get("loadgen_version"),
        "sut_name": dv.get("sut_name") or (summary.fields.get("SUT name") if summary else None),
        "test_datetime": _parse_time(dv.get("test_datetime")),
        "started_at": started,
        "finished_at": finished,
        "exit_status": (manifest or {}).get("exit_status"),
        "accuracy_log_state": acc_log.state if acc_log else None,
        "accuracy_log_samples": acc_log.samples if acc_log and acc_log.state != "submission-truncated" else None,
        "accuracy_log_unique_samples": acc_log.unique_samples if acc_log and acc_log.state != "submission-truncated" else None,
        "compliance_passed": verify.passed if verify else None,
        "figures_source": "detail" if detail else ("summary" if summary else None),
        "parse_notes": "; ".join(notes) or None,
    }

    settings: list[tuple[str, str, str]] = []
    if detail:
        for k, v in dv.items():
            if k.startswith("requested_"):
                settings.append(("requested", k[len("requested_"):], json.dumps(v)))
            elif k.startswith("effective_"):
                settings.append(("effective", k[len("effective_"):], json.dumps(v)))
    elif summary:
        for k in ("samples_per_query", "target_qps", "target_latency_ns", "ttft_latency_ns", "tpot_latency_ns",
                  "min_duration_ms", "min_query_count", "performance_sample_count"):
            if k in sf:
                settings.append(("summary", k, json.dumps(sf[k])))
    if manifest and isinstance(manifest.get("settings"), dict):
        for k, v in manifest["settings"].items():
            settings.append(("manifest", str(k), json.dumps(v)))
    if verify:
        for k, v in verify.checks.items():
            settings.append(("verify_accuracy", k, json.dumps(v)))

    return ParsedRun(
        folder=folder,
        row=row,
        events=detail.events if detail else [],
        settings=settings,
        accuracy_txt=acc_txt,
        accuracy_log=acc_log,
        samples=samples,
        progress=progress,
        manifest=manifest,
        files=files,
        user_conf=user_conf,
        notes=notes,
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


def parse_runs(paths: Iterable[Path], **kw: Any) -> list[ParsedRun]:
    """Parse several run folders, then fill labels a run cannot know alone (a TEST06 verification folder has no
    LoadGen log) from the other runs of its scenario folder."""
    runs = [parse_run(p, **kw) for p in paths]
    by_group: dict[str, list[ParsedRun]] = {}
    for r in runs:
        by_group.setdefault(r.row["group_id"], []).append(r)
    for r in runs:
        for col in ("scenario", "scenario_label", "benchmark"):
            if r.row[col] is None:
                donor = next((o.row[col] for o in by_group[r.row["group_id"]] if o.row[col] is not None), None)
                r.row[col] = donor
    return runs
