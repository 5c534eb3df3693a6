"""``LocalRunner``: the harness as a subprocess of the orchestrator's machine.

The harness runs under the exit-code supervisor (``base.wrapped_argv``) in its own session and process
group, in ``<workdir>/<run_id>/<mode>``; ``cancel`` signals the whole group. The exit code lands in a file,
so a run started by an orchestrator that has since died is still judged correctly by a new one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlperf_assets.config import LocalNode
from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.files import replacing_folder
from mlperf_assets.harness.host_facts import this_machine
from mlperf_assets.harness.run_folder import (
    CANCEL_REQUESTED,
    EXIT_CODE,
    PROGRESS,
    RUN_SPEC,
    RUNNER_LOG,
    RunProgress,
    progress_from_texts,
)

from .base import BenchmarkRunner, RunHandle, RunnerError, wrapped_argv

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


def _pid_alive(pid: int, run_dir: str) -> bool:
    """True if ``pid`` exists, is not a zombie (zombies linger here for seconds: platform facts) and is this run's
    supervisor (``run_dir`` is one of its arguments), not another process that got the pid after a restart."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return run_dir.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return True  # no /proc: nothing better to go on


def _supervisor_pid(run_dir: str) -> int | None:
    """The pid of the live supervisor running in ``run_dir`` (its argv names the folder), from /proc; None if none."""
    wanted = str(Path(run_dir).resolve()).encode()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 3 and argv[1] == b"-c" and argv[3] == wanted and _pid_alive(int(entry.name), run_dir):
            return int(entry.name)
    return None


class LocalRunner(BenchmarkRunner):
    """Runs the harness on this machine, configured by a ``config.LocalNode``.

    ``workdir``: where run folders are created (the config sets ``<artifact_root>/../work`` when absent);
    ``python``: interpreter with the harness installed (default: the orchestrator's own).
    Options: ``cancel_grace_s`` (how long cancel waits after SIGINT before SIGTERM, then SIGKILL) and ``env``
    (extra environment variables for the harness).
    """

    kind = "local"
    settings_model = LocalNode
    OPTIONS = ("poll_interval_s", "cancel_grace_s", "env")
    poll_interval_s = 0.25  # polling a local file is cheap: a short interval keeps the end-of-run latency low
    cancel_grace_s = 10.0
    env: dict[str, str] = {}

    def __init__(self, settings: LocalNode | None = None, /, **fields) -> None:
        super().__init__(settings, **fields)
        if self.settings.workdir is None:
            raise ValueError(f"local node {self.node} has no workdir (a loaded config sets <artifact_root>/../work)")
        self._procs: dict[int, subprocess.Popen] = {}

    def _python(self) -> str:
        return self.python or sys.executable

    def run_dir(self, spec: RunSpec) -> Path:
        return (Path(self.workdir) / self.run_dir_name(spec)).resolve()

    def launch_argv(self, spec: RunSpec, run_dir: Path) -> list[str]:
        """The argv ``start`` runs in ``run_dir``: the harness under the exit-code supervisor."""
        python = self._python()
        dataset = Path(spec.dataset_path).resolve()
        return wrapped_argv(python, str(run_dir), spec.harness_argv(python, str(run_dir), dataset_path=str(dataset)))

    def render(self, spec: RunSpec) -> str:
        """The command ``start`` would run, as one shell command: it runs the argv without a shell, in the run folder,
        in a session of its own."""
        run_dir = self.run_dir(spec)
        return f"cd {shlex.quote(str(run_dir))} && {shlex.join(self.launch_argv(spec, run_dir))}\n"

    def start(self, spec: RunSpec) -> RunHandle:
        run_dir = self.run_dir(spec)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunnerError(f"node {self.node}: run folder {run_dir} already exists; run ids must be unique")
        dataset = Path(spec.dataset_path).resolve()
        if not dataset.is_file():
            raise RunnerError(f"node {self.node}: prepared dataset {dataset} does not exist")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_SPEC).write_text(spec.to_json())
        python = self._python()
        argv = self.launch_argv(spec, run_dir)
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
        return _pid_alive(handle.pid, handle.run_dir)

    def poll(self, handle: RunHandle) -> RunProgress:
        run_dir = Path(handle.run_dir)
        alive = self._alive(handle)  # before reading exit_code: the supervisor writes it before exiting
        return progress_from_texts(
            _read_tail(run_dir / PROGRESS),
            _read_tail(run_dir / EXIT_CODE),
            alive=alive,
            cancel_requested=(run_dir / CANCEL_REQUESTED).exists(),
        )

    def cancel(self, handle: RunHandle) -> None:
        run_dir = Path(handle.run_dir)
        if run_dir.is_dir() and not (run_dir / EXIT_CODE).exists():
            (run_dir / CANCEL_REQUESTED).write_text(f"{time.time()}\n")
        if handle.pid is None:  # e.g. a handle from active_runs(): find the run's supervisor by its run folder
            pid = _supervisor_pid(handle.run_dir)
            if pid is None:
                return
            handle = RunHandle(**{**handle.to_dict(), "pid": pid})
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
        with replacing_folder(dest) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        return dest

    def log_tail(self, handle: RunHandle, lines: int = 20) -> str:
        text = _read_tail(Path(handle.run_dir) / RUNNER_LOG) or ""
        return "\n".join(text.splitlines()[-lines:])

    def discard(self, handle: RunHandle) -> None:
        self._procs.pop(handle.pid or -1, None)
        run_dir = Path(handle.run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        try:
            run_dir.parent.rmdir()  # <workdir>/<run_id>, once both modes are gone
        except OSError:
            pass

    def machine_facts(self) -> dict[str, Any]:
        """This host's facts: a local node is the orchestrator's own machine."""
        return this_machine()

    def active_runs(self) -> list[tuple[RunHandle, RunProgress]]:
        """Runs in the work folder that have a spec, no exit code, and a live supervisor or fresh progress."""
        out = []
        fresh_after = time.time() - max(30.0, 10 * self.poll_interval_s)
        for spec_file in sorted(Path(self.workdir).glob(f"*/*/{RUN_SPEC}")):
            run_dir = spec_file.parent
            if (run_dir / EXIT_CODE).exists():
                continue
            progress_file = run_dir / PROGRESS
            stamp = progress_file.stat().st_mtime if progress_file.exists() else spec_file.stat().st_mtime
            if stamp < fresh_after:
                continue  # abandoned (the process died without an exit code long ago)
            try:
                spec = json.loads(spec_file.read_text())
            except ValueError:
                spec = {}
            handle = RunHandle(
                run_id=spec.get("run_id", run_dir.parent.name),
                node=self.node,
                run_dir=str(run_dir),
                scenario=spec.get("scenario", ""),
                mode=spec.get("mode", run_dir.name),
            )
            out.append((handle, progress_from_texts(_read_tail(progress_file), None, alive=True)))
        return out
