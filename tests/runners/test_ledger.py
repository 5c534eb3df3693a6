"""The ledger's reattach decision, row by row: ``ledger.PartitionRun`` over a scripted runner and a plain plan.

Each row puts in-flight records on disk (``<artifact_root>/.active/<node>/<ledger_key>.json``), scripts what the
runner answers about the runs they name, runs the partition, and checks the decision (reattach to the recorded run /
clear it and start a new one / refuse with a PartitionRunError) and the records left on disk. The expectations come
from the ledger's module docstring and docs/architecture.md, not from the code:

- a run made with the same settings that the runner reports running, or finished but not collected: reattach (same
  run id, no second harness), collect it and start only what was never launched;
- a run that failed, was cancelled, is gone from the node (RunGone) or used other settings: its record is cleared
  (the node's folder is left alone) and a fresh run starts;
- a run the runner cannot ask about (RunUnreachable, a stale answer): its record is kept, the partition fails;
- a run still going with other settings: the node is busy; the partition fails and the record is kept, the run is
  not disturbed;
- a mode recorded without a handle (the orchestrator died while launching): started again with the same spec, which
  a runner adopts;
- a record written before the keys were PlannedRun keys (``compliance/TEST06``) still reads;
- a run of another partition (or of a capacity search) still going, unwatched: this partition fails with a message
  saying how to pick that one up; a finished one waits for its own partition.

No processes, no sleeps: the runner answers from a script and its poll interval is zero.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pytest

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.run_folder import CANCELLED, FAILED, RUNNING, SUCCEEDED, RunProgress
from mlperf_assets.plan import ACCURACY, PERFORMANCE, PlannedRun
from resources.runners.base import BenchmarkRunner, RunGone, RunHandle, RunnerError, RunUnreachable
from resources.runners.ledger import (
    ActiveRecord,
    ModeRun,
    PartitionRun,
    PartitionRunError,
    active_record_path,
    dataset_identity,
)

NODE = "box"
RECORDED = "rec-1"  # the run id of the recorded run
OTHER = "other-1"  # the run id of another partition's recorded run
OLD_DAGSTER = "0ld0ld00-the-dagster-run-that-started-it"
DAGSTER = "d4d4d4d4-the-dagster-run-now"
NEW = f"new-{DAGSTER[:8]}"  # the run id the plan gives a fresh run

# What the scripted runner answers to poll()
running = RunProgress(state=RUNNING, completed=3, total=8, elapsed_s=4.0)
succeeded = RunProgress(state=SUCCEEDED, completed=8, total=8, elapsed_s=9.0, final=True, exit_code=0)
failed = RunProgress(state=FAILED, exit_code=1, message="exit code 1")
cancelled = RunProgress(state=CANCELLED, exit_code=-2, message="cancelled")
stale = RunProgress(state=RUNNING, completed=3, total=8, stale=True, message="connection lost 12 s ago")
gone = RunGone("node box: no run folder /node/rec-1/performance")
unreachable = RunUnreachable("node box: connection refused")


# ------------------------------------------------------------------------------------------ the runner and the plan


@dataclass
class Node:
    name: str
    runner: str = "scripted"


def handle_for(run_id: str, mode: str) -> RunHandle:
    return RunHandle(run_id=run_id, node=NODE, run_dir=f"/node/{run_id}/{mode}", mode=mode, pid=4242, started_at=0.0)


class ScriptedRunner(BenchmarkRunner):
    """Answers poll() for (run id, mode) from ``script``: each call takes the next answer, the last one repeats; an
    exception is raised. A run not in the script succeeds at once. ``refuse_start``: (run id, mode) whose start
    raises RunnerError. Every call is logged in the lists. A run polled more than MAX_POLLS times fails the test
    (a ledger that waits on a run the script keeps running)."""

    MAX_POLLS = 20

    kind = "scripted"
    settings_model = Node
    poll_interval_s = 0.0

    def __init__(self, script: Mapping[tuple[str, str], Sequence[object]], refuse_start: Sequence[tuple[str, str]]):
        super().__init__(Node(NODE))
        self.script = {key: list(answers) for key, answers in script.items()}
        self.refuse_start = set(refuse_start)
        self.started: list[tuple[str, str]] = []
        self.collected: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, str]] = []
        self.polls: dict[tuple[str, str], int] = {}

    def start(self, spec: RunSpec) -> RunHandle:
        if (spec.run_id, spec.mode) in self.refuse_start:
            raise RunnerError(f"node {NODE}: a run {spec.run_id} with another spec is already there")
        self.started.append((spec.run_id, spec.mode))
        return handle_for(spec.run_id, spec.mode)

    def poll(self, handle: RunHandle) -> RunProgress:
        key = (handle.run_id, handle.mode)
        self.polls[key] = self.polls.get(key, 0) + 1
        assert self.polls[key] <= self.MAX_POLLS, f"{key} polled {self.MAX_POLLS} times: the ledger waits forever"
        answers = self.script.get(key, [succeeded])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, RunProgress)
        return answer

    def collect(self, handle: RunHandle, dest_dir: str | Path) -> Path:
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "collected_from").write_text(f"{handle.run_id}/{handle.mode}")
        self.collected.append((handle.run_id, handle.mode))
        return dest

    def cancel(self, handle: RunHandle) -> None:
        self.cancelled.append((handle.run_id, handle.mode))

    def active_runs(self) -> list[tuple[RunHandle, RunProgress]]:
        return []


@dataclass
class Plan:
    """A plain :class:`mlperf_assets.plan.RunPlan`: performance and accuracy, then each compliance test."""

    artifact_root: Path
    dataset: Path
    scenario: str = "Server"
    max_samples: int = 8
    compliance: tuple[str, ...] = ()
    node: str = NODE
    timeout_s: float | None = None
    key: str | None = None  # the ledger key; None: the scenario, as a partition's

    @property
    def ledger_key(self) -> str:
        return self.key or self.scenario

    def new_run_id(self, dagster_run_id: str) -> str:
        return f"new-{dagster_run_id[:8]}"

    def spec(self, run_id: str, mode: str, compliance: str | None = None) -> RunSpec:
        return RunSpec(run_id=run_id, node=self.node, scenario=self.scenario, mode=mode, benchmark="llama3.1-8b",
                       backend="replay", dataset_path=str(self.dataset), max_samples=self.max_samples,
                       compliance=compliance)

    def runs(self, run_id: str) -> list[PlannedRun]:
        out = [PlannedRun(mode, self.spec(run_id, mode), mode) for mode in (PERFORMANCE, ACCURACY)]
        out += [PlannedRun(test, self.spec(f"{run_id}.{test}", PERFORMANCE, test), f"compliance/{test}")
                for test in self.compliance]
        return out

    def run_folder(self, run_id: str) -> Path:
        return self.artifact_root / self.node / self.scenario / run_id

    def staging_folder(self, run_id: str) -> Path:
        return self.artifact_root / self.node / self.scenario / f".staging-{run_id}"


class Log:
    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        self.infos.append(msg)

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)


# ------------------------------------------------------------------------------------------------- records on disk


@dataclass(frozen=True)
class Mode:
    """One harness run in a record: its key there, whether it has a runner handle, whether it was collected, and
    how its spec differs from what the plan asks for now."""

    key: str
    handle: bool = True
    collected: bool = False
    spec_changes: Mapping[str, object] = field(default_factory=dict)


def record_text(plan: Plan, run_id: str, modes: Sequence[Mode], *, other_dataset: bool = False) -> str:
    planned = {p.key: p for p in plan.runs(run_id)}
    runs = {}
    for mode in modes:
        spec = dataclasses.replace(planned[mode.key.rpartition("/")[2]].spec, **mode.spec_changes)
        handle = handle_for(spec.run_id, spec.mode).to_dict() if mode.handle else None
        runs[mode.key] = ModeRun(spec=json.loads(spec.to_json()), handle=handle, collected=mode.collected)
    dataset = dataset_identity(plan.dataset)
    if other_dataset:
        dataset["size"] += 1
    record = ActiveRecord(node=NODE, scenario=plan.scenario, run_id=run_id, dagster_run_id=OLD_DAGSTER,
                          started_at="2025-01-01T00:00:00+00:00", dataset=dataset, runs=runs)
    return record.to_json()


Records = Callable[[Plan], Mapping[str, str]]  # the plan run -> {ledger key: record text} on disk before


def ours(*modes: Mode, other_dataset: bool = False, **plan_changes: object) -> Records:
    """This partition's record of run RECORDED, made by the plan with ``plan_changes``."""
    return lambda plan: {plan.ledger_key: record_text(dataclasses.replace(plan, **plan_changes), RECORDED, modes,
                                                      other_dataset=other_dataset)}


