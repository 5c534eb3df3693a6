"""The run folder: the one protocol between the orchestrator and a harness process on a node.

A runner launches ``python -m mlperf_assets.harness run --output-dir FOLDER`` under its exit-code supervisor
(``resources/runners/base.py``) and from then on knows the run only through the files in ``FOLDER``: it polls the
progress file and the exit code, reads the manifest, and copies the folder back. Every name in the folder is here,
with the readers both sides share. Standard library only: this module is imported on the node.

Who writes what:

- the runner: :data:`RUN_SPEC` (the ``RunSpec`` as JSON, for reattaching), :data:`PID` (remote runners: the
  supervisor's process group), :data:`CANCEL_REQUESTED` (``cancel``);
- the supervisor: :data:`RUNNER_LOG` (the harness's stdout and stderr) and :data:`EXIT_CODE` (its exit code, or -N if
  signal N killed it), written atomically through :data:`EXIT_CODE_TMP`;
- the harness: :data:`RUN_MANIFEST` (with its reserve :data:`MANIFEST_RESERVE`), :data:`PROGRESS`,
  :data:`SAMPLES`, :data:`TELEMETRY`, :data:`HARNESS_LOG`, :data:`USER_CONF`, and for a compliance run
  :data:`VERIFY_ACCURACY` and ``accuracy/`` + :data:`ACCURACY_LOG` (:data:`AUDIT_CONFIG` lives there only while
  LoadGen reads it);
- LoadGen, in its working directory (the folder): :data:`SUMMARY_LOG`, :data:`DETAIL_LOG`, :data:`ACCURACY_LOG`,
  :data:`TRACE_LOG`;
- the orchestrator, after collecting: :data:`ACCURACY_TXT` (the accuracy asset's score of an accuracy run).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .interrupts import EXIT_SIGINT, EXIT_SIGTERM

# --- written by the runner and its supervisor
RUN_SPEC = "run_spec.json"
PID = "pid"
CANCEL_REQUESTED = "cancel_requested"  # a later poll reports "cancelled", not "failed"
RUNNER_LOG = "runner.log"
EXIT_CODE = "exit_code"
EXIT_CODE_TMP = "exit_code.tmp"

# --- written by the harness
RUN_MANIFEST = "run_manifest.json"
MANIFEST_RESERVE = ".run_manifest.reserve"  # space kept for the manifest's final record on a full disk
PROGRESS = "progress.jsonl"
SAMPLES = "samples.jsonl"
TELEMETRY = "telemetry.jsonl"
HARNESS_LOG = "harness.log"
USER_CONF = "user.conf"
AUDIT_CONFIG = "audit.config"  # the name LoadGen looks for in its working directory
VERIFY_ACCURACY = "verify_accuracy.txt"
VERIFY_PERFORMANCE = "verify_performance.txt"  # MLCommons' TEST01/TEST04 output (never written by the harness)
ACCURACY_DIR = "accuracy"  # a compliance run's copy of its accuracy log, as a submission's TEST06/ holds it

# --- written by LoadGen
SUMMARY_LOG = "mlperf_log_summary.txt"
DETAIL_LOG = "mlperf_log_detail.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"
TRACE_LOG = "mlperf_log_trace.json"
LOADGEN_FILES = (SUMMARY_LOG, DETAIL_LOG, ACCURACY_LOG, TRACE_LOG)

# What a harness run leaves in its --output-dir (a folder holding any of them holds an earlier run)
HARNESS_OUTPUTS = (*LOADGEN_FILES, USER_CONF, PROGRESS, SAMPLES, RUN_MANIFEST, HARNESS_LOG, TELEMETRY, VERIFY_ACCURACY,
                   f"{ACCURACY_DIR}/{ACCURACY_LOG}", MANIFEST_RESERVE)

# --- written by the orchestrator into a collected accuracy run
ACCURACY_TXT = "accuracy.txt"

# An MLPerf Endpoints point's run folder: the same protocol (manifest, progress, exit code) around MLCommons' reference
# client. The orchestrator writes the point's plan and the client's YAML; the client writes its report folder(s); the
# steady-state detector's verdict lands beside them.
POINT_MANIFEST = "point_manifest.json"  # the planned point: concurrency, pattern, region, accuracy, seeds, server
CLIENT_YAML = "client.yaml"  # the reference client's config, as the platform wrote it
CLIENT_REPORT_DIR = "report"  # the client's report folder of the performance run
CLIENT_ACCURACY_DIR = "report_accuracy"  # the client's report folder of the accuracy run (accuracy points only)
STEADY_STATE = "steady_state.json"  # the client's steady-state detector output for this point
CLIENT_ACCURACY_YAML = "client_accuracy.yaml"  # the client's config of the accuracy run (accuracy points only)
CLIENT_DATASETS_DIR = "dataset_cache"  # the client's datasets_dir: dataset_cache/cnn_dailymail/cnn_dailymail.parquet
SERVER_LOG = "server.log"  # stdout and stderr of a server the point started itself (echo or vLLM)

# Exit codes the harness uses (harness/cli.py): 0 = LoadGen finished; 130 / 143 = stopped by SIGINT / SIGTERM
# (Ctrl-C, cancel). A signal that lands before the harness's handlers exist ends the process by the signal itself,
# which the supervisor records as -2 / -15: the same outcome.
EXIT_OK = 0
INTERRUPTED_EXIT_CODES = frozenset({EXIT_SIGINT, EXIT_SIGTERM, -2, -15})

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
TERMINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

# The integer counters of a progress record (see progress_record)
PROGRESS_COUNTS = ("issued", "completed", "total", "output_tokens")


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's run manifest; ``{}`` when there is none or it is not a readable JSON object (a run that never
    started, or one cut short while writing it)."""
    try:
        data = json.loads((Path(folder) / RUN_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------------------------ progress.jsonl


def progress_record(*, time: str, elapsed_s: float, issued: int, completed: int, total: int | None,
                    output_tokens: int, final: bool, kv_cache_usage_pct: float | None = None) -> dict[str, Any]:
    """One line of the progress file, as the harness writes it every ``--progress-interval-s``: UTC ``time``, seconds
    since the run began, the SUT's counters, the expected ``total`` (None while unknown), ``tokens_per_s`` over the
    whole run, ``final`` on the last line, and the engine's KV-cache use (%) where the backend reports it."""
    record: dict[str, Any] = {
        "time": time,
        "elapsed_s": round(elapsed_s, 3),
        "issued": issued,
        "completed": completed,
        "total": total,
        "output_tokens": output_tokens,
        "tokens_per_s": round(output_tokens / elapsed_s, 3) if elapsed_s > 0 else 0.0,
        "final": final,
    }
    if kv_cache_usage_pct is not None:
        record["kv_cache_usage_pct"] = round(kv_cache_usage_pct, 1)
    return record


@dataclass(frozen=True)
class RunProgress:
    """One observation of a run: the last progress record plus the process state."""

    state: str = RUNNING  # running | succeeded | failed | cancelled
    elapsed_s: float = 0.0
    issued: int = 0
    completed: int = 0
    total: int | None = None
    output_tokens: int = 0
    tokens_per_s: float = 0.0
    final: bool = False  # the harness wrote its final progress line
    exit_code: int | None = None
    message: str | None = None  # why it failed, when known (runner-level)
    stale: bool = False  # the node could not be reached just now: the runner's last answer, repeated while it retries
    kv_cache_usage_pct: float | None = None  # the engine's KV-cache use on the last progress line, when reported

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def fraction(self) -> float | None:
        """Completed / total, when the total is known."""
        if not self.total:
            return None
        return min(1.0, self.completed / self.total)

    def describe(self) -> str:
        """One short line for logs: ``running 120/400 samples (30%), 5,123 tokens/s, 12.0 s[, KV cache 43%]``.

        A stale observation (the node cannot be reached just now) leads with the runner's message and gives the
        figures as the last ones seen, never as live: ``connection lost 12 s ago (...); reconnecting (last seen:
        running 120/400 samples ...)``. A failed or cancelled run ends with its message."""
        count = f"{self.completed}/{self.total}" if self.total else f"{self.completed}"
        pct = f" ({self.fraction:.0%})" if self.fraction is not None else ""
        text = f"{self.state} {count} samples{pct}, {self.tokens_per_s:,.0f} tokens/s, {self.elapsed_s:.1f} s"
        if self.kv_cache_usage_pct is not None:
            text += f", KV cache {self.kv_cache_usage_pct:.0f}%"
        if self.stale:
            return f"{self.message or 'no answer from the node'} (last seen: {text})"
        if self.message and self.state in (FAILED, CANCELLED):
            text += f": {self.message}"
        elif self.exit_code is not None and self.state != SUCCEEDED:
            text += f", exit code {self.exit_code}"
        return text


def parse_progress(text: str) -> dict[str, Any] | None:
    """The last complete JSON line of a progress file's text (a line being written is ignored)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn last line: the harness is writing it right now
        if isinstance(value, dict):
            return value
    return None


def state_from_exit_code(exit_code: int | None, *, alive: bool, cancel_requested: bool = False) -> str:
    """Run state from the supervisor's exit code (None = no file yet) and whether the process still exists."""
    if exit_code is None:
        if alive:
            return RUNNING
        return CANCELLED if cancel_requested else FAILED
    if exit_code == EXIT_OK:
        return SUCCEEDED
    if cancel_requested or exit_code in INTERRUPTED_EXIT_CODES:
        return CANCELLED
    return FAILED


def progress_from_texts(
    progress_text: str | None,
    exit_code_text: str | None,
    *,
    alive: bool,
    cancel_requested: bool = False,
) -> RunProgress:
    """A :class:`RunProgress` from the progress file's and the exit-code file's contents (None = file absent); a
    remote runner reads the two files' text and calls the same function."""
    last = parse_progress(progress_text or "") or {}
    exit_code: int | None = None
    if exit_code_text and exit_code_text.strip():
        try:
            exit_code = int(exit_code_text.strip())
        except ValueError:
            exit_code = None
    state = state_from_exit_code(exit_code, alive=alive, cancel_requested=cancel_requested)
    message = None
    if state == FAILED:
        message = (
            f"the harness exited with code {exit_code}"
            if exit_code is not None
            else "the harness process ended without recording an exit code (killed?)"
        )
    elif state == CANCELLED:
        message = "the run was cancelled"
    total = last.get("total")
    kv = last.get("kv_cache_usage_pct")
    return RunProgress(
        state=state,
        elapsed_s=float(last.get("elapsed_s") or 0.0),
        issued=int(last.get("issued") or 0),
        completed=int(last.get("completed") or 0),
        total=int(total) if total is not None else None,
        output_tokens=int(last.get("output_tokens") or 0),
        tokens_per_s=float(last.get("tokens_per_s") or 0.0),
        kv_cache_usage_pct=float(kv) if isinstance(kv, (int, float)) and not isinstance(kv, bool) else None,
        final=bool(last.get("final", False)),
        exit_code=exit_code,
        message=message,
    )
