"""Orchestration overhead of the SSH runner, and how fast it notices and recovers from a dropped connection.

A private OpenSSH server on 127.0.0.1 (tests/support/sshd.py; needs `apt-get install openssh-server`) plays the node, so
network latency is ~0 and the figures are the runner's own cost: session set-up, the harness check, the dataset
upload, detached launch, polling, SFTP collection. Baselines measured in the same run: the harness called directly
(`python -m mlperf_assets.harness run ...`, no runner), and the LocalRunner.

    .venv/bin/python benchmarks/ssh_runner.py            # 5 repetitions
    .venv/bin/python benchmarks/ssh_runner.py --quick    # 2 repetitions
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from mlperf_assets.harness.args import RunSpec  # noqa: E402
from resources.runners.local import LocalRunner  # noqa: E402
from resources.runners.ssh import SSHRunner  # noqa: E402
from support.sshd import PrivateSSHD, keygen, sshd_available  # noqa: E402

STORIES = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail" / "stories"
POLL_S = 0.5
SETTINGS = {"min_duration_ms": 300, "min_query_count": 20}


def prepare_dataset(out: Path) -> Path:
    if STORIES.is_dir():
        subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "stories",
                        "--path", str(STORIES), "--out", str(out), "--tokenizer", "byte"], check=True,
                       capture_output=True)  # fmt: skip
        return out
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    from _common import write_synthetic_dataset

    return write_synthetic_dataset(out, 20)


def spec(dataset: Path, run_id: str, **kw) -> RunSpec:
    return RunSpec(run_id=run_id, node="bench", scenario=kw.pop("scenario", "Offline"), mode="performance",
                   benchmark="llama3.1-8b", backend="replay", dataset_path=str(dataset),
                   settings=kw.pop("settings", SETTINGS), progress_interval_s=0.2, **kw)  # fmt: skip


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    args = parser.parse_args()
    reps = 2 if args.quick else 5
    reason = sshd_available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    dataset = prepare_dataset(tmp / "dataset.json")
    server = PrivateSSHD(tmp / "sshd")
    key = keygen(tmp / "id_ed25519")
    server.authorize(Path(f"{key}.pub"))
    known = server.write_known_hosts(tmp / "known_hosts")
    server.start()

    def ssh_runner(workdir: str, **kw) -> SSHRunner:
        kw.setdefault("poll_interval_s", POLL_S)
        return SSHRunner(node="bench", host="127.0.0.1", port=server.port, user=server.user, key_file=str(key),
                         known_hosts=str(known), workdir=workdir, python=sys.executable, keepalive_s=1,
                         reconnect_backoff_max_s=1, **kw)  # fmt: skip

    try:
        # --- baseline 1: the harness called directly
        direct = []
        for i in range(reps):
            s = spec(dataset, f"direct-{i}")
            out = tmp / "direct" / s.run_id
            direct.append(timed(lambda: subprocess.run(s.harness_argv(sys.executable, str(out)), check=True,
                                                       capture_output=True)))  # fmt: skip

        # --- baseline 2: the LocalRunner (same interface, no network)
        local = LocalRunner(node="bench", workdir=str(tmp / "local"), poll_interval_s=POLL_S)
        local_t = []
        for i in range(reps):
            s = spec(dataset, f"local-{i}")

            def run_local() -> None:
                h = local.start(s)
                assert local.wait(h).state == "succeeded"
                local.collect(h, tmp / "collected-local" / s.run_id)

            local_t.append(timed(run_local))

        # --- the SSH runner: a cold first run (connect, harness check, dataset upload), then warm runs
        runner = ssh_runner(str(tmp / "node"))
        ssh_t = []
        for i in range(reps + 1):
            s = spec(dataset, f"ssh-{i}")

            def run_ssh() -> None:
                h = runner.start(s)
                assert runner.wait(h).state == "succeeded", runner.log_tail(h)
                runner.collect(h, tmp / "collected-ssh" / s.run_id)

            ssh_t.append(timed(run_ssh))
        cold, warm = ssh_t[0], ssh_t[1:]

        # --- cost of one poll: SFTP + /proc (default) versus one shell command per poll (fallback)
        h = runner.start(spec(dataset, "poll-probe"))
        runner.wait(h)
        conn = runner.connection()
        sftp_poll = statistics.median(timed(lambda: runner._status(conn, h.run_dir)) for _ in range(20))
        runner._proc_over_sftp = False
        shell_poll = statistics.median(timed(lambda: runner._status(conn, h.run_dir)) for _ in range(5))
        runner._proc_over_sftp = None

        # --- a dropped connection mid-run: detection and recovery
        slow = spec(dataset, "drop", scenario="Server", settings={"target_qps": 20, "min_duration_ms": 8000,
                                                                   "min_query_count": 1})  # fmt: skip
        fast = ssh_runner(str(tmp / "node"), poll_interval_s=0.1)
        h = fast.start(slow)
        while fast.poll(h).completed == 0:
            time.sleep(0.1)
        t_down = time.perf_counter()
        server.stop()
        while not (fast.poll(h).message or "").startswith("connection lost"):
            time.sleep(0.05)
        detect = time.perf_counter() - t_down
        time.sleep(2.0)
        t_up = time.perf_counter()
        server.start()
        while fast.poll(h).message:
            time.sleep(0.05)
        recover = time.perf_counter() - t_up
        final = fast.wait(h)
        dest = fast.collect(h, tmp / "collected-drop")
        collected = sorted(p.name for p in dest.iterdir())
    finally:
        server.stop()

    med_direct, med_local, med_warm = statistics.median(direct), statistics.median(local_t), statistics.median(warm)
    print(f"SSH runner on 127.0.0.1 (replay backend, Offline, 20 samples; poll interval {POLL_S} s; {reps} repetitions, medians)")
    print(f"  harness called directly        {med_direct:6.2f} s   1.00x")
    print(f"  LocalRunner start+wait+collect {med_local:6.2f} s   {med_local / med_direct:4.2f}x")
    print(f"  SSHRunner, warm                {med_warm:6.2f} s   {med_warm / med_direct:4.2f}x   "
          f"(+{med_warm - med_direct:.2f} s per run over direct, +{med_warm - med_local:.2f} s over local)")  # fmt: skip
    print(f"  SSHRunner, first run (connect, harness check, dataset upload) {cold:6.2f} s   {cold / med_direct:4.2f}x")
    print(f"  one poll: SFTP+/proc {sftp_poll * 1000:7.2f} ms   shell command {shell_poll * 1000:7.2f} ms   "
          f"({shell_poll / sftp_poll:,.0f}x)")  # fmt: skip
    print("dropped connection (sshd killed mid-run, back after 2 s; keepalive 1 s, backoff max 1 s, poll 0.1 s)")
    print(f"  detected after {detect:5.2f} s   reconnected {recover:5.2f} s after sshd was back   run {final.state}, "
          f"{len(collected)} files collected")  # fmt: skip
    return 0 if final.state == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