def raw(text: str) -> Records:
    return lambda plan: {plan.ledger_key: text}


def other(scenario: str, key: str, *modes: Mode) -> Records:
    """Another plan's record (run OTHER) on the same node, under ledger key ``key``."""
    return lambda plan: {key: record_text(dataclasses.replace(plan, scenario=scenario, key=key), OTHER, modes)}


# ---------------------------------------------------------------------------------------------------------- the table

REATTACH, START_NEW, REFUSE = "reattach", "start new", "refuse"
perf, acc = Mode(PERFORMANCE), Mode(ACCURACY)
R_PERF, R_ACC = (RECORDED, PERFORMANCE), (RECORDED, ACCURACY)
BOTH_NEW = [(NEW, PERFORMANCE), (NEW, ACCURACY)]


@dataclass(frozen=True)
class Row:
    before: Records
    decision: str
    says: tuple[str, ...] = ()  # in the warning (start new), the info line (reattach) or the error (refuse)
    script: Mapping[tuple[str, str], Sequence[object]] = field(default_factory=dict)
    started: Sequence[tuple[str, str]] | None = None  # the runner's starts; default: both runs of a new run id
    collected: Sequence[tuple[str, str]] | None = None  # default: whatever was started
    kept: tuple[str, ...] = ()  # ledger keys whose record is on disk afterwards, unchanged (every other is gone)
    staged: tuple[str, ...] = ()  # folders the recorded run already has in its staging folder
    refuse_start: Sequence[tuple[str, str]] = ()
    not_said: tuple[str, ...] = ()
    compliance: tuple[str, ...] = ()


