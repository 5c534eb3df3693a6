"""Ctrl-C and SIGTERM on `mlperf-dagster run` and `demo` (finding F1): the command is a real process, the signal a
real one, the harness a real LoadGen run on the local node (or over a real OpenSSH server on 127.0.0.1).

What must hold: the harness run in flight is cancelled on its node (no harness process survives the command), no
further partition starts (counted by the node's `python:` itself, a wrapper logging each harness launch), the
report job never runs, nothing is collected into the artifact store or DuckDB, the exit code is 130 (SIGINT) or
143 (SIGTERM), and the output names each cancelled run on one line, with no Dagster class name or traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import counting_python, live_supervisors

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CLI = str(Path(sys.executable).parent / "mlperf-dagster")
PROJECT = Path(__file__).resolve().parents[2]
# Server first (the run that gets interrupted: 20 queries/s for two minutes), SingleStream after (must never start).
TWO_SCENARIOS = (
    "{Server: {target_qps: 20, min_duration_ms: 120000, min_query_count: 1}, "
    "SingleStream: {min_duration_ms: 300, min_query_count: 20, target_latency_ms: 0.01}}"
)
CANCEL_LINE = re.compile(r"^cancelled (\S+)/Server performance run (\S+) \(its folder stays on node \1 at (.+)\)$")


def write_config(tmp_path: Path, stories: Path, node_yaml: str) -> Path:
    results = tmp_path / "results"
    path = tmp_path / "two.yaml"
    path.write_text(
        f"storage: {{artifact_root: {results}/artifacts, duckdb_path: {results}/mlperf.duckdb, "
        f"report_dir: {results}/report}}\n"
        f"dataset: {{source: stories, path: '{stories}', max_samples: 8}}\n"
        "benchmark:\n"
        "  model: llama3.1-8b\n  checkpoint: null\n  backend: extractive\n"
        "  progress_interval_s: 0.3\n  log_interval_s: 1\n"
        f"  scenarios: {TWO_SCENARIOS}\n"
        f"nodes:\n  - {node_yaml}\n"
    )
    return path


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLPERF_DAGSTER_DATASET", "MLPERF_DAGSTER_CONFIG")}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    return env


def supervisors_below(folder: Path) -> list[int]:
    return [pid for pid, argv in live_supervisors() if any(str(folder).encode() in a for a in argv)]


def kill_leftovers(folder: Path) -> None:
    for pid in supervisors_below(folder):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Command:
    """`mlperf-dagster ARGS` in its own session (like a command typed at a terminal: Ctrl-C reaches its process
    group), output in files so it never blocks on a pipe."""

    def __init__(self, args: list[str], env: dict[str, str], folder: Path):
        self.out_path = folder / "command.out"
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for_harness(self, workdir: Path, timeout_s: float = 240) -> Path:
        """The performance run folder once its harness has completed a sample (LoadGen is measuring)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the command ended early ({self.proc.returncode}):\n{self.output}"
            for progress in workdir.glob("*/performance/progress.jsonl"):
                lines = progress.read_text().splitlines()
                if lines and json.loads(lines[-1]).get("completed", 0) > 0:
                    return progress.parent
            time.sleep(0.2)
        raise AssertionError(f"no harness run started within {timeout_s} s:\n{self.output}")

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground process group

    def finish(self, timeout_s: float = 120) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the command did not stop within {timeout_s} s:\n{self.output}") from None
        return rc, self.output


