"""Endpoints points run for real: MLCommons' reference client (pinned, its Python 3.12 venv) against its own echo
server, started by the point on a local node, through the existing local runner and the ledger, from the
``mlperf-dagster endpoints`` command.

- an orchestrator SIGKILLed in the middle of a point: the next ``endpoints run --point`` reattaches to the same run
  (one launch of the point ever, one collected folder with every file of the contract, nothing left in flight);
- the newcomer path: ``endpoints run`` of a shortened 8-point curve, every point stored in DuckDB (slow).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.endpoints_client import ensure_client

pytest.importorskip("submission_checker")

CLI = str(Path(sys.executable).parent / "mlperf-dagster")
PROJECT = Path(__file__).resolve().parents[2]


def counting_python(tmp_path: Path) -> tuple[Path, Path]:
    """A node python that logs each harness launch's subcommand and run id, then runs the real one."""
    log = tmp_path / "launches.log"
    script = tmp_path / "python"
    script.write_text(
        "#!/bin/sh\n"
        'run_id=""; prev=""; sub=""\n'
        'for a in "$@"; do [ "$prev" = "--run-id" ] && run_id="$a"; '
        '[ "$a" = endpoint-point ] && sub="$a"; prev="$a"; done\n'
        f'[ -n "$sub" ] && [ "$1" = "-m" ] && echo "$sub $run_id" >> {log}\n'  # the harness, not its supervisor
        f'exec {sys.executable} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def write_config(tmp_path: Path, stories: Path, venv: Path, python: Path | None = None, *, passes: int = 1,
                 sshd=None) -> Path:
    results = tmp_path / "results"
    node = f"{{name: box, runner: local, workdir: {tmp_path / 'node'}" + (f", python: {python}}}" if python else "}")
    if sshd is not None:  # the same machine through a real sshd: the SSH runner's upload, launch and polling
        node = (f"{{name: box, runner: ssh, host: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, "
                f"key_file: {sshd.client_key}, known_hosts: {sshd.known_hosts}, workdir: {tmp_path / 'node'}, "
                f"python: {python or sys.executable}, reconnect_timeout_s: 30, reconnect_backoff_max_s: 1}}")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"storage: {{artifact_root: {results}/artifacts, duckdb_path: {results}/mlperf.duckdb, "
        f"report_dir: {results}/report}}\n"
        f"dataset: {{source: stories, path: {stories}, max_samples: 20}}\n"
        "benchmark: {backend: extractive, checkpoint: null, log_interval_s: 1}\n"
        f"nodes: [{node}]\n"
        "endpoints:\n"
        f"  client: {{command: {venv}/bin/inference-endpoint, accuracy_scorer: string_match,\n"
        "           settings: {warmup_connections: 0}}\n"
        "  server: {launch: echo, model: echo-model}\n"
        f"  highest_concurrency: 64\n  shortened: true\n  passes: {passes}\n"
    )
    return config


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLPERF_DAGSTER_DATASET", "MLPERF_DAGSTER_CONFIG")}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return env


