"""A full disk where the SSH runner writes (finding F8): the node's workdir while uploading the dataset or writing
the run folder, and the orchestrator's artifact folder while collecting.

Real parts: the private OpenSSH server of tests/support/sshd.py (the "node" is this machine, reached over SSH on 127.0.0.1),
the real harness and dataset, and small tmpfs mounts as the full disks (tests that need one skip unless they run as
root). Before the fix, the upload's ``size mismatch in put!`` was taken for a dropped link: retried once, reported as
"connection lost while preparing the run folder", with two partial ``.cnndm-...tmp`` files left on the node.
"""

from __future__ import annotations

import errno
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.run_folder import SUCCEEDED
from resources.runners.base import RunUnreachable
from resources.runners.remote_shell import parse_free_space, render_free_space_command
from resources.runners.ssh import (
    ConnectionLostError,
    DiskFullError,
    SSHRunner,
    _is_connection_error,
    _is_write_refusal,
)

pytestmark = pytest.mark.timeout(300)

VENV_PYTHON = sys.executable  # the "node's" python: this venv has the harness


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, stories_dir: Path) -> Path:
    """The real stories prepared by the harness (byte tokenizer): about 550 KB, larger than the small disks below."""
    out = tmp_path_factory.mktemp("data") / "cnndm.json"
    subprocess.run(
        [VENV_PYTHON, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "stories",
         "--path", str(stories_dir), "--out", str(out), "--benchmark", "llama3.1-8b", "--tokenizer", "byte"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert out.stat().st_size > 400 * 1024
    return out


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``tmpfs(name, size)``: a folder that is a tmpfs of ``size`` (e.g. ``"300k"``); unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        folder = tmp_path / name
        folder.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
        if out.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def make_runner(sshd, workdir: Path, **overrides) -> SSHRunner:
    fields = dict(
        node="sshnode", host="127.0.0.1", port=sshd.port, user=sshd.user, key_file=str(sshd.client_key),
        known_hosts=str(sshd.known_hosts), workdir=str(workdir), python=VENV_PYTHON, poll_interval_s=0.2,
        connect_timeout_s=5, command_timeout_s=30, keepalive_s=2, reconnect_timeout_s=60, reconnect_backoff_max_s=1,
    )  # fmt: skip
    fields.update(overrides)
    return SSHRunner(**fields)


def make_spec(dataset: Path, run_id: str) -> RunSpec:
    return RunSpec(run_id=run_id, node="sshnode", scenario="Offline", mode="performance", benchmark="llama3.1-8b",
                   backend="extractive", dataset_path=str(dataset), progress_interval_s=0.2,
                   settings={"min_duration_ms": 300, "min_query_count": 20})  # fmt: skip


def files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def logins(sshd) -> int:
    """Successful SSH logins so far (each connection the runner opens, a reconnect included)."""
    return sshd.log.read_text(errors="replace").count("Accepted publickey")


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system is full."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


SIZE = r"[0-9.]+ (bytes|KiB|MiB)"


def test_write_refusals_are_not_connection_errors():
    """How paramiko reports a full disk, as the runner classifies it: never a lost link (which is retried and
    reported as "connection lost"); the real link errors still are."""
    full = [
        OSError("size mismatch in put!  0 != 561189"),  # what put raised in the finding
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError("No space left on device"),  # an SFTP v5+ server's text
    ]
    for exc in full:
        assert _is_write_refusal(exc) and not _is_connection_error(exc), exc
    # SSH_FX_FAILURE, OpenSSH's sftp-server answer to ENOSPC: a refusal when a write gets it (the runner then asks
    # df whether the disk is full); on a read (a /proc file of a process that just ended) it stays transient
    assert _is_write_refusal(OSError("Failure")) and _is_connection_error(OSError("Failure"))
    links = [ConnectionResetError("reset"), EOFError(), socket.timeout("timed out"), OSError("Socket is closed"),
             paramiko.SSHException("Server connection dropped: ")]  # fmt: skip
    for exc in links:
        assert _is_connection_error(exc) and not _is_write_refusal(exc), exc
    assert parse_free_space("tmpfs 300 300 0 100% /mnt\n") == 0
    assert parse_free_space("Filesystem 1024-blocks Used Available Capacity Mounted on\n") is None
    free = subprocess.run(render_free_space_command("/"), shell=True, capture_output=True, text=True).stdout
    assert parse_free_space(free) is not None


def test_dataset_upload_to_a_full_node_disk(sshd, dataset, tmpfs):
    """The finding: the node's workdir is a 300 KiB disk; the ~550 KB dataset cannot fit."""
    workdir = tmpfs("node", "300k")
    runner = make_runner(sshd, workdir)
    before = logins(sshd)
    started = time.monotonic()
    with pytest.raises(DiskFullError) as info:
        runner.start(make_spec(dataset, "full-1"))
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "\n" not in message and not isinstance(info.value, (RunUnreachable, ConnectionLostError))
    assert re.fullmatch(
        rf"node sshnode: no space left on device in {re.escape(str(workdir))}/_datasets \(uploading the dataset "
        rf"cnndm\.json: {SIZE}, {SIZE} free\); free space there or set the node's workdir to a larger disk",
        message,
    ), message
    assert "connection lost" not in message
    assert logins(sshd) - before == 1, "retried as if the connection had dropped"
    assert files_below(workdir) == [], "partial uploads or run files left on the node"
    assert not (workdir / "full-1").exists()  # the unlaunched run folder is removed too
    runner.close()
    print(f"refused in {elapsed:.1f} s: {message}")


def test_run_files_on_a_full_node_disk_then_a_run_once_freed(sshd, dataset, tmpfs):
    """The dataset is on the node already; the disk fills up before the run folder is written. Nothing is left
    half-written, and once space is freed the same runner starts and completes the run."""
    workdir = tmpfs("node", "2m")
    runner = make_runner(sshd, workdir)
    runner.remote_workdir()
    datasets = workdir / "_datasets"
    datasets.mkdir()
    shutil.copy(dataset, datasets / dataset.name)  # the node's copy, as an earlier upload left it
    from resources.runners.remote_shell import sha256_file

    (datasets / f"{dataset.name}.sha256").write_text(f"{sha256_file(dataset)}  {dataset.name}\n")
    filler = fill(workdir)
    kept = files_below(workdir)

    with pytest.raises(DiskFullError) as info:
        runner.start(make_spec(dataset, "full-2"))
    message = str(info.value)
    run_dir = workdir / "full-2" / "performance"
    assert re.fullmatch(
        rf"node sshnode: no space left on device in {re.escape(str(run_dir))} \(writing run_spec\.json: {SIZE}, "
        rf"{SIZE} free\); free space there or set the node's workdir to a larger disk",
        message,
    ), message
    assert files_below(workdir) == kept  # no temp file, no run folder: only what was there before
    assert not (workdir / "full-2").exists()
    assert sha256_file(datasets / dataset.name) == sha256_file(dataset)  # the dataset is untouched

    filler.unlink()
    handle = runner.start(make_spec(dataset, "full-2"))
    assert runner.wait(handle).state == SUCCEEDED
    assert (run_dir / "mlperf_log_summary.txt").is_file()
    assert not list(workdir.rglob("*.tmp"))
    runner.close()


def test_collecting_into_a_full_orchestrator_disk(sshd, dataset, tmp_path, tmpfs):
    """Collecting onto a full artifact disk is one line at once (it was retried as a lost connection for the
    whole reconnect timeout), and leaves no half-copied folder."""
    runner = make_runner(sshd, tmp_path / "node", reconnect_timeout_s=120)
    handle = runner.start(make_spec(dataset, "full-3"))
    assert runner.wait(handle).state == SUCCEEDED
    artifacts = tmpfs("artifacts", "16k")
    dest = artifacts / "sshnode" / "Offline" / "full-3" / "performance"
    started = time.monotonic()
    with pytest.raises(DiskFullError) as info:
        runner.collect(handle, dest)
    assert time.monotonic() - started < 20
    message = str(info.value)
    assert re.fullmatch(
        rf"node sshnode: no space left on device in {re.escape(str(dest.parent))} on the orchestrator, collecting "
        rf"{re.escape(handle.run_dir)} \(\S+: {SIZE}\); nothing half-copied was kept",
        message,
    ), message
    assert files_below(artifacts) == [] and not dest.exists()
    assert Path(handle.run_dir, "mlperf_log_summary.txt").is_file()  # the node's run folder is still there
    runner.close()