ROWS = {
    # nothing recorded
    "no record: a new run": Row(raw(""), START_NEW),
    # the recorded run, same settings
    "running: reattach": Row(
        ours(perf), REATTACH, ("reattaching to run rec-1", "performance still running (3/8 samples"),
        script={R_PERF: [running, succeeded]}, started=[R_ACC], collected=[R_PERF, R_ACC]),
    "finished, not collected: reattach": Row(
        ours(perf), REATTACH, ("performance finished, not yet collected",),
        script={R_PERF: [succeeded]}, started=[R_ACC], collected=[R_PERF, R_ACC]),
    "failed: a new run": Row(ours(perf), START_NEW, ("not reattaching to run rec-1", "performance run failed"),
                             script={R_PERF: [failed]}),
    "cancelled: a new run": Row(ours(perf), START_NEW, ("performance run cancelled",), script={R_PERF: [cancelled]}),
    "gone from the node: a new run": Row(ours(perf), START_NEW, ("performance run is gone", "no run folder"),
                                         script={R_PERF: [gone]}),
    "unreachable: refused, record kept": Row(
        ours(perf), REFUSE, ("cannot check run rec-1", "connection refused", ".active/box/Server.json", "is kept"),
        script={R_PERF: [unreachable]}, started=[], collected=[], kept=("Server",)),
    "stale answer: record kept, reattach and watch until the node answers": Row(
        ours(perf), REATTACH, ("reattaching to run rec-1", "still running (3/8 samples", "connection lost 12 s ago"),
        script={R_PERF: [stale, stale, succeeded]}, started=[R_ACC], collected=[R_PERF, R_ACC]),
    "reattached, then failed: refused, record cleared": Row(
        ours(perf), REFUSE, ("performance run rec-1 failed", "Run folder kept on the node at /node/rec-1/performance"),
        script={R_PERF: [running, failed]}, started=[], collected=[]),
    # the record itself
    "unreadable record: a new run": Row(raw("{not json"), START_NEW, ("not a readable run record",)),
    "record of an unknown schema: a new run": Row(raw(json.dumps({"schema": 1, "node": NODE})), START_NEW,
                                                  ("not a readable run record", "unknown record schema")),
    "record with no harness run: a new run": Row(ours(), START_NEW, ("no harness run of it was launched",)),
    "a run the plan no longer asks for: a new run": Row(
        ours(perf, Mode("TEST06"), compliance=("TEST06",)), START_NEW, ("no longer asks for its TEST06 run",),
        script={R_PERF: [running]}),
    # other settings
    "different spec, finished: a new run": Row(
        ours(perf, max_samples=16), START_NEW, ("made with different max_samples",), script={R_PERF: [succeeded]}),
    "different spec, running: refused, record kept": Row(
        ours(perf, max_samples=16), REFUSE,
        ("node box is busy: run rec-1", "different max_samples", "stop it on node box (kill -INT -4242"),
        script={R_PERF: [running]}, started=[], collected=[], kept=("Server",)),
    "different dataset, running: refused, record kept": Row(
        ours(perf, other_dataset=True), REFUSE, ("node box is busy", "different dataset file"),
        script={R_PERF: [running]}, started=[], collected=[], kept=("Server",)),
    "different dataset, finished: a new run": Row(
        ours(perf, other_dataset=True), START_NEW, ("different dataset file",), script={R_PERF: [succeeded]}),
    # recorded without a handle: the orchestrator died while launching it
    "no handle, same spec: adopted, reattach": Row(
        ours(Mode(PERFORMANCE, handle=False)), REATTACH, ("reattaching to run rec-1",),
        script={R_PERF: [running, succeeded]}, started=[R_PERF, R_ACC], collected=[R_PERF, R_ACC]),
    "no handle, different spec: a new run, the old spec not launched": Row(
        ours(Mode(PERFORMANCE, handle=False), max_samples=16), START_NEW, ("made with different max_samples",)),
    "no handle, the runner refuses to adopt: a new run": Row(
        ours(Mode(PERFORMANCE, handle=False)), START_NEW, ("its performance run cannot be adopted",),
        refuse_start=[R_PERF]),
    # collected into the staging folder already
    "performance collected and staged, accuracy running: reattach": Row(
        ours(Mode(PERFORMANCE, collected=True), acc), REATTACH, ("performance collected", "accuracy still running"),
        script={R_ACC: [running, succeeded]}, started=[], collected=[R_ACC], staged=(PERFORMANCE,)),
    "collected but the staged copy is gone: reattach and collect again": Row(
        ours(Mode(PERFORMANCE, collected=True), acc), REATTACH, ("performance finished, not yet collected",),
        script={R_ACC: [running, succeeded]}, started=[], collected=[R_PERF, R_ACC]),
    "record from before PlannedRun keys (compliance/TEST06): reattach": Row(
        ours(Mode(PERFORMANCE, collected=True), Mode(ACCURACY, collected=True), Mode("compliance/TEST06"),
             compliance=("TEST06",)),
        REATTACH, ("TEST06 still running",), script={(f"{RECORDED}.TEST06", PERFORMANCE): [running, succeeded]},
        started=[], collected=[(f"{RECORDED}.TEST06", PERFORMANCE)], staged=(PERFORMANCE, ACCURACY),
        compliance=("TEST06",)),
    # another plan's run on the node
    "another partition running, unwatched: refused": Row(
        other("Offline", "Offline", perf), REFUSE,
        ("node box is busy: run other-1", "Offline performance", "still running",
         "Materialize partition box|Offline to reattach", "stop it on node box"),
        script={(OTHER, PERFORMANCE): [running]}, started=[], collected=[], kept=("Offline",)),
    "another partition finished: it waits, a new run here": Row(
        other("Offline", "Offline", perf), START_NEW, script={(OTHER, PERFORMANCE): [succeeded]}, kept=("Offline",)),
    "a capacity-search probe running, unwatched: refused, naming the search": Row(
        other("Server", "Server-search", perf), REFUSE,
        ("node box is busy: run other-1", "capacity search of Server on box",
         "mlperf-dagster search-qps --node box --scenario Server", "max_qps_search partition box|Server"),
        script={(OTHER, PERFORMANCE): [running]}, started=[], collected=[], kept=("Server-search",),
        not_said=("Materialize partition box|Server-search",)),
}