def processes_in(folder: Path) -> list[str]:
    """Live processes working in ``folder`` (the point runner, the client and its workers, a started server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}")
        except OSError:
            continue
    return found


def launches(log: Path) -> list[str]:
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


def active_handle(results: Path, label: str) -> dict | None:
    path = results / "artifacts" / ".active" / "box" / f"endpoints-{label}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = record.get("runs", {}).get("point") or {}
    return entry.get("handle")


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["local", "ssh"])
def test_killed_orchestrator_reattaches_to_the_point_without_a_second_run(runner, request, stories_dir, tmp_path):
    venv = ensure_client()
    python, log = counting_python(tmp_path)
    sshd = request.getfixturevalue("sshd") if runner == "ssh" else None
    config = write_config(tmp_path, stories_dir, venv, python, passes=5, sshd=sshd)
    env = cli_env(tmp_path)
    results = tmp_path / "results"
    first_log = tmp_path / "first.log"
    with open(first_log, "wb") as out:
        proc = subprocess.Popen([CLI, "endpoints", "run", "--config", str(config), "--point", "c16"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    handle = None
    try:
        deadline = time.monotonic() + 300
        while handle is None or not (Path(handle["run_dir"]) / "point_manifest.json").exists():
            assert proc.poll() is None, f"the orchestrator ended early:\n{first_log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, first_log.read_text()[-3000:]
            time.sleep(0.2)
            handle = active_handle(results, "c16")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator only: the point runs in a session of its own
        proc.wait(timeout=10)
    run_id = handle["run_id"]
    assert launches(log) == [run_id]
    try:
        second = subprocess.run([CLI, "endpoints", "run", "--config", str(config), "--point", "c16", "--verbose"], env=env,
                                capture_output=True, text=True, timeout=900)
        text = second.stdout + second.stderr
        assert second.returncode == 0, text[-4000:]
        assert f"reattaching to run {run_id}" in text, text[-4000:]
        assert launches(log) == [run_id]  # the point ran once
        collected = results / "artifacts" / "endpoints" / "box" / "c16"
        assert [p.name for p in collected.iterdir()] == [run_id]
        folder = collected / run_id
        manifest = json.loads((folder / "point_manifest.json").read_text())
        assert manifest["run_id"] == run_id and manifest["concurrency"] == 16 and manifest["role"] == "free"
        assert manifest["n_samples_to_issue"] == 100 and manifest["client"]["version"] == "0.1.0"
        summary = json.loads((folder / "report" / "performance" / "result_summary.json").read_text())
        assert summary["n_samples_issued"] == 100 and summary["n_samples_completed"] == 100
        assert not (folder / "report_accuracy").exists()  # a free point has no accuracy run
        assert json.loads((folder / "run_manifest.json").read_text())["exit_status"] == "completed"
        assert json.loads((folder / "steady_state.json").read_text())["available"] is False
        last = json.loads((folder / "progress.jsonl").read_text().splitlines()[-1])
        assert last["completed"] >= 100 and last["total"] == 100 and last["final"] is True
        assert not (folder / "dataset_cache").exists()  # the dataset link is not collected
        assert not list((results / "artifacts" / ".active").rglob("*.json"))
    finally:
        if handle and handle.get("pid"):
            try:
                os.killpg(handle["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_newcomer_curve_runs_eight_points_into_the_store(stories_dir, tmp_path):
    venv = ensure_client()
    config = write_config(tmp_path, stories_dir, venv)
    out = subprocess.run([CLI, "endpoints", "run", "--config", str(config)], env=cli_env(tmp_path),
                         capture_output=True, text=True, timeout=3600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "UNOFFICIAL" in out.stdout
    import duckdb

    with duckdb.connect(str(tmp_path / "results" / "mlperf.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT concurrency, n_samples_completed FROM endpoint_points ORDER BY concurrency "
                           "NULLS LAST").fetchall()
    assert [r[0] for r in rows] == [1, 3, 5, 10, 16, 25, 64, None]
    assert all(r[1] == 20 for r in rows)
    accuracy = sorted((tmp_path / "results" / "artifacts" / "endpoints" / "box").glob("*/*/report_accuracy"))
    assert sorted(p.parent.parent.name for p in accuracy) == ["c1", "c10", "c3", "c64", "offline"]
    # the curve the planner chose is one the checker accepts: only a shortened curve's own findings remain
    env = cli_env(tmp_path)
    subprocess.run([CLI, "endpoints", "package", "--config", str(config), "--out", str(tmp_path / "bundle"),
                    "--no-check"], env=env, capture_output=True, text=True, timeout=600, check=True)
    check = subprocess.run([CLI, "endpoints", "check", str(tmp_path / "bundle"), "--config", str(config),
                            "--limit", "1000"], env=env, capture_output=True, text=True, timeout=600)
    errors = set(re.findall(r"ERROR ([a-z0-9-]+)", check.stdout + check.stderr))
    assert errors and errors <= {"min-query-count", "accuracy-sample-count", "metric-consistency-tpot-p90"}, errors


def test_the_ui_has_the_plan_and_one_point_partition_per_node_and_label(tmp_path, stories_dir):
    from mlperf_assets.config import load_config
    from mlperf_assets.definitions import build_definitions

    config = write_config(tmp_path, stories_dir, tmp_path / "venv")
    repo = build_definitions(load_config(config)).get_repository_def()
    point = repo.assets_defs_by_key[next(k for k in repo.assets_defs_by_key if k.to_user_string() == "endpoint_point")]
    keys = sorted(str(k) for k in point.partitions_def.get_partition_keys())
    assert keys == sorted(f"box|{label}" for label in ("c1", "c3", "c5", "c10", "c16", "c25", "c64", "offline"))
    assert {"endpoints_plan_job", "endpoint_point_job"} <= set(repo.job_names)
    # C_max left open: the point dimension is dynamic, filled by endpoints_plan from its probes
    config.write_text(config.read_text().replace("  highest_concurrency: 64\n", ""))
    repo = build_definitions(load_config(config)).get_repository_def()
    point = repo.assets_defs_by_key[next(k for k in repo.assets_defs_by_key if k.to_user_string() == "endpoint_point")]
    import dagster as dg

    dims = {d.name: d.partitions_def for d in point.partitions_def.partitions_defs}
    assert isinstance(dims["point"], dg.DynamicPartitionsDefinition)


def test_live_progress_reads_the_bar_then_the_event_log_without_counting_twice(tmp_path):
    from mlperf_assets.harness.endpoints_point import _EventCounter

    log, events = tmp_path / "client_performance.log", tmp_path / "events.jsonl"
    log.write_bytes(b"echo-model (Streaming: True):  85%|########5 | 17/20 [00:38<00:06,  2.26s/it]")
    counter = _EventCounter(events, log)
    counter.update()
    assert (counter.issued, counter.completed) == (17, 17)  # no event log yet: the client's own bar
    lines = [{"event_type": kind, "sample_uuid": str(i)} for i in range(20)
             for kind in ("sample.issued", "sample.recv_first", "sample.complete")]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    cut = text.index('"sample.issued"', len("".join(json.dumps(x) + "\n" for x in lines[:45])))  # inside a line
    events.write_text(text[:cut])
    counter.update()  # 15 issued, 14 complete in the log so far, a torn line not counted: the bar's 17 still leads
    assert (counter.issued, counter.completed) == (17, 17)
    with open(events, "a") as f:  # the client appends the rest
        f.write(text[cut:])
    counter.update()
    assert (counter.issued, counter.completed) == (20, 20)


@pytest.mark.slow
def test_highest_concurrency_found_from_probes_then_the_point_runs(stories_dir, tmp_path):
    """No highest_concurrency: endpoints_plan probes Offline, then 64, 128, ... with the real client against its echo
    server (token counts from a local tokenizer), picks C_max by the knee rule, and the curve's points follow; the
    probes stay out of the curve (their own folder, not in status, not in the store)."""
    from support.tiny_llama import build_tokenizer

    venv = ensure_client()
    tokenizer = tmp_path / "tokenizer"
    build_tokenizer(tokenizer)
    config = write_config(tmp_path, stories_dir, venv)
    text = config.read_text().replace("  highest_concurrency: 64\n", "  probe_s: 4\n")
    config.write_text(text.replace("model: echo-model}", f"model: echo-model, tokenizer: {tokenizer}}}"))
    env = cli_env(tmp_path)
    out = subprocess.run([CLI, "endpoints", "run", "--config", str(config), "--point", "c1", "--verbose"], env=env,
                         capture_output=True, text=True, timeout=3000)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    found = re.search(r"highest concurrency \(C_max\) (\d+): the first probed to reach 98% of Offline", log)
    assert found, log[-4000:]
    c_max = int(found.group(1))
    assert c_max > 32 and re.search(rf"^c{c_max}\s+{c_max}\s+mandatory_high", out.stdout, re.MULTILINE)
    probes = tmp_path / "results" / "artifacts" / "endpoints" / ".probes" / "box"
    assert {"probe-offline", "probe-c64"} <= {p.name for p in probes.iterdir()}
    status = subprocess.run([CLI, "endpoints", "status", "--config", str(config)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert "probe" not in status.stdout and "box/c1: completed" in status.stdout
    import duckdb

    with duckdb.connect(str(tmp_path / "results" / "mlperf.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT label, system_tps FROM endpoint_points").fetchall()
    assert [r[0] for r in rows] == ["c1"] and rows[0][1] > 0  # tokens counted with the local tokenizer


@pytest.mark.slow
def test_ctrl_c_cancels_the_point_on_its_node(stories_dir, tmp_path):
    venv = ensure_client()
    config = write_config(tmp_path, stories_dir, venv, passes=50)
    results = tmp_path / "results"
    log_file = tmp_path / "run.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen([CLI, "endpoints", "run", "--config", str(config), "--point", "c3"],
                                env=cli_env(tmp_path), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    handle = None
    deadline = time.monotonic() + 300
    while handle is None or not (Path(handle["run_dir"]) / "client.yaml").exists():
        assert proc.poll() is None, log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, log_file.read_text()[-3000:]
        time.sleep(0.2)
        handle = active_handle(results, "c3")
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=120) == 130, log_file.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir = Path(handle["run_dir"])
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["exit_status"] == "interrupted", manifest
    assert int((run_dir / "exit_code").read_text()) in (130, 143, -2, -15)
    deadline = time.monotonic() + 30
    while (left := processes_in(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left  # the point runner, the client and its workers, the echo server: all gone
    assert not (results / "artifacts" / "endpoints" / "box" / "c3").exists()  # nothing collected
    assert "interrupted" in log_file.read_text()