def dagster_jobs(home: Path) -> list[tuple[str, str]]:
    """(job name, status) of every run in the Dagster instance at ``home``."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return sorted((r.job_name, r.status.value) for r in instance.get_runs())


def assert_stopped(
    rc: int, output: str, *, command: str, signame: str, code: int, tmp_path: Path, workdir: Path, launches: Path,
    run_dir: Path, node: str = "local",
) -> None:  # fmt: skip
    lines = output.strip().splitlines()
    assert rc == code, output
    # one line per cancelled run, naming it and where its folder stays
    cancelled = [m for m in map(CANCEL_LINE.match, lines) if m]
    assert len(cancelled) == 1, output
    assert cancelled[0].group(1) == node and Path(cancelled[0].group(3)) == run_dir
    run_id = cancelled[0].group(2)
    assert run_dir.parent.name == run_id
    assert lines[-1] == (
        f"mlperf-dagster {command}: stopped by {signame} while running {node}/Server; "
        f"not started: {node}/SingleStream; no report written"
    ), output
    for unwanted in ("Dagster", "Traceback", "KeyboardInterrupt", "FAILED", "partitions succeeded"):
        assert unwanted not in output, output
    # the later scenario never started, nor the accuracy run of the interrupted one: one harness launch in all
    launched = launches.read_text().splitlines()
    assert len(launched) == 1 and "--scenario Server --mode performance" in launched[0], launched
    assert [p.name for p in workdir.iterdir() if not p.name.startswith("_")] == [run_id]
    # no harness left behind; its run folder stays on the node, marked as cancelled by the runner and by itself
    assert supervisors_below(workdir) == []
    assert (run_dir / "cancel_requested").is_file()
    assert int((run_dir / "exit_code").read_text()) in (130, 143)
    assert json.loads((run_dir / "run_manifest.json").read_text())["exit_status"] == "interrupted"
    # nothing collected, ingested or reported; no in-flight record left to reattach to
    results = tmp_path / "results"
    assert not list((results / "artifacts").glob(f"{node}/*/*")), list((results / "artifacts").rglob("*"))
    assert not (results / "artifacts" / ".active" / node / "Server.json").exists()
    assert not (results / "mlperf.duckdb").exists()
    assert not (results / "report").exists()
    # the interrupted partition's Dagster run ended CANCELED (as from the UI), not FAILURE (no failure alert)
    jobs = dagster_jobs(tmp_path / "dagster_home")
    assert [job for job in jobs if job[0] != "dataset_job"] == [("benchmark_job", "CANCELED")], jobs


def local_setup(tmp_path: Path, stories: Path) -> tuple[Path, Path, Path]:
    """(config, workdir, launches log) for a local node whose python counts harness launches."""
    python, launches = counting_python(tmp_path)
    workdir = tmp_path / "node"
    config = write_config(tmp_path, stories, f"{{name: local, runner: local, workdir: {workdir}, python: {python}}}")
    return config, workdir, launches


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_run_stops_everything_on_a_signal(signame, stories_dir, tmp_path):
    config, workdir, launches = local_setup(tmp_path, stories_dir)
    command = Command(["run", "--config", str(config), "--no-progress"], cli_env(tmp_path), tmp_path)
    try:
        run_dir = command.wait_for_harness(workdir)
        if signame == "SIGINT":
            command.ctrl_c()
        else:
            command.proc.send_signal(signal.SIGTERM)  # `kill PID`, systemd, a CI timeout: the command alone
        rc, output = command.finish()
    finally:
        kill_leftovers(workdir)
    assert_stopped(
        rc, output, command="run", signame=signame, code=130 if signame == "SIGINT" else 143, tmp_path=tmp_path,
        workdir=workdir, launches=launches, run_dir=run_dir,
    )  # fmt: skip


def test_ctrl_c_pressed_twice_leaves_no_harness_behind(stories_dir, tmp_path):
    """The second Ctrl-C lands while the first is still being handled (the harness flushing its logs): it must
    neither cut the cancel short nor change the outcome."""
    config, workdir, launches = local_setup(tmp_path, stories_dir)
    command = Command(["run", "--config", str(config), "--no-progress"], cli_env(tmp_path), tmp_path)
    try:
        run_dir = command.wait_for_harness(workdir)
        command.ctrl_c()
        time.sleep(0.05)
        command.ctrl_c()
        time.sleep(0.3)
        command.ctrl_c()
        rc, output = command.finish()
    finally:
        kill_leftovers(workdir)
    assert_stopped(
        rc, output, command="run", signame="SIGINT", code=130, tmp_path=tmp_path, workdir=workdir, launches=launches,
        run_dir=run_dir,
    )  # fmt: skip


def test_demo_stops_everything_on_ctrl_c(stories_dir, tmp_path):
    config, workdir, launches = local_setup(tmp_path, stories_dir)
    command = Command(
        ["demo", "--config", str(config), "--dataset", str(stories_dir), "--no-progress"], cli_env(tmp_path), tmp_path
    )
    try:
        run_dir = command.wait_for_harness(workdir)
        command.ctrl_c()
        rc, output = command.finish()
    finally:
        kill_leftovers(workdir)
    assert_stopped(
        rc, output, command="demo", signame="SIGINT", code=130, tmp_path=tmp_path, workdir=workdir, launches=launches,
        run_dir=run_dir,
    )  # fmt: skip
    assert "note: backend extractive is a baseline" not in output  # the demo's closing words are for a finished run


def test_ssh_node_run_is_cancelled_on_the_node(sshd, stories_dir, tmp_path):
    """The same through the SSH runner: the cancel reaches the harness on the node over SSH."""
    python, launches = counting_python(tmp_path)
    workdir = tmp_path / "node"
    node_yaml = (
        f"{{name: gpu-a, runner: ssh, host: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, "
        f"key_file: {sshd.client_key}, known_hosts: {sshd.known_hosts}, workdir: {workdir}, python: {python}}}"
    )
    config = write_config(tmp_path, stories_dir, node_yaml)
    command = Command(["run", "--config", str(config), "--no-progress"], cli_env(tmp_path), tmp_path)
    try:
        run_dir = command.wait_for_harness(workdir)
        command.ctrl_c()
        rc, output = command.finish()
    finally:
        kill_leftovers(workdir)
    assert_stopped(
        rc, output, command="run", signame="SIGINT", code=130, tmp_path=tmp_path, workdir=workdir, launches=launches,
        run_dir=run_dir, node="gpu-a",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ the mechanism
def test_stop_signals_records_the_signal_whoever_handles_it():
    """Dagster swaps its own SIGINT/SIGTERM handler in while a job runs; the signal still counts, with its number,
    and between jobs a signal is recorded without raising. The previous handlers come back afterwards."""
    from mlperf_assets.commands._shared import StopSignals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGTERM)  # our handler: recorded, nothing raised
        time.sleep(0.05)
        assert stop.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.received == signal.SIGTERM  # the first one decides the exit code
    with StopSignals() as stop:
        seen = []
        previous = signal.signal(signal.SIGINT, lambda signo, frame: seen.append(signo))  # like Dagster's handler
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        finally:
            signal.signal(signal.SIGINT, previous)
        assert seen == [signal.SIGINT] and stop.received == signal.SIGINT
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd was given back


def test_a_run_interrupted_while_launching_is_found_and_cancelled(stories_dir, tmp_path):
    """An interrupt can land while the runner is launching a harness, before its handle is known: the in-flight
    list then holds the spec only, and cancel_in_flight finds the run among the runner's active_runs() and stops it
    (the local runner finds the supervisor by its run folder)."""
    from mlperf_assets.harness.dataset import prepare_dataset
    from mlperf_assets.harness.args import RunSpec
    from resources.runners.ledger import _track, cancel_in_flight, in_flight
    from resources.runners.local import LocalRunner

    dataset = prepare_dataset("stories", stories_dir, tmp_path / "prepared.json", benchmark="llama3.1-8b",
                              tokenizer="byte", max_samples=5)  # fmt: skip
    workdir = tmp_path / "node"
    runner = LocalRunner(node="box", workdir=str(workdir), cancel_grace_s=5)
    spec = RunSpec(
        run_id="launching-1", node="box", scenario="Server", mode="performance", benchmark="llama3.1-8b",
        backend="extractive", dataset_path=str(dataset), progress_interval_s=0.2,
        settings={"target_qps": 20, "min_duration_ms": 120000, "min_query_count": 1},
    )  # fmt: skip
    handle = runner.start(spec)
    try:
        LocalRunner(node="box", workdir=str(workdir)).poll(handle)  # another runner object: no pid of its own
        _track(LocalRunner(node="box", workdir=str(workdir)), spec, None)  # what a cut-short launch leaves
        deadline = time.monotonic() + 60
        while not (Path(handle.run_dir) / "progress.jsonl").exists():
            assert time.monotonic() < deadline, "the harness did not start"
            time.sleep(0.1)
        [done] = cancel_in_flight()
        assert done.problem is None and done.run_dir == handle.run_dir
        assert str(done.run) == "box/Server performance run launching-1"
        assert in_flight() == []
        assert supervisors_below(workdir) == []
        assert int((Path(handle.run_dir) / "exit_code").read_text()) == 130
    finally:
        kill_leftovers(workdir)
