"""SSHRunner against a real OpenSSH server on 127.0.0.1 (tests/support/sshd.py) running the real harness.

"Nodes" are the same sshd with different workdirs; the harness is this project's, run by the venv's python
through SSH, on the real CNN/DailyMail stories prepared in a temporary folder. Faults are real too: the sshd
is killed mid-run (every connection drops) and started again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import live_supervisors

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.run_folder import CANCELLED, RUNNING, SUCCEEDED
from resources.runners.base import wrapped_argv
from resources.runners.ssh import (
    ContainerSettings,
    HarnessNotInstalledError,
    SSHRunner,
    parse_status_output,
    render_container_argv,
    render_launch_command,
    version_compatible,
)
from resources.runners.remote_shell import StatusCutShort, render_status_command
from resources.runners.ssh_connection import HostKeyError, NodeUnreachableError, SSHAuthError
from support.sshd import PrivateSSHD, free_port, keygen

pytestmark = pytest.mark.timeout(300)

PASSPHRASE_ENV = "MLPERF_TEST_SSH_PASSPHRASE"
SSH_KEY_PASSPHRASE = "correct horse"  # the client key of the `sshd` fixture (conftest.py) is encrypted with it
VENV_PYTHON = sys.executable  # the remote python: this venv has the harness installed
CLI = str(Path(sys.executable).parent / "mlperf-dagster")  # the installed console script


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, SSH_KEY_PASSPHRASE)


@pytest.fixture(autouse=True)
def _sshd_up(request: pytest.FixtureRequest) -> None:
    """A test that stopped the server leaves it running for the next one."""
    yield
    if "sshd" in request.fixturenames:
        server = request.getfixturevalue("sshd")
        if not server.running:
            server.start()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, stories_dir: Path) -> Path:
    """The real stories, prepared by the harness's own prepare-dataset (byte tokenizer)."""
    out = tmp_path_factory.mktemp("data") / "cnn_stories.json"
    subprocess.run(
        [VENV_PYTHON, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "stories",
         "--path", str(stories_dir), "--out", str(out), "--benchmark", "llama3.1-8b", "--tokenizer", "byte"],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def make_runner(sshd: PrivateSSHD, workdir: Path, **overrides) -> SSHRunner:
    fields = dict(
        node="node-a",
        host="127.0.0.1",
        port=sshd.port,
        user=sshd.user,
        key_file=str(sshd.client_key),
        key_passphrase_env=PASSPHRASE_ENV,
        known_hosts=str(sshd.known_hosts),
        workdir=str(workdir),
        python=VENV_PYTHON,
        poll_interval_s=0.2,
        connect_timeout_s=5,
        command_timeout_s=30,
        keepalive_s=2,
        reconnect_timeout_s=60,
        reconnect_backoff_max_s=1,
        cancel_grace_s=3,
    )
    fields.update(overrides)
    return SSHRunner(**fields)


def make_spec(dataset: Path, run_id: str, node: str = "node-a", scenario: str = "Offline", **kw) -> RunSpec:
    settings = kw.pop("settings", {"min_duration_ms": 300, "min_query_count": 20})
    return RunSpec(
        run_id=run_id,
        node=node,
        scenario=scenario,
        mode=kw.pop("mode", "performance"),
        benchmark="llama3.1-8b",
        backend=kw.pop("backend", "extractive"),
        dataset_path=str(dataset),
        settings=settings,
        progress_interval_s=0.2,
        **kw,
    )


SLOW_SERVER = {"target_qps": 20, "min_duration_ms": 5000, "min_query_count": 1}  # ~5 s of real LoadGen time


def harness_processes(run_dir: str) -> list[int]:
    """Live supervisor processes for ``run_dir`` on this machine (the "remote" node is this machine)."""
    return [pid for pid, argv in live_supervisors()
            if run_dir.encode() in argv and b"mlperf_assets.harness" in argv]


def wait_until(predicate, timeout_s: float = 30, step: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def summary_fields(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if " : " in line:
            key, _, value = line.partition(" : ")
            out[key.strip()] = value.strip()
    return out


# ------------------------------------------------------------------------------------------ happy paths
@pytest.mark.slow
def test_two_nodes_run_concurrently_and_are_collected(sshd, dataset, tmp_path):
    a = make_runner(sshd, tmp_path / "node-a", node="node-a")
    b = make_runner(sshd, tmp_path / "node-b", node="node-b")
    spec_a = make_spec(dataset, "fleet-a", node="node-a", scenario="Offline")
    spec_b = make_spec(dataset, "fleet-b", node="node-b", scenario="Server", backend="replay",
                       settings={"target_qps": 50, "min_duration_ms": 1000, "min_query_count": 20})  # fmt: skip
    ha, hb = a.start(spec_a), b.start(spec_b)
    assert ha.run_dir == str(tmp_path / "node-a" / "fleet-a" / "performance")
    assert hb.run_dir == str(tmp_path / "node-b" / "fleet-b" / "performance")
    seen: list[str] = []
    pa = a.wait(ha, lambda p: seen.append(p.state))
    pb = b.wait(hb)
    assert (pa.state, pb.state) == (SUCCEEDED, SUCCEEDED), (a.log_tail(ha), b.log_tail(hb))
    assert pa.final and pa.completed > 0 and pb.completed >= 20
    for runner, handle, node, scenario in ((a, ha, "node-a", "Offline"), (b, hb, "node-b", "Server")):
        dest = runner.collect(handle, tmp_path / "artifacts" / node / scenario / handle.run_id / "performance")
        manifest = json.loads((dest / "run_manifest.json").read_text())
        assert manifest["node"] == node and manifest["scenario"] == scenario
        assert manifest["exit_status"] == "completed"
        assert summary_fields(dest / "mlperf_log_summary.txt")["Scenario"] == scenario
        assert (dest / "exit_code").read_text().strip() == "0"
        assert json.loads((dest / "progress.jsonl").read_text().splitlines()[-1])["final"] is True
        # the collected folder is byte-identical to the node's
        remote = Path(handle.run_dir)
        assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in remote.iterdir())
        for f in remote.iterdir():
            assert (dest / f.name).read_bytes() == f.read_bytes(), f.name
        assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    # the dataset went to each node's workdir once, with its checksum beside it
    for node in ("node-a", "node-b"):
        copy = tmp_path / node / "_datasets" / dataset.name
        assert copy.read_bytes() == dataset.read_bytes()
        import hashlib

        assert (tmp_path / node / "_datasets" / f"{dataset.name}.sha256").read_text().split()[0] == hashlib.sha256(
            dataset.read_bytes()
        ).hexdigest()
    a.close(), b.close()


@pytest.mark.slow
def test_dataset_uploaded_only_when_checksum_differs(sshd, dataset, tmp_path):
    runner = make_runner(sshd, tmp_path / "wd")
    h1 = runner.start(make_spec(dataset, "up-1"))
    assert runner.wait(h1).state == SUCCEEDED
    copy = tmp_path / "wd" / "_datasets" / dataset.name
    inode = copy.stat().st_ino
    h2 = runner.start(make_spec(dataset, "up-2"))
    assert runner.wait(h2).state == SUCCEEDED
    assert copy.stat().st_ino == inode  # same checksum: not uploaded again

    changed = tmp_path / "other" / dataset.name  # same file name, different content (fewer samples)
    changed.parent.mkdir()
    data = json.loads(dataset.read_text())
    data = data[:10]  # a slice of a prepared file is a prepared file
    changed.write_text(json.dumps(data))
    h3 = runner.start(make_spec(changed, "up-3"))
    assert runner.wait(h3).state == SUCCEEDED
    assert copy.stat().st_ino != inode and copy.read_bytes() == changed.read_bytes()
    manifest = json.loads((Path(h3.run_dir) / "run_manifest.json").read_text())
    assert manifest["dataset"]["samples"] == 10
    runner.close()


# ------------------------------------------------------------------------------------------------ faults
@pytest.mark.slow
def test_run_survives_sshd_stop_and_everything_is_collected(sshd, dataset, tmp_path):
    runner = make_runner(sshd, tmp_path / "wd")
    handle = runner.start(make_spec(dataset, "drop-1", scenario="Server", backend="replay", settings=SLOW_SERVER))
    wait_until(lambda: runner.poll(handle).completed > 0, timeout_s=30)

    sshd.stop()  # kills the listener and every connection: the harness must not notice
    outage_messages = []
    t_down = time.monotonic()
    while time.monotonic() - t_down < 2.0:
        progress = runner.poll(handle)
        assert progress.state == RUNNING
        if progress.message:
            outage_messages.append(progress.message)
        time.sleep(0.2)
    assert outage_messages and "connection lost" in outage_messages[-1]
    assert harness_processes(handle.run_dir), "the harness died with the connection"
    sshd.start()

    final = runner.wait(handle)
    assert final.state == SUCCEEDED and final.message is None, runner.log_tail(handle)
    dest = runner.collect(handle, tmp_path / "artifacts" / "drop-1")
    remote = Path(handle.run_dir)
    expected = {"mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json", "user.conf",
                "progress.jsonl", "samples.jsonl", "run_manifest.json", "harness.log", "runner.log", "exit_code"}  # fmt: skip
    assert expected <= {p.name for p in dest.iterdir()}
    for f in remote.iterdir():
        assert (dest / f.name).read_bytes() == f.read_bytes(), f.name
    samples = (dest / "samples.jsonl").read_text().splitlines()
    assert len(samples) == json.loads((dest / "progress.jsonl").read_text().splitlines()[-1])["completed"]
    runner.close()


@pytest.mark.slow
def test_new_orchestrator_reattaches_instead_of_starting_a_duplicate(sshd, dataset, tmp_path):
    spec = make_spec(dataset, "reattach-1", scenario="Server", backend="replay", settings=SLOW_SERVER)
    first = make_runner(sshd, tmp_path / "wd")
    h1 = first.start(spec)
    wait_until(lambda: first.poll(h1).completed > 0)
    first.close()  # the orchestrator dies; the harness does not

    second = make_runner(sshd, tmp_path / "wd")  # a new process would build a new runner from the config
    h2 = second.start(spec)
    assert h2.extra.get("reattached") is True and h2.pid == h1.pid
    assert harness_processes(h2.run_dir) == [h1.pid]  # still exactly one harness
    assert second.wait(h2).state == SUCCEEDED
    exit_stat = (Path(h2.run_dir) / "exit_code").stat()

    third = make_runner(sshd, tmp_path / "wd")  # after the end: reports the finished run
    h3 = third.start(spec)
    assert h3.extra["reattached"] is True and h3.extra["state_at_reattach"] == SUCCEEDED
    assert third.poll(h3).state == SUCCEEDED
    assert (Path(h3.run_dir) / "exit_code").stat().st_mtime_ns == exit_stat.st_mtime_ns  # nothing re-ran
    assert harness_processes(h3.run_dir) == []
    dest = third.collect(h3, tmp_path / "artifacts")
    assert json.loads((dest / "run_manifest.json").read_text())["exit_status"] == "completed"

    other = make_spec(dataset, "reattach-1", scenario="Offline")  # same id, different run: refused
    with pytest.raises(Exception, match="already exists on the node with different scenario"):
        make_runner(sshd, tmp_path / "wd").start(other)
    for r in (second, third):
        r.close()


@pytest.mark.slow
def test_cancel_stops_the_remote_process_group(sshd, dataset, tmp_path):
    runner = make_runner(sshd, tmp_path / "wd")
    spec = make_spec(dataset, "cancel-1", scenario="Server", backend="replay",
                     settings={"target_qps": 20, "min_duration_ms": 60000, "min_query_count": 1})  # fmt: skip
    handle = runner.start(spec)
    wait_until(lambda: runner.poll(handle).completed > 0)
    # both ways of reading a run's state agree: SFTP + /proc (the default) and one shell command (the fallback)
    conn = runner.connection()
    via_sftp = runner._status(conn, handle.run_dir)
    runner._proc_over_sftp = False
    via_shell = runner._status(conn, handle.run_dir)
    assert (via_sftp.exists, via_sftp.launched, via_sftp.alive, via_sftp.exit_code_text) == (True, True, True, None)
    assert (via_shell.exists, via_shell.launched, via_shell.alive, via_shell.exit_code_text) == (True, True, True, None)
    assert runner.poll(handle).state == RUNNING
    t0 = time.monotonic()
    runner.cancel(handle)
    assert time.monotonic() - t0 < 15
    progress = runner.poll(handle)
    assert progress.state == CANCELLED
    assert harness_processes(handle.run_dir) == []
    assert (Path(handle.run_dir) / "cancel_requested").exists()
    runner.cancel(handle)  # a second cancel of a finished run is harmless
    gone = runner._status(conn, handle.run_dir + "-absent")
    assert not gone.exists
    runner._proc_over_sftp = None
    assert runner.poll(handle).state == CANCELLED
    runner.close()


@pytest.mark.slow
def test_monitor_shows_a_running_ssh_run(sshd, dataset, tmp_path):
    from mlperf_assets.cli import main

    workdir = tmp_path / "wd"
    config = tmp_path / "fleet.yaml"
    config.write_text(
        f"""
storage: {{artifact_root: {tmp_path}/artifacts, duckdb_path: {tmp_path}/db.duckdb}}
dataset: {{source: local, path: {dataset}}}
benchmark: {{backend: replay, checkpoint: null, scenarios: {{Server: {{target_qps: 20}}}}}}
nodes:
  - {{name: gpu-a, runner: ssh, host: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, key_file: {sshd.client_key},
     key_passphrase_env: {PASSPHRASE_ENV}, known_hosts: {sshd.known_hosts}, workdir: {workdir}, python: {VENV_PYTHON}}}
  - {{name: gpu-down, runner: ssh, host: 127.0.0.1, port: {free_port()}, user: {sshd.user}, key_file: {sshd.client_key},
     key_passphrase_env: {PASSPHRASE_ENV}, known_hosts: {sshd.known_hosts}, workdir: {workdir}, python: {VENV_PYTHON},
     connect_timeout_s: 2}}
"""
    )
    runner = make_runner(sshd, workdir, node="gpu-a")
    handle = runner.start(make_spec(dataset, "mon-1", node="gpu-a", scenario="Server", backend="replay", settings=SLOW_SERVER))
    wait_until(lambda: runner.poll(handle).completed > 0)
    out = subprocess.run(
        [CLI, "monitor", "--once", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("│")}
    assert "mon-1" in rows["gpu-a"] and "Server performance" in rows["gpu-a"] and "running" in rows["gpu-a"]
    assert re.search(r"[1-9]\d*/(\d+|\?)", rows["gpu-a"])  # samples done/total (Server: total not known)
    assert "unreachable" in rows["gpu-down"] and "connection refused" in out.stdout  # the reason may wrap
    assert runner.wait(handle).state == SUCCEEDED
    idle = subprocess.run(
        [CLI, "monitor", "--once", "--config", str(config), "--node", "gpu-a"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "idle" in idle.stdout and "mon-1" not in idle.stdout
    assert main(["monitor", "--once", "--config", str(config), "--node", "nope"]) == 2
    runner.close()


# ------------------------------------------------------------------------------------------- refusals
def _fingerprint_by_ssh_keygen(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def test_unknown_host_key_is_refused_with_the_fix(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")  # nothing known
    runner = make_runner(sshd, tmp_path / "wd", known_hosts=str(known))
    with pytest.raises(HostKeyError) as err:
        runner.check_harness()
    msg = str(err.value)
    assert f"[127.0.0.1]:{sshd.port}" in msg and "not in" in msg
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known}" in msg
    assert _fingerprint_by_ssh_keygen(Path(f"{sshd.host_key}.pub")) in msg
    assert known.read_text() == ""  # nothing was silently added


def test_changed_host_key_is_refused(sshd, tmp_path):
    impostor = keygen(tmp_path / "other_host_key")
    known = sshd.write_known_hosts(tmp_path / "known_hosts", host_key=impostor)  # the "old" key of this host
    runner = make_runner(sshd, tmp_path / "wd", known_hosts=str(known))
    with pytest.raises(HostKeyError) as err:
        runner.check_harness()
    msg = str(err.value)
    assert "CHANGED" in msg and f"[127.0.0.1]:{sshd.port}" in msg
    assert _fingerprint_by_ssh_keygen(Path(f"{impostor}.pub")) in msg  # what known_hosts has
    assert _fingerprint_by_ssh_keygen(Path(f"{sshd.host_key}.pub")) in msg  # what the server offered
    assert "ssh-keygen -R" in msg


def test_missing_known_hosts_file_is_refused(sshd, tmp_path):
    runner = make_runner(sshd, tmp_path / "wd", known_hosts=str(tmp_path / "absent"))
    with pytest.raises(HostKeyError, match="does not exist.*ssh-keyscan"):
        runner.check_harness()


def test_wrong_key_is_refused(sshd, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    runner = make_runner(sshd, tmp_path / "wd", key_file=str(stranger), key_passphrase_env=None)
    with pytest.raises(SSHAuthError) as err:
        runner.check_harness()
    assert "refused key" in str(err.value) and "authorized_keys" in str(err.value)
    assert _fingerprint_by_ssh_keygen(Path(f"{stranger}.pub")) in str(err.value)


def test_passphrase_comes_from_the_named_environment_variable(sshd, tmp_path, monkeypatch):
    runner = make_runner(sshd, tmp_path / "wd")
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(SSHAuthError, match=f"environment variable {PASSPHRASE_ENV} .*is not set"):
        runner.check_harness()
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(SSHAuthError, match="wrong passphrase") as err:
        runner.check_harness()
    assert "wrong" not in str(err.value).replace("wrong passphrase", "")  # the secret is never echoed
    no_env = make_runner(sshd, tmp_path / "wd", key_passphrase_env=None)
    with pytest.raises(SSHAuthError, match="encrypted; name the environment variable"):
        no_env.check_harness()
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    assert runner.check_harness()["ok"] is True


def test_unreachable_host_is_reported(sshd, tmp_path):
    closed = make_runner(sshd, tmp_path / "wd", port=free_port())
    t0 = time.monotonic()
    with pytest.raises(NodeUnreachableError, match=r"cannot reach .*127\.0\.0\.1:\d+: connection refused"):
        closed.check_harness()
    assert time.monotonic() - t0 < 5
    unknown = make_runner(sshd, tmp_path / "wd", host="no-such-node.invalid", port=22)
    with pytest.raises(NodeUnreachableError, match="no-such-node.invalid"):
        unknown.check_harness()


def test_python_without_the_harness_is_refused(sshd, tmp_path, dataset):
    bare = getattr(sys, "_base_executable", None) or "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import mlperf_assets"], capture_output=True, cwd=tmp_path)
    if probe.returncode == 0:
        pytest.skip(f"{bare} can import the harness here")
    runner = make_runner(sshd, tmp_path / "wd", python=bare)
    with pytest.raises(HarnessNotInstalledError) as err:
        runner.start(make_spec(dataset, "bare-1"))
    msg = str(err.value)
    assert "cannot import mlperf_assets.harness" in msg and "pip install" in msg and "setup-guide" in msg
    assert not (tmp_path / "wd" / "bare-1").exists()  # nothing was launched
    missing = make_runner(sshd, tmp_path / "wd", python="/nonexistent/bin/python")
    with pytest.raises(HarnessNotInstalledError, match="not found"):
        missing.check_harness()


def test_shell_metacharacters_in_config_values_are_not_executed(sshd, dataset, tmp_path, monkeypatch):
    canary = tmp_path / "CANARY"
    tag = f"CANARY-{os.getpid()}-{time.time_ns()}"  # relative: would land in the remote shell's cwd
    evil = f'wd $(touch {canary}1) ; touch {canary}2 `touch {canary}3` && touch {canary}4 \'"'
    evil_dataset = tmp_path / f"data;touch {tag}-5;$(touch {tag}-6).json"
    evil_dataset.write_bytes(dataset.read_bytes())
    monkeypatch.setenv("MLPERF_TEST_FORWARDED", f"x'; touch {canary}7; echo '$(touch {canary}8)")
    runner = make_runner(sshd, tmp_path / evil, forward_env=["MLPERF_TEST_FORWARDED"])
    handle = runner.start(make_spec(evil_dataset, "meta-1"))
    assert runner.wait(handle).state == SUCCEEDED, runner.log_tail(handle)
    assert Path(handle.run_dir) == tmp_path / evil / "meta-1" / "performance"  # the literal path was used
    assert (Path(handle.run_dir) / "mlperf_log_summary.txt").exists()
    assert (tmp_path / evil / "_datasets" / evil_dataset.name).exists()
    executed = [f"{canary}{i}" for i in range(1, 9) if Path(f"{canary}{i}").exists()]
    executed += [str(p) for p in [*tmp_path.rglob(f"{tag}*"), *Path.home().glob(f"{tag}*")] if p.name.startswith(tag)]
    assert not executed, f"a config value was executed by the remote shell: {executed}"
    assert not (Path(handle.run_dir) / ".forward.env").exists()  # the secret file is gone after launch
    runner.close()


def test_forwarded_environment_reaches_the_harness_but_not_the_command_line(sshd, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MLPERF_TEST_TOKEN", "s3cret-value")
    runner = make_runner(sshd, tmp_path / "wd", forward_env=["MLPERF_TEST_TOKEN"])
    spec = make_spec(dataset, "env-1", scenario="Server", backend="replay", settings=SLOW_SERVER)
    handle = runner.start(spec)
    wait_until(lambda: runner.poll(handle).completed > 0)
    pid = handle.pid  # the "node" is this machine: look at the supervisor process itself
    assert b"MLPERF_TEST_TOKEN=s3cret-value" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"s3cret-value" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not (Path(handle.run_dir) / ".forward.env").exists()  # read and deleted at launch
    runner.cancel(handle)
    assert "s3cret-value" not in "".join(p.read_text(errors="replace") for p in Path(handle.run_dir).iterdir())
    runner.close()


# --------------------------------------------------------------------------------------- pure renderers
def test_launch_command_keeps_every_argument_intact():
    argv = ["/opt/py env/bin/python", "-c", "print('a b'); x = \"$HOME\"", "--flag", "a;b|c&d`e`$(f)", "", "\n"]
    command = render_launch_command("/runs/r 1/performance", argv)
    tokens = shlex.split(command)
    # the argv follows `sh -c INNER sh` as separate, unaltered tokens
    start = tokens.index("sh", tokens.index("nohup") + 3)
    assert tokens[start + 1 : start + 1 + len(argv)] == argv
    assert tokens[tokens.index("cd") + 1] == "/runs/r 1/performance"
    # `cd ...; ... &` (not `&&`), so the command returns at once (platform facts)
    assert command.startswith("cd '/runs/r 1/performance' || exit 97; ")


def test_container_mode_renders_docker_and_podman_commands(dataset, tmp_path):
    spec = make_spec(dataset, "ctr-1", backend="vllm", engine_args={"dtype": "bfloat16"})
    runner = SSHRunner(node="gpu-1", host="10.0.0.2", workdir="/data/mlperf", python="python3", gpus=2,
                       container={"engine": "docker", "image": "registry/mlperf:0.1",
                                  "extra_args": ["-v", "/data/hf:/root/.cache/huggingface"]},
                       forward_env=["HF_TOKEN"])  # fmt: skip
    run_dir = "/data/mlperf/ctr-1/performance"
    argv = runner.launch_argv(spec, run_dir, "/data/mlperf/_datasets/cnn.json", "/data/mlperf/_datasets")
    assert argv[:2] == ["docker", "run"] and "--rm" in argv
    assert argv[argv.index("--gpus") + 1] == "2"
    assert f"{run_dir}:{run_dir}" in argv and "/data/mlperf/_datasets:/data/mlperf/_datasets:ro" in argv
    assert argv[argv.index("-e") + 1] == "HF_TOKEN"  # by name: the value never appears in the argv
    assert argv[argv.index("--name") + 1] == "mlperf-ctr-1-performance"
    image_at = argv.index("registry/mlperf:0.1")
    assert argv[image_at - 2 : image_at] == ["-v", "/data/hf:/root/.cache/huggingface"]
    inner = argv[image_at + 1 :]
    assert inner == wrapped_argv("python3", run_dir, spec.harness_argv("python3", run_dir, dataset_path="/data/mlperf/_datasets/cnn.json"))
    assert runner.harness_check_argv()[:4] == ["docker", "run", "--rm", "registry/mlperf:0.1"]

    podman = render_container_argv(ContainerSettings(engine="podman", image="img", gpus=2), run_dir=run_dir,
                                   datasets_dir="/d", inner_argv=["python3", "-V"])  # fmt: skip
    assert podman[0] == "podman" and "--gpus" not in podman
    assert [podman[i + 1] for i, a in enumerate(podman) if a == "--device"] == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    with pytest.raises(ValueError, match="docker or podman"):
        ContainerSettings(engine="lxc", image="img")


def test_version_compatibility_and_status_parsing():
    assert version_compatible("0.1.0", "0.1.7")
    assert not version_compatible("0.1.0", "0.2.0")
    assert not version_compatible("1.0.0", "")
    status = parse_status_output('@@mlperf-status 1 1 0 0 0\n{"completed": 3, "final": true}\n@@mlperf-status-end\n')
    assert status.exists and status.launched and not status.alive and status.exit_code_text == "0"
    assert status.progress().state == SUCCEEDED and status.progress().completed == 3
    assert parse_status_output("@@mlperf-status 1 1 1 - 0\n\n@@mlperf-status-end\n").progress().state == RUNNING
    with pytest.raises(ValueError):
        parse_status_output("bash: syntax error\n")
    # killed after its header (a container stopping under the exec): "exited 0" with no progress is not believed
    with pytest.raises(StatusCutShort):
        parse_status_output("@@mlperf-status 1 1 1 0 0\n")
    with pytest.raises(StatusCutShort):
        parse_status_output('@@mlperf-status 1 1 1 0 0\n{"completed": 3, "fin')


def test_status_command_output_parses_with_and_without_a_run_folder(tmp_path):
    """The real command in a real sh: the end line follows a progress tail that lacks a final newline."""
    run_dir = tmp_path / "r1" / "performance"
    missing = parse_status_output(subprocess.run(["sh", "-c", render_status_command(str(run_dir))],
                                                 capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert not missing.exists and missing.progress_text == ""
    run_dir.mkdir(parents=True)
    (run_dir / "exit_code").write_text("0\n")
    (run_dir / "progress.jsonl").write_text('{"completed": 1}\n{"completed": 7, "final": true}')  # no newline
    status = parse_status_output(subprocess.run(["sh", "-c", render_status_command(str(run_dir))],
                                                capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert status.exists and status.exit_code_text == "0"
    progress = status.progress()
    assert (progress.state, progress.completed, progress.final) == (SUCCEEDED, 7, True)


def test_from_node_config_reads_the_config_model(tmp_path):
    from mlperf_assets.config import parse_config

    text = """
nodes:
  - {name: jw2, runner: ssh, host: 10.0.0.2, port: 2222, user: mlperf, key_file: keys/id_ed25519,
     key_passphrase_env: JW2_PASSPHRASE, known_hosts: kh, workdir: /data/mlperf, python: /opt/venv/bin/python, gpus: 2,
     forward_env: [HF_TOKEN, WANDB_API_KEY], reconnect_timeout_s: 900, reconnect_backoff_max_s: 45, cancel_grace_s: 25,
     container: {image: registry/mlperf:0.1, engine: podman, extra_args: [--security-opt, label=disable]}}
  - {name: jw3, runner: ssh, host: 10.0.0.3}
benchmark: {backend: extractive, checkpoint: null, scenarios: {Offline: {}}}
dataset: {source: huggingface}
"""
    config = parse_config(text, tmp_path / "c.yaml")
    runner = SSHRunner(config.node("jw2"))
    assert (runner.node, runner.host, runner.port, runner.user) == ("jw2", "10.0.0.2", 2222, "mlperf")
    assert runner.key_file == str(tmp_path / "keys" / "id_ed25519") and runner.known_hosts == str(tmp_path / "kh")
    assert runner.key_passphrase_env == "JW2_PASSPHRASE" and runner.gpus == 2
    assert runner.forward_env == ["HF_TOKEN", "WANDB_API_KEY"]
    assert (runner.reconnect_timeout_s, runner.reconnect_backoff_max_s, runner.cancel_grace_s) == (900, 45, 25)
    plain = SSHRunner(config.node("jw3"))  # unset in the file: the documented defaults
    assert plain.forward_env == []
    assert (plain.reconnect_timeout_s, plain.reconnect_backoff_max_s, plain.cancel_grace_s) == (1800, 30, 10)
    assert runner.container == ContainerSettings(engine="podman", image="registry/mlperf:0.1", gpus=2,
                                                 extra_args=("--security-opt", "label=disable"))  # fmt: skip
    from resources.runners import build_runner

    assert isinstance(build_runner(config.node("jw2"), config), SSHRunner)


# ------------------------------------------------------------------------ the whole pipeline, two SSH nodes
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_ssh_nodes_through_mlperf_dagster_run_land_in_duckdb(sshd, stories_dir, tmp_path):
    """`mlperf-dagster run` on a config with two SSH nodes: every partition runs on its node over SSH, its
    run folders are collected, ingested into DuckDB with the node's name, and scored."""
    import duckdb

    results = tmp_path / "results"
    nodes = ""
    for name in ("gpu-a", "gpu-b"):
        nodes += (
            f"  - {{name: {name}, runner: ssh, host: 127.0.0.1, port: {sshd.port}, user: {sshd.user}, "
            f"key_file: {sshd.client_key}, key_passphrase_env: {PASSPHRASE_ENV}, known_hosts: {sshd.known_hosts}, "
            f"workdir: {tmp_path / name}, python: {VENV_PYTHON}}}\n"
        )
    config = tmp_path / "fleet.yaml"
    config.write_text(
        f"""
storage: {{artifact_root: {results}/artifacts, duckdb_path: {results}/mlperf.duckdb, report_dir: {results}/report}}
dataset: {{source: stories, path: {stories_dir}}}
benchmark:
  model: llama3.1-8b
  checkpoint: null
  backend: extractive
  progress_interval_s: 0.5
  scenarios:
    Offline: {{min_duration_ms: 300, min_query_count: 20}}
    Server: {{target_qps: 50, min_duration_ms: 500, min_query_count: 20}}
nodes:
{nodes}"""
    )
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    env.pop("MLPERF_DAGSTER_DATASET", None)
    (tmp_path / "dagster_home").mkdir()
    out = subprocess.run([CLI, "run", "--config", str(config), "--no-progress"], env=env, capture_output=True,
                         text=True, timeout=540)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    with duckdb.connect(str(results / "mlperf.duckdb"), read_only=True) as db:
        rows = db.execute("SELECT node, scenario, mode, source_path FROM run_summary ORDER BY 1, 2, 3").fetchall()
    assert [(n, s, m) for n, s, m, _ in rows] == [
        (node, scenario, mode)
        for node in ("gpu-a", "gpu-b")
        for scenario in ("Offline", "Server")
        for mode in ("accuracy", "performance")
    ]
    for node, scenario, mode, source_path in rows:
        collected = Path(source_path)
        assert collected.is_relative_to(results / "artifacts" / node / scenario)
        manifest = json.loads((collected / "run_manifest.json").read_text())
        assert manifest["node"] == node and manifest["mode"] == mode
        # it ran on the "node" through the SSH runner: its launch records the detached pid, and the run folder
        # in that node's workdir was collected and then removed (discard) by the pipeline
        assert (collected / "pid").read_text().strip().isdigit()
        assert json.loads((collected / "run_spec.json").read_text())["node"] == node
        assert (collected / "exit_code").read_text().strip() == "0"
        assert not (tmp_path / node / manifest["run_id"]).exists()
    for node in ("gpu-a", "gpu-b"):  # the dataset was uploaded once to each node
        assert len(list((tmp_path / node / "_datasets").glob("*.json"))) == 1


@pytest.mark.slow
def test_monitor_shows_a_running_local_run_and_eta(dataset, tmp_path):
    from mlperf_assets.commands.remote import MonitorRow, format_duration
    from mlperf_assets.config import load_config
    from resources.runners import build_runner

    config_file = tmp_path / "local.yaml"
    config_file.write_text(
        f"storage: {{artifact_root: {tmp_path}/artifacts}}\n"
        f"dataset: {{source: local, path: {dataset}}}\n"
        "benchmark: {backend: replay, checkpoint: null, scenarios: {Server: {target_qps: 20}}}\n"
        f"nodes: [{{name: box, runner: local, workdir: {tmp_path}/work}}]\n"
    )
    runner = build_runner(load_config(config_file, use_env_dataset=False).node("box"), None)
    handle = runner.start(make_spec(dataset, "loc-1", node="box", scenario="Server", backend="replay", settings=SLOW_SERVER))
    wait_until(lambda: runner.poll(handle).completed > 0)
    out = subprocess.run([CLI, "monitor", "--once", "--config", str(config_file)], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "MLPERF_DAGSTER_DATASET"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("│ box"))
    assert "loc-1" in row and "Server performance" in row and "running" in row
    assert runner.wait(handle).state == SUCCEEDED

    # ETA: remaining samples at the average rate so far; unknown without a total
    assert MonitorRow(node="n", run_id="r", completed=250, total=1000, elapsed_s=50).eta_s == pytest.approx(150)
    assert MonitorRow(node="n", run_id="r", completed=250, total=None, elapsed_s=50).eta_s is None
    assert (format_duration(150), format_duration(3725), format_duration(None)) == ("2:30", "1:02:05", "-")


# ------------------------------------------------------------------- typed errors, as the ledger reads them
@pytest.mark.slow
def test_outage_is_uncertain_and_a_removed_run_folder_is_gone(sshd, dataset, tmp_path):
    """What reattaching relies on: while the node cannot be reached, the runner's answer is marked stale (the run may
    be alive: keep its record); once the node answers that the folder is gone, that is RunGone (drop the record)."""
    import shutil

    from resources.runners.base import RunGone, RunUnreachable
    from resources.runners.ledger import observe

    runner = make_runner(sshd, tmp_path / "wd", reconnect_timeout_s=30)
    handle = runner.start(make_spec(dataset, "typed-1", scenario="Server", backend="replay", settings=SLOW_SERVER))
    wait_until(lambda: runner.poll(handle).completed > 0)
    sshd.stop()
    stale = runner.poll(handle)
    assert stale.stale and stale.state == RUNNING and "reconnecting" in stale.message
    seen = observe(runner, handle)
    assert seen.uncertain and seen.progress is not None and seen.problem is None
    down = make_runner(sshd, tmp_path / "wd", connect_timeout_s=2)  # a new orchestrator, while the node is down
    assert down.poll(handle).stale and observe(down, handle).uncertain
    with pytest.raises(RunUnreachable, match="connection refused"):  # asking it directly: unreachable, not gone
        down.check_harness()
    sshd.start()
    assert runner.wait(handle).state == SUCCEEDED
    fresh = runner.poll(handle)
    assert not fresh.stale and observe(runner, handle).uncertain is False

    shutil.rmtree(handle.run_dir)
    with pytest.raises(RunGone, match="no longer exists on the node"):
        runner.poll(handle)
    gone = observe(runner, handle)
    assert gone.problem.startswith("is gone (") and not gone.uncertain
    runner.close()
