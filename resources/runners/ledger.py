"""Runs in flight and picking them up again: one partition's run (performance, accuracy, compliance) through any runner.

:class:`PartitionRun` starts, watches and collects the harness runs of a plan (:class:`mlperf_assets.plan.RunPlan`:
a node x scenario partition, or a capacity-search probe) through the node's runner, using only the runner interface
and its typed errors. Each harness run is a :class:`mlperf_assets.plan.PlannedRun` (its key in the record, its spec,
its folder in the run). The runs are collected into a staging folder and renamed into place only when every one
succeeded, so a failed run leaves nothing in the artifact store (its node-side folder is kept for debugging and
named in the error).

Surviving an orchestrator restart: while a partition's harness runs are in flight, and until they are collected,
``<artifact_root>/.active/<node>/<ledger_key>.json`` (an :class:`ActiveRecord`; the ledger key is the scenario for a
partition) records their specs and runner
handles. A new run of the same partition reads it first: if the recorded run was made with the same settings and
the runner reports it still running, or finished but not collected, it *reattaches* (same run id, same node-side
folder; no second harness) and collects it. A record whose run failed, was cancelled, is gone from the node
(:class:`RunGone`) or used other settings is cleared, and a fresh run starts; one the runner cannot ask about
(:class:`RunUnreachable`, or a stale answer) is kept. A run of another partition still going on the node
(unwatched, its orchestrator gone) fails this partition with a message saying how to pick it up, rather than
disturbing its measurement.

Stopping everything: while a harness run is launched and watched here it is also in this process's in-flight list
(:func:`in_flight`). When a command is stopped (Ctrl-C or SIGTERM on ``mlperf-dagster run``/``demo``), the
interrupt reaches ``runner.wait``, which cancels the run; :func:`cancel_in_flight` then makes sure of every run
still listed, through its runner (one whose launch was cut short is found among ``runner.active_runs()``), and
returns one :class:`CancelledRun` per run for the command's one-line reports.

A failed harness run's error carries the harness's own reason (:func:`failure_reason`: its ``error: ...`` line,
Python's "No module named ..." line of an interpreter without the harness, or a traceback's last line, from the
runner's log tail), not only its exit code.

One run per node at a time: a per-node file lock (``<artifact_root>/.locks/<node>.lock``) is held for the whole
partition run, on top of the Dagster queue's per-node limit. No Dagster here: the asset turns a
:class:`PartitionRunError` into a ``dagster.Failure``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.files import write_atomic
from mlperf_assets.harness.run_folder import RUNNING, SUCCEEDED, RunProgress
from mlperf_assets.plan import PlannedRun, RunPlan

from .base import BenchmarkRunner, RunGone, RunHandle, RunnerError

ACTIVE_DIR = ".active"  # <artifact_root>/.active/<node>/<ledger_key>.json: runs in flight or not yet collected
ACTIVE_SCHEMA = 2
LOCK_DIR = ".locks"
LOCK_NOTE_EVERY_S = 60.0  # while waiting for a busy node, say so this often

ModeProgress = Callable[[str, RunProgress], None]  # fn(key, progress): every observation of a harness run


class Log(Protocol):
    """Where a partition run reports what it decides (a Dagster context's ``log``, or a ``logging.Logger``)."""

    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


class PartitionRunError(RunnerError):
    """A partition run stopped; the message says why and what to do. ``run_folder``/``harness_output``: the node-side
    folder kept for debugging and the harness's last lines, when a harness run failed. ``retry``: whether running
    the partition again unchanged may succeed (a collection that failed half-way)."""

    def __init__(
        self, message: str, *, run_folder: str | None = None, harness_output: str | None = None, retry: bool = False
    ) -> None:
        super().__init__(message)
        self.run_folder, self.harness_output, self.retry = run_folder, harness_output, retry


# ------------------------------------------------------------------------------------------------ the record


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModeRun:
    """One harness run of a partition run: its spec, the runner's handle once launched, and whether its folder is
    already collected into the staging folder."""

    spec: dict[str, Any]
    handle: dict[str, Any] | None = None
    collected: bool = False

    def run_spec(self) -> RunSpec:
        return RunSpec.from_json(json.dumps(self.spec))

    def run_handle(self) -> RunHandle | None:
        return RunHandle.from_dict(self.handle) if self.handle else None


@dataclass
class ActiveRecord:
    """``<artifact_root>/.active/<node>/<ledger_key>.json``: a partition run that is in flight or not yet collected."""

    node: str
    scenario: str  # the plan's scenario label (before the ledger key was explicit: the key itself)
    run_id: str
    dagster_run_id: str  # the Dagster run that started it
    started_at: str  # ISO 8601 UTC
    dataset: dict[str, Any]  # {"path", "size", "mtime_ns"} of the prepared dataset it reads
    runs: dict[str, ModeRun] = field(default_factory=dict)  # PlannedRun.key -> run, in the order they were started
    reattached_by: list[str] = field(default_factory=list)  # Dagster runs that picked it up since

    @property
    def origin(self) -> str:
        return f"run {self.run_id} started at {self.started_at} by Dagster run {self.dagster_run_id}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["schema"] = ACTIVE_SCHEMA
        return json.dumps(data, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> "ActiveRecord":
        data = json.loads(text)
        if data.pop("schema", None) != ACTIVE_SCHEMA:
            raise ValueError("unknown record schema")
        # a record written before the keys were PlannedRun keys names a compliance run by its folder, compliance/<TEST>
        data["runs"] = {key.rpartition("/")[2]: ModeRun(**run) for key, run in data.get("runs", {}).items()}
        return cls(**data)


def active_record_path(artifact_root: Path, node: str, key: str) -> Path:
    return artifact_root / ACTIVE_DIR / node / f"{key}.json"


def read_active(artifact_root: Path, node: str, key: str) -> ActiveRecord | None:
    """The record under ledger key ``key``; None if there is none. An unreadable record raises ValueError."""
    path = active_record_path(artifact_root, node, key)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return ActiveRecord.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable run record ({exc})") from None


def write_active(artifact_root: Path, key: str, record: ActiveRecord) -> None:
    write_atomic(active_record_path(artifact_root, record.node, key), record.to_json())


def clear_active(artifact_root: Path, node: str, key: str) -> None:
    active_record_path(artifact_root, node, key).unlink(missing_ok=True)


def dataset_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ------------------------------------------------------------------------------------- asking the runner


@dataclass(frozen=True)
class Observation:
    """What the runner says about a recorded run: ``progress`` when it is running or finished successfully,
    else ``problem`` (why it cannot be reattached). ``uncertain``: the runner could not ask the node (no connection,
    API error, a stale answer), so the run may well be alive; its record must not be dropped."""

    progress: RunProgress | None = None
    problem: str | None = None
    uncertain: bool = False


def observe(runner: BenchmarkRunner, handle: RunHandle) -> Observation:
    try:
        progress = runner.poll(handle)
    except RunGone as exc:  # the node answered: no trace of the run
        return Observation(problem=f"is gone ({exc})")
    except RunnerError as exc:  # RunUnreachable and the like: says nothing about the run itself
        return Observation(problem=str(exc), uncertain=True)
    if progress.stale:
        return Observation(progress=progress, uncertain=True)
    if progress.state in (RUNNING, SUCCEEDED):
        return Observation(progress=progress)
    return Observation(problem=f"{progress.state} ({progress.message or progress.describe()})")


def describe_state(progress: RunProgress) -> str:
    if progress.state == SUCCEEDED:
        return "finished, not yet collected"
    done = f"{progress.completed}/{progress.total}" if progress.total else str(progress.completed)
    text = f"still running ({done} samples done after {progress.elapsed_s:.0f} s)"
    return text + (f"; {progress.message}" if progress.message else "")


def _spec_differences(recorded: RunSpec, wanted: RunSpec) -> list[str]:
    return [f.name for f in dataclasses.fields(RunSpec) if getattr(recorded, f.name) != getattr(wanted, f.name)]


# -------------------------------------------------------------------------- harness runs in flight here


@dataclass
class InFlight:
    """A harness run this process launched (or reattached to) and has not yet seen end: what
    :func:`cancel_in_flight` stops when the whole command is interrupted. ``handle`` is None while the runner is
    still launching it."""

    runner: BenchmarkRunner
    spec: RunSpec
    handle: RunHandle | None = None

    def __str__(self) -> str:
        return f"{self.spec.node}/{self.spec.scenario} {self.spec.mode} run {self.spec.run_id}"


@dataclass(frozen=True)
class CancelledRun:
    """What :func:`cancel_in_flight` did with one run: ``run_dir`` is its folder on the node (kept there);
    ``problem`` says why it could not be cancelled (then ``hint`` says how to stop it by hand)."""

    run: InFlight
    run_dir: str | None = None
    problem: str | None = None
    hint: str | None = None


_in_flight: dict[tuple[str, str, str], InFlight] = {}
_in_flight_lock = threading.Lock()


def _track(runner: BenchmarkRunner, spec: RunSpec, handle: RunHandle | None) -> InFlight:
    entry = InFlight(runner, spec, handle)
    with _in_flight_lock:
        _in_flight[(spec.node, spec.run_id, spec.mode)] = entry
    return entry


def _untrack(entry: InFlight) -> None:
    with _in_flight_lock:
        key = (entry.spec.node, entry.spec.run_id, entry.spec.mode)
        if _in_flight.get(key) is entry:
            del _in_flight[key]


def in_flight() -> list[InFlight]:
    """The harness runs this process has in flight (normally one per partition being run)."""
    with _in_flight_lock:
        return list(_in_flight.values())


def cancel_in_flight() -> list[CancelledRun]:
    """Cancel every harness run this process has in flight, through its runner (``runner.cancel``: the harness's
    process group gets SIGINT, then harder); a run whose launch was cut short is looked up among the runner's
    ``active_runs()`` by run id. Safe to call again: a run that already ended is only reported. For a command
    that was interrupted (``mlperf-dagster run``/``demo``) after Dagster has stopped the step: an interrupt that
    reached ``runner.wait`` has already cancelled the run there, but one that came while the run was being
    launched, or a second interrupt that cut the first cancel short, leaves work for this."""
    with _in_flight_lock:
        entries = list(_in_flight.values())
        _in_flight.clear()
    done: list[CancelledRun] = []
    for entry in entries:
        handle = entry.handle
        try:
            if handle is None:
                handle = next(
                    (h for h, _ in entry.runner.active_runs()
                     if h.run_id == entry.spec.run_id and h.mode in ("", entry.spec.mode)),
                    None,
                )  # fmt: skip
            if handle is None:
                done.append(CancelledRun(entry))  # it never got launched
                continue
            entry.runner.cancel(handle)
            done.append(CancelledRun(entry, run_dir=handle.run_dir))
        except Exception as exc:  # noqa: BLE001 - report it and go on with the other runs
            hint = entry.runner.stop_hint(handle) if handle is not None else f"stop it on node {entry.spec.node}"
            done.append(CancelledRun(entry, run_dir=handle.run_dir if handle else None, problem=str(exc), hint=hint))
    return done


# ------------------------------------------------------------------------------------- why a harness failed

_ERROR_LINE = re.compile(r"(?:^|: )error: (.+)$", re.IGNORECASE)  # the harness's `error: ...`, argparse's `prog: error:`
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b(?::.*)?$")  # a traceback's last line
# Python's own line when `python -m mlperf_assets.harness` cannot find the module (no traceback, no `error:`)
_NO_MODULE_LINE = re.compile(r"^(?:\S+: )?(?:Error while finding module specification for |No module named )")


def failure_reason(output: str | None) -> str | None:
    """The line of a harness's output that says why it failed: the last ``error: ...`` line (the harness's own
    form, and argparse's ``prog: error: argument ...``), else Python's line saying the node's interpreter cannot
    find the harness module (``python: Error while finding module specification ...``, ``No module named ...``),
    else the last line of a Python traceback (``ValueError: ...``); None when there is none of them."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.search(line)
        if match:
            return match.group(1).strip()
    for line in reversed(lines):
        if _NO_MODULE_LINE.match(line):
            return line
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return None


def _other_plan(node: str, key: str, mode: str, record: ActiveRecord) -> tuple[str, str]:
    """(what the run recorded under ledger key ``key`` is, what a person runs to pick it up again), for messages. A
    partition's key is its scenario; any other is a capacity-search probe's (``<label>-search``, recorded under the
    searched label)."""
    if key == record.scenario:
        return f"{key} {mode}", f"Materialize partition {node}|{key}"
    label = record.scenario
    return (f"a probe of the capacity search of {label} on {node}",
            f"Run that search again (mlperf-dagster search-qps --node {node} --scenario {label}, or materialize "
            f"max_qps_search partition {node}|{label})")


# ------------------------------------------------------------------------------------- one partition run


@dataclass(frozen=True)
class PartitionResult:
    run_id: str
    folder: Path  # the plan's run folder (<artifact_root>/<node>/<scenario>/<run_id>), one folder per planned run
    started_by: str  # the Dagster run that launched the harness runs (another one, when this one reattached)


class PartitionRun:
    """The harness runs of one partition through ``runner``: reattach or start, watch, collect (module docstring).

    ``plan``: what to run (:class:`mlperf_assets.plan.RunPlan`: its planned runs, folders, dataset and ledger key);
    ``log``: where decisions are reported; ``dagster_run_id``: the run doing this, recorded in the ledger."""

    def __init__(self, runner: BenchmarkRunner, plan: RunPlan, *, log: Log, dagster_run_id: str) -> None:
        self.runner, self.plan, self.log, self.dagster_run_id = runner, plan, log, dagster_run_id
        self.root: Path = plan.artifact_root
        self.node, self.scenario, self.key = plan.node, plan.scenario, plan.ledger_key

    def run(self, on_progress: ModeProgress | None = None) -> PartitionResult:
        """Run (or pick up) every planned run and collect them into the artifact store; :class:`PartitionRunError` if a
        harness run did not succeed or the node is busy with an unwatched run."""
        lock = self._lock()
        staging: Path | None = None
        handles: list[RunHandle] = []
        try:
            record = self._resume()
            self._check_other_partitions()
            if record is None:
                record = ActiveRecord(
                    node=self.node,
                    scenario=self.scenario,
                    run_id=self.plan.new_run_id(self.dagster_run_id),
                    dagster_run_id=self.dagster_run_id,
                    started_at=_utc_now(),
                    dataset=dataset_identity(self.plan.dataset),
                )
            final = self.plan.run_folder(record.run_id)
            staging = self.plan.staging_folder(record.run_id)
            for planned in self.plan.runs(record.run_id):
                handles.append(self._run_one(record, planned, staging, on_progress))
            if final.exists():  # collected before, by a run that died before clearing its record
                shutil.rmtree(final)
            os.replace(staging, final)
            clear_active(self.root, self.node, self.key)
        finally:
            lock.release()
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        for handle in handles:
            if handle is not None:
                self.runner.discard(handle)
        return PartitionResult(run_id=record.run_id, folder=final, started_by=record.dagster_run_id)

    # ---- one run per node
    def _lock(self) -> Any:
        from filelock import FileLock, Timeout

        lock_dir = self.root / LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_dir / f"{self.node}.lock"))
        started = time.monotonic()
        next_note = 5.0
        while True:
            try:
                lock.acquire(timeout=5)
                return lock
            except Timeout:
                waited = time.monotonic() - started
                if waited >= next_note:
                    self.log.info(f"node {self.node} is busy with another run; waiting ({waited:.0f} s so far)")
                    next_note = waited + LOCK_NOTE_EVERY_S

    # ---- reattaching
    def _resume(self) -> ActiveRecord | None:
        """The partition's recorded run, if this run should reattach to it; else None (after clearing a stale record
        and saying why). Runs recorded without a handle (the orchestrator died while launching) are started
        again with the same spec: a runner that finds the run already launched adopts it."""
        node, scenario, runner, key = self.node, self.scenario, self.runner, self.key
        try:
            record = read_active(self.root, node, key)
        except ValueError as exc:
            self.log.warning(f"{exc}; removing it and starting a new run")
            clear_active(self.root, node, key)
            return None
        if record is None:
            return None
        same_dataset = record.dataset == dataset_identity(self.plan.dataset)
        staging = self.plan.staging_folder(record.run_id)
        why_not: str | None = None
        observed: list[str] = []
        planned = {p.key: p for p in self.plan.runs(record.run_id)}
        for mode, entry in record.runs.items():
            try:
                recorded = entry.run_spec()
            except (ValueError, TypeError) as exc:
                why_not = f"its {mode} spec is unreadable ({exc})"
                break
            wanted = planned.get(mode)
            if wanted is None:
                why_not = f"the config no longer asks for its {mode} run"
                break
            diffs = _spec_differences(recorded, wanted.spec)
            diffs += [] if same_dataset else ["dataset file"]
            staged = (staging / wanted.folder).is_dir()
            if entry.collected and staged and not diffs:
                observed.append(f"{mode} collected")
                continue
            handle = entry.run_handle()
            if handle is None:
                if diffs:
                    why_not = f"it was made with different {', '.join(diffs)}"
                    break
                try:
                    handle = runner.start(recorded)  # reattaches if the launch got through, else launches it now
                except RunnerError as exc:
                    why_not = f"its {mode} run cannot be adopted ({exc})"
                    break
                entry.handle = handle.to_dict()
                write_active(self.root, key, record)
            seen = observe(runner, handle)
            progress = seen.progress
            if seen.problem is not None and seen.uncertain:
                raise PartitionRunError(
                    f"{node}/{scenario}: cannot check {record.origin}: {seen.problem}. Its record "
                    f"({active_record_path(self.root, node, key)}) is kept, so the next materialization can "
                    "reattach to the run; delete that file if the run is gone for good"
                )
            if diffs:
                if progress is not None and progress.state == RUNNING:
                    raise PartitionRunError(
                        f"node {node} is busy: {record.origin} ({mode}) is {describe_state(progress)} but was made "
                        f"with different {', '.join(diffs)} than the config now asks for. Restore the earlier "
                        f"config and materialize this partition again to collect it, or {runner.stop_hint(handle)} "
                        "and retry"
                    )
                why_not = f"it was made with different {', '.join(diffs)}"
                break
            if seen.problem is not None:
                why_not = f"its {mode} run {seen.problem}"
                break
            assert progress is not None
            entry.collected = entry.collected and staged
            observed.append(f"{mode} {describe_state(progress)}")
        if why_not is None and not observed:
            why_not = "no harness run of it was launched"
        if why_not is not None:
            self.log.warning(
                f"{node}/{scenario}: not reattaching to {record.origin}: {why_not}. Its record is cleared and a new "
                "run starts" + (" (its folder stays on the node for inspection)" if record.runs else "")
            )
            clear_active(self.root, node, key)
            shutil.rmtree(staging, ignore_errors=True)
            return None
        record.reattached_by.append(self.dagster_run_id)
        write_active(self.root, key, record)
        self.log.info(f"{node}/{scenario}: reattaching to {record.origin} ({'; '.join(observed)})")
        return record

    def _check_other_partitions(self) -> None:
        """Fail if a run of another partition is still going on the node with no orchestrator watching it: a
        second harness would disturb its measurement (and ours). Finished ones wait for their own partition."""
        folder = self.root / ACTIVE_DIR / self.node
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            other = path.stem
            if other == self.key:
                continue
            try:
                record = read_active(self.root, self.node, other)
            except ValueError:
                continue  # its own partition reports it
            if record is None or not record.runs:
                continue
            mode, last = list(record.runs.items())[-1]
            handle = last.run_handle()
            if handle is None or last.collected:
                continue
            seen = observe(self.runner, handle)
            progress = seen.progress
            if progress is not None and progress.state == RUNNING and not seen.uncertain:
                what, pick_up = _other_plan(self.node, other, mode, record)
                raise PartitionRunError(
                    f"node {self.node} is busy: {record.origin} ({what}) is {describe_state(progress)}, and no "
                    f"orchestrator is watching it. {pick_up} to reattach and collect it, or "
                    f"{self.runner.stop_hint(handle)} and retry"
                )

    # ---- one harness run
    def _run_one(
        self, record: ActiveRecord, planned: PlannedRun, staging: Path, on_progress: ModeProgress | None
    ) -> RunHandle:
        """Start (or adopt, from ``record``), watch and collect one harness run; PartitionRunError if it did not
        succeed. ``record`` is kept up to date on disk: it is cleared when the run failed or was cancelled here, and
        kept when the outcome is unknown (connection lost, collection failed) so a later run reattaches."""
        runner, root, key = self.runner, self.root, self.key
        spec, mode = planned.spec, planned.key  # mode: the run's name in the record and in messages ("TEST06")
        node, scenario = spec.node, self.scenario
        entry = record.runs.get(mode)
        handle = entry.run_handle() if entry is not None else None
        if entry is not None and entry.collected:
            self.log.info(f"{node}/{scenario} {mode}: run {spec.run_id} was already collected")
            return handle  # type: ignore[return-value]
        if handle is not None:
            self.log.info(f"{node}/{scenario} {mode}: watching run {spec.run_id} in {handle.run_dir} (reattached)")
            flight = _track(runner, spec, handle)
        else:
            record.runs[mode] = entry = ModeRun(spec=json.loads(spec.to_json()))
            write_active(root, key, record)  # before launching: a restart during the launch adopts what got started
            flight = _track(runner, spec, None)  # an interrupt during the launch: cancel_in_flight() finds it
            try:
                handle = runner.start(spec)
            except RunnerError as exc:
                _untrack(flight)
                del record.runs[mode]
                if record.runs:
                    write_active(root, key, record)
                else:
                    clear_active(root, node, key)
                raise PartitionRunError(str(exc)) from None
            flight.handle = handle
            entry.handle = handle.to_dict()
            write_active(root, key, record)
            self.log.info(f"{node}/{scenario} {mode}: started run {spec.run_id} in {handle.run_dir}")
        report = (lambda progress: on_progress(mode, progress)) if on_progress is not None else None
        try:
            progress = runner.wait(handle, report, timeout_s=self.plan.timeout_s)
        except RunnerError as exc:
            _untrack(flight)
            seen = observe(runner, handle)
            if seen.problem is not None and not seen.uncertain:  # it ended (cancelled on timeout): nothing to resume
                clear_active(root, node, key)
                raise PartitionRunError(str(exc)) from None
            raise PartitionRunError(
                f"{exc} (materializing {node}|{scenario} again reattaches to the run if it is still going)"
            ) from None
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM, Dagster run termination): wait() has cancelled the run. It stays in the
            # in-flight list, so a caller's cancel_in_flight() makes sure of it (a second interrupt can cut the
            # cancel short) and names it.
            clear_active(root, node, key)
            raise
        _untrack(flight)
        if progress.state != SUCCEEDED:
            clear_active(root, node, key)
            output = runner.log_tail(handle, 15)
            reason = failure_reason(output)
            raise PartitionRunError(
                f"{node}/{scenario} {mode} run {spec.run_id} {progress.state}: {progress.message}"
                + (f": {reason}" if reason else "")
                + f". Run folder kept on the node at {handle.run_dir}.",
                run_folder=handle.run_dir,
                harness_output=output,
            )
        try:
            (staging / planned.folder).parent.mkdir(parents=True, exist_ok=True)  # compliance/<TEST>: one level down
            runner.collect(handle, staging / planned.folder)
        except (RunnerError, OSError) as exc:
            raise PartitionRunError(
                f"{node}/{scenario} {mode}: collecting the run folder failed: {exc} (the run is kept on the node; "
                f"materializing {node}|{scenario} again collects it)",
                retry=True,
            ) from None
        entry.collected = True
        write_active(root, key, record)
        return handle