@pytest.fixture
def plan_for(tmp_path: Path) -> Callable[[Row], Plan]:
    dataset = tmp_path / "prepared.json"
    dataset.write_text('{"samples": []}\n')
    return lambda row: Plan(artifact_root=tmp_path / "artifacts", dataset=dataset, compliance=row.compliance)


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_reattach_decision(row: Row, plan_for: Callable[[Row], Plan]) -> None:
    plan = plan_for(row)
    before = {key: text for key, text in row.before(plan).items() if text}
    for key, text in before.items():
        path = active_record_path(plan.artifact_root, NODE, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in row.staged:
        (plan.staging_folder(RECORDED) / folder).mkdir(parents=True)
        (plan.staging_folder(RECORDED) / folder / "collected_from").write_text(f"staged {folder}")
    runner, log = ScriptedRunner(row.script, row.refuse_start), Log()
    partition = PartitionRun(runner, plan, log=log, dagster_run_id=DAGSTER)

    if row.decision == REFUSE:
        with pytest.raises(PartitionRunError) as raised:
            partition.run()
        said = str(raised.value)
    else:
        result = partition.run()
        said = "\n".join(log.warnings if row.decision == START_NEW else log.infos)
        if row.decision == REATTACH:
            assert not log.warnings
            assert (result.run_id, result.started_by) == (RECORDED, OLD_DAGSTER)
        else:
            assert (result.run_id, result.started_by) == (NEW, DAGSTER)
            assert not plan.staging_folder(RECORDED).exists()
            assert row.says or not log.warnings
        # every planned run is in the run folder: from the staging folder if it was there, else collected now
        for planned in plan.runs(result.run_id):
            source = (f"staged {planned.folder}" if planned.folder in row.staged
                      else f"{planned.spec.run_id}/{planned.spec.mode}")
            assert (result.folder / planned.folder / "collected_from").read_text() == source
        assert result.folder == plan.run_folder(result.run_id) and not plan.staging_folder(result.run_id).exists()

    for fragment in row.says:
        assert fragment in said
    for fragment in row.not_said:
        assert fragment not in said
    started = BOTH_NEW if row.started is None else list(row.started)
    assert runner.started == started
    assert runner.collected == (started if row.collected is None else list(row.collected))
    assert runner.cancelled == []  # a recorded run is never disturbed: its folder stays on the node
    active = plan.artifact_root / ".active" / NODE
    left = {path.stem: path.read_text() for path in active.glob("*.json")} if active.is_dir() else {}
    assert left == {key: before[key] for key in row.kept}


def test_reattaching_names_the_dagster_run_in_the_record(plan_for: Callable[[Row], Plan]) -> None:
    """The record after a reattach decision: the same run (its Dagster run kept as the one that started it), the
    reattaching Dagster run added to ``reattached_by``, on disk before anything is collected."""
    plan = plan_for(Row(raw(""), REATTACH))
    path = active_record_path(plan.artifact_root, NODE, plan.ledger_key)
    path.parent.mkdir(parents=True)
    path.write_text(record_text(plan, RECORDED, [perf]))
    partition = PartitionRun(ScriptedRunner({R_PERF: [running]}, ()), plan, log=Log(), dagster_run_id=DAGSTER)

    record = partition._resume()

    assert record is not None and (record.run_id, record.dagster_run_id) == (RECORDED, OLD_DAGSTER)
    on_disk = ActiveRecord.from_json(path.read_text())
    assert on_disk.reattached_by == record.reattached_by == [DAGSTER]
    assert on_disk.runs == ActiveRecord.from_json(record_text(plan, RECORDED, [perf])).runs
