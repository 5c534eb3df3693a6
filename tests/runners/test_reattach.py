"""An orchestrator killed mid-run, then started again for the same partition (real OpenSSH server on 127.0.0.1,
real harness, real Dagster instance, real DuckDB): the new `mlperf-dagster run` reattaches to the harness still
running on the node instead of launching a second one, collects it, and the results land in DuckDB once.
A record whose harness died with its orchestrator is dropped, with the reason logged, and a fresh run starts.

Every harness launch is counted by the node's `python:` itself (a wrapper script appending one line per
`python -m mlperf_assets.harness run ...` to a log), so the count does not depend on the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import counting_python, live_supervisors

from support.sshd import PrivateSSHD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CLI = str(Path(sys.executable).parent / "mlperf-dagster")
SCENARIO = "Server"
MIN_DURATION_MS = 7000  # long enough to kill the orchestrator in the middle of the performance run


def write_config(
    tmp_path: Path, stories: Path, node_yaml: str, *, qps: int = 20, min_ms: int = MIN_DURATION_MS, extra_scenarios: str = ""
) -> Path:
    results = tmp_path / "results"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"storage: {{artifact_root: {results}/artifacts, duckdb_path: {results}/mlperf.duckdb, "
        f"report_dir: {results}/report}}\n"
        f"dataset: {{source: stories, path: '{stories}', max_samples: 8}}\n"
        "benchmark:\n"
        "  model: llama3.1-8b\n  checkpoint: null\n  backend: replay\n"
        "  progress_interval_s: 0.3\n  log_interval_s: 1\n"
        f"  scenarios: {{{SCENARIO}: {{target_qps: {qps}, min_duration_ms: {min_ms}, min_query_count: 1}}"
        f"{extra_scenarios}}}\n"
        f"nodes:\n  - {node_yaml}\n"
    )
    return config


def ssh_node(sshd: PrivateSSHD, workdir: Path, python: Path) -> str:
    return (
        f"{{name: gpu-a, runner: ssh, host: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, "
        f"key_file: {sshd.client_key}, known_hosts: {sshd.known_hosts}, workdir: {workdir}, python: {python}, "
        "reconnect_timeout_s: 30, reconnect_backoff_max_s: 1}"
    )


def local_node(workdir: Path, python: Path) -> str:
    return f"{{name: box, runner: local, workdir: {workdir}, python: {python}}}"


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLPERF_DAGSTER_DATASET", "MLPERF_DAGSTER_CONFIG")}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return env


def launches(log: Path, mode: str) -> list[str]:
    """The run ids of the harness launches of ``mode`` logged by the node's python."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        args = line.split()
        if args[args.index("--mode") + 1] == mode:
            out.append(args[args.index("--run-id") + 1])
    return out


def supervisors_below(workdir: Path) -> list[int]:
    """Live exit-code supervisors of harness runs below ``workdir``: one per running harness."""
    prefix = str(workdir).encode() + b"/"
    return [pid for pid, argv in live_supervisors() if any(a.startswith(prefix) for a in argv)]


def perf_progress(workdir: Path) -> int:
    """Samples completed so far by the performance run below ``workdir`` (0 before it reports)."""
    best = 0
    for path in workdir.glob("*/performance/progress.jsonl"):
        for line in path.read_text().splitlines():
            try:
                best = max(best, int(json.loads(line).get("completed") or 0))
            except ValueError:
                pass  # a line being written
    return best


