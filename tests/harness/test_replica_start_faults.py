"""A data-parallel replica killed from outside while it starts (issue 24, G24): the run fails with exit code 1 (a
failure; 2 is kept for bad input) and says the process was killed, naming the replica; no process is left behind.
Real harness, real spawned worker processes (the ``sim`` backend)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.simruns import SIM_ENGINE, engine_flags

PROJECT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:  # a replica worker (not the resource tracker)
            out.append(int(entry.name))
    return out


def test_a_replica_killed_while_starting_is_a_failure_exit_1_not_bad_input(sim_dataset, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Offline", "--mode", "performance",
            "--backend", "sim", "--dataset", str(sim_dataset), "--output-dir", str(out), "--data-parallel-size", "3",
            *engine_flags(SIM_ENGINE)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            workers = _children(proc.pid)
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)  # as soon as it exists: long before it is ready
            time.sleep(0.005)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no replica worker was seen"
    assert proc.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert f"(pid {killed}, " in errors[0] and "failed to start: the process was killed by SIGKILL while starting" in errors[0]
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["exit_status"] == "failed"
    time.sleep(0.5)
    assert not _children(proc.pid)
