"""``LocalRunner``: the harness as a subprocess of the orchestrator's machine.

The harness runs under the exit-code supervisor (``base.wrapped_argv``) in its own session and process
group, in ``<workdir>/<run_id>/<mode>``; ``cancel`` signals the whole group. The exit code lands in a file,
so a run started by an orchestrator that has since died is still judged correctly by a new one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from .base import (
    CANCEL_MARKER_FILE,
    EXIT_CODE_FILE,
    PROGRESS_FILE,
    RUNNER_LOG_FILE,
    SPEC_FILE,
    BenchmarkRunner,
    RunHandle,
    RunnerError,
    RunProgress,
    RunSpec,
    progress_from_texts,
    wrapped_argv,
)

_TAIL_BYTES = 64 * 1024


def _read_tail(path: Path, limit: int = _TAIL_BYTES) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (zombies linger here for seconds: platform facts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class LocalRunner(BenchmarkRunner):
    """Runs the harness on this machine.

    ``workdir``: where run folders are created (absolute, or relative to the current directory);
    ``python``: interpreter with the harness installed (default: the orchestrator's own);
    ``cancel_grace_s``: how long cancel waits after SIGINT before SIGTERM, then SIGKILL;
    ``env``: extra environment variables for the harness (names and values; no secrets in config files).
    """

    workdir: str
    python: str = ""
    cancel_grace_s: float = 10.0
    env: dict[str, str] = Field(default_factory=dict)

    _procs: dict[int, subprocess.Popen] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_node_config(cls, node: Any, config: Any) -> "LocalRunner":
        """From a ``config.LocalNode`` (``workdir`` optional: default ``<artifact_root>/../work``)."""
        workdir = node.workdir or str(Path(config.storage.artifact_root).parent / "work")
        # Polling a local file is cheap: a short interval keeps the end-of-run latency low.
        return cls(node=node.name, workdir=str(workdir), python=node.python or "", poll_interval_s=0.25)

    def _python(self) -> str:
        return self.python or sys.executable

    def start(self, spec: RunSpec) -> RunHandle:
        run_dir = (Path(self.workdir) / self.run_dir_name(spec)).resolve()
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunnerError(f"node {self.node}: run folder {run_dir} already exists; run ids must be unique")
        dataset = Path(spec.dataset_path).resolve()
        if not dataset.is_file():
            raise RunnerError(f"node {self.node}: prepared dataset {dataset} does not exist")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SPEC_FILE).write_text(spec.to_json())
        python = self._python()
        argv = wrapped_argv(python, str(run_dir), spec.harness_argv(python, str(run_dir), dataset_path=str(dataset)))
        env = {**os.environ, **self.env}
        try:
            proc = subprocess.Popen(
                argv,
                cwd=run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # own process group: cancel() signals the harness and its children
            )
        except OSError as exc:
            raise RunnerError(f"node {self.node}: cannot start {python}: {exc}") from exc
        self._procs[proc.pid] = proc
        return RunHandle(
            run_id=spec.run_id,
            node=self.node,
            run_dir=str(run_dir),
            scenario=spec.scenario,
            mode=spec.mode,
            pid=proc.pid,
        )

    def _alive(self, handle: RunHandle) -> bool:
        if handle.pid is None:
            return False
        proc = self._procs.get(handle.pid)
        if proc is not None:
            return proc.poll() is None
        return _pid_alive(handle.pid)

    def poll(self, handle: RunHandle) -> RunProgress:
        run_dir = Path(handle.run_dir)
        alive = self._alive(handle)  # before reading exit_code: the supervisor writes it before exiting
        return progress_from_texts(
            _read_tail(run_dir / PROGRESS_FILE),
            _read_tail(run_dir / EXIT_CODE_FILE),
            alive=alive,
            cancel_requested=(run_dir / CANCEL_MARKER_FILE).exists(),
        )

    def cancel(self, handle: RunHandle) -> None:
        run_dir = Path(handle.run_dir)
        if run_dir.is_dir() and not (run_dir / EXIT_CODE_FILE).exists():
            (run_dir / CANCEL_MARKER_FILE).write_text(f"{time.time()}\n")
        if handle.pid is None:
            return
        for sig, grace in ((signal.SIGINT, self.cancel_grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            if not self._alive(handle):
                break
            try:
                os.killpg(handle.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._alive(handle):
                time.sleep(0.05)
        proc = self._procs.pop(handle.pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass

    def collect(self, handle: RunHandle, dest_dir: str | Path) -> Path:
        src = Path(handle.run_dir)
        dest = Path(dest_dir).resolve()
        if not src.is_dir():
            raise RunnerError(f"node {self.node}: run folder {src} is missing; nothing to collect")
        if src.resolve() == dest:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    def log_tail(self, handle: RunHandle, lines: int = 20) -> str:
        text = _read_tail(Path(handle.run_dir) / RUNNER_LOG_FILE) or ""
        return "\n".join(text.splitlines()[-lines:])

    def discard(self, handle: RunHandle) -> None:
        self._procs.pop(handle.pid or -1, None)
        run_dir = Path(handle.run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        try:
            run_dir.parent.rmdir()  # <workdir>/<run_id>, once both modes are gone
        except OSError:
            pass