def start_and_kill_mid_run(config: Path, env: dict[str, str], workdir: Path, log_file: Path, *args: str) -> None:
    """Start `mlperf-dagster run`, wait until the performance harness has completed samples, then SIGKILL the
    orchestrator's whole process group (the harness is detached from it: it keeps running)."""
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            [CLI, "run", "--config", str(config), "--no-progress", "--no-report", "-v", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while perf_progress(workdir) == 0:
            assert proc.poll() is None, f"the orchestrator ended early:\n{log_file.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no progress within 90 s:\n{log_file.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run_again(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "run", "--config", str(config), "--no-progress", "--no-report", "-v", *args],
        env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip


def benchmark_runs(dagster_home: Path) -> dict[str, str]:
    """Dagster run id -> status of the benchmark_job runs recorded in the instance."""
    code = (
        "import json, dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    print(json.dumps({r.run_id: r.status.value for r in i.get_runs() if r.job_name == 'benchmark_job'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def db_rows(db: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT harness_run_id, mode, node, scenario, dagster_run_id FROM run_summary ORDER BY mode"
        ).fetchall()


def kill_leftovers(workdir: Path) -> None:
    for pid in supervisors_below(workdir):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("runner", ["ssh", "local"])
def test_restarted_orchestrator_reattaches_instead_of_starting_a_duplicate(runner, request, stories_dir, tmp_path):
    workdir = tmp_path / "node"
    python, launch_log = counting_python(tmp_path)
    if runner == "ssh":
        node, node_yaml = "gpu-a", ssh_node(request.getfixturevalue("sshd"), workdir, python)
    else:
        node, node_yaml = "box", local_node(workdir, python)
    config = write_config(tmp_path, stories_dir, node_yaml)
    env = cli_env(tmp_path)
    results = tmp_path / "results"
    try:
        start_and_kill_mid_run(config, env, workdir, tmp_path / "first.log")
        [run_id] = launches(launch_log, "performance")
        assert supervisors_below(workdir), "the harness died with its orchestrator"
        [killed] = [rid for rid, status in benchmark_runs(tmp_path / "dagster_home").items() if status == "STARTED"]

        second = run_again(config, env)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
        log = second.stdout + second.stderr
        assert f"reattaching to run {run_id} started at " in log and f"by Dagster run {killed}" in log, log[-4000:]

        # exactly one harness per mode was ever launched on the node, both under the first run's id
        assert launches(launch_log, "performance") == [run_id]
        assert launches(launch_log, "accuracy") == [run_id]
        assert supervisors_below(workdir) == []
        # the run was collected once, complete, into the artifact store; the node's copy was removed after
        partition = results / "artifacts" / node / SCENARIO
        assert [p.name for p in partition.iterdir()] == [run_id]
        manifest = json.loads((partition / run_id / "performance" / "run_manifest.json").read_text())
        assert manifest["exit_status"] == "completed" and manifest["run_id"] == run_id
        last = json.loads((partition / run_id / "performance" / "progress.jsonl").read_text().splitlines()[-1])
        assert last["final"] is True and last["elapsed_s"] >= MIN_DURATION_MS / 1000
        assert not (workdir / run_id).exists()
        assert not list((results / "artifacts" / ".active").rglob("*.json"))  # nothing left to reattach to
        # DuckDB holds the performance and accuracy rows once, ingested by the second Dagster run
        runs = benchmark_runs(tmp_path / "dagster_home")
        [finisher] = [rid for rid, status in runs.items() if status == "SUCCESS"]
        assert db_rows(results / "mlperf.duckdb") == [
            (run_id, "accuracy", node, SCENARIO, finisher),
            (run_id, "performance", node, SCENARIO, finisher),
        ]
    finally:
        kill_leftovers(workdir)


def test_record_of_a_dead_harness_is_dropped_and_a_fresh_run_starts(stories_dir, tmp_path):
    """Orchestrator and harness both killed (no exit code recorded): the record is stale, the next run says why,
    clears it and runs the partition afresh under a new run id."""
    workdir = tmp_path / "node"
    python, launch_log = counting_python(tmp_path)
    config = write_config(tmp_path, stories_dir, local_node(workdir, python))
    env = cli_env(tmp_path)
    results = tmp_path / "results"
    try:
        start_and_kill_mid_run(config, env, workdir, tmp_path / "first.log")
        [dead] = launches(launch_log, "performance")
        for pid in supervisors_below(workdir):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while supervisors_below(workdir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (workdir / dead / "performance" / "exit_code").exists()

        second = run_again(config, env)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
        log = second.stdout + second.stderr
        assert f"not reattaching to run {dead} started at " in log, log[-4000:]
        assert "ended without recording an exit code" in log and "a new run starts" in log

        [first, fresh] = launches(launch_log, "performance")
        assert first == dead and fresh != dead
        assert launches(launch_log, "accuracy") == [fresh]
        assert [p.name for p in (results / "artifacts" / "box" / SCENARIO).iterdir()] == [fresh]
        rows = db_rows(results / "mlperf.duckdb")
        assert [(r[0], r[1]) for r in rows] == [(fresh, "accuracy"), (fresh, "performance")]
        assert (workdir / dead / "performance" / "runner.log").exists()  # the dead run's folder is kept to inspect
        assert not list((results / "artifacts" / ".active").rglob("*.json"))
    finally:
        kill_leftovers(workdir)


def test_unwatched_run_blocks_the_node_until_its_own_partition_collects_it(stories_dir, tmp_path):
    """While an orphaned harness still runs, neither another partition nor the same partition with changed
    settings may start a second harness on the node (each fails with a message saying what to do). Once the
    orphan has finished, its own partition reattaches to the finished, uncollected run and collects it."""
    workdir = tmp_path / "node"
    python, launch_log = counting_python(tmp_path)
    offline = ", Offline: {min_duration_ms: 200, min_query_count: 8}"
    node = local_node(workdir, python)
    config = write_config(tmp_path, stories_dir, node, min_ms=18000, extra_scenarios=offline)  # outlives two refusals
    original = config.read_text()
    env = cli_env(tmp_path)
    results = tmp_path / "results"
    try:
        start_and_kill_mid_run(config, env, workdir, tmp_path / "first.log", "--scenario", SCENARIO)
        [run_id] = launches(launch_log, "performance")

        other = run_again(config, env, "--scenario", "Offline")
        assert other.returncode == 1, other.stdout[-2000:] + other.stderr[-2000:]
        assert f"node box is busy: run {run_id} started at " in other.stderr
        assert f"Materialize partition box|{SCENARIO} to reattach" in other.stderr
        [orphan] = supervisors_below(workdir)
        assert f"kill -INT -{orphan}" in other.stderr  # how to stop it by hand: the harness's process group

        write_config(tmp_path, stories_dir, node, qps=25, min_ms=18000, extra_scenarios=offline)
        changed = run_again(config, env, "--scenario", SCENARIO)
        assert changed.returncode == 1, changed.stdout[-2000:] + changed.stderr[-2000:]
        assert f"node box is busy: run {run_id} started at " in changed.stderr
        assert "made with different settings than the config now asks for" in changed.stderr
        assert launches(launch_log, "performance") == [run_id]  # nothing else was launched meanwhile

        exit_code = workdir / run_id / "performance" / "exit_code"
        deadline = time.monotonic() + 60
        while not exit_code.exists():
            assert time.monotonic() < deadline, "the orphaned harness did not finish"
            time.sleep(0.2)
        assert exit_code.read_text().strip() == "0"
        config.write_text(original)
        collected = run_again(config, env, "--scenario", SCENARIO)
        assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-4000:]
        log = collected.stdout + collected.stderr
        assert f"reattaching to run {run_id} started at " in log and "performance finished, not yet collected" in log
        assert launches(launch_log, "performance") == [run_id] and launches(launch_log, "accuracy") == [run_id]
        assert [p.name for p in (results / "artifacts" / "box" / SCENARIO).iterdir()] == [run_id]
        assert [(r[0], r[1]) for r in db_rows(results / "mlperf.duckdb")] == [
            (run_id, "accuracy"), (run_id, "performance")
        ]  # fmt: skip
        assert not list((results / "artifacts" / ".active").rglob("*.json"))
    finally:
        kill_leftovers(workdir)
