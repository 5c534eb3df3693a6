"""The one interface every benchmark runner implements.

A *runner* executes one harness process (``python -m mlperf_assets.harness run ...``) for one node, watches it
and brings its run folder back. The Dagster asset ``scenario_run`` (through ``ledger.PartitionRun``) only talks
to this interface, so a local subprocess, an SSH node and a Kubernetes Job look the same to it:

    handle = runner.start(spec)                  # launch (or adopt the same run id, already launched); returns at once
    progress = runner.wait(handle, on_progress)  # poll until it ends (calls poll() every poll_interval_s)
    runner.collect(handle, dest_dir)             # copy the run folder into the artifact store
    runner.cancel(handle)                        # stop it (Dagster run terminated, Ctrl-C)
    runner.active_runs()                         # runs in progress on the node (``mlperf-dagster monitor``)

A runner is built from its node's config model (``config.LocalNode``, ``SSHNode``, ``KubernetesNode``): that model
is the one list of the node's settings and their defaults, and ``runner.settings`` holds it. Errors are typed:
:class:`RunGone` (the node answered: the run is not there) and :class:`RunUnreachable` (the node or API could not
be asked: the run may be alive), both :class:`RunnerError`. Helpers here are pure and shared by every runner:

- :func:`wrapped_argv` runs the harness argv (``RunSpec.harness_argv``, ``harness/args.py``) under a tiny Python
  supervisor that writes the exit code to the run folder (``harness/run_folder.py`` names its files and parses
  them), so the outcome is known even if the orchestrator died meanwhile (a finished process may linger as a
  zombie; a file does not lie). A remote runner that must go through a shell quotes each argv element with
  ``shlex.quote``.

This is deliberately not Dagster Pipes: the harness runs detached on the node and writes everything to its run
folder, so a runner can reconnect, resume polling and reattach after an orchestrator restart.

One runner instance serves one node, and Dagster runs at most one partition per node at a time (the queue's
per-node limit, plus a per-node file lock in ``ledger.PartitionRun``), so a runner never has to queue.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.interrupts import EXIT_SIGINT, EXIT_SIGTERM
from mlperf_assets.harness.run_folder import CANCELLED, EXIT_CODE, EXIT_CODE_TMP, FAILED, RUNNER_LOG, RunProgress


class RunnerError(Exception):
    """A runner could not start, watch or collect a run; the message is one line naming the node."""


class RunGone(RunnerError):
    """The runner reached the node (or the cluster) and found no trace of the run: its folder or Job is gone, so
    there is nothing to resume or collect."""


class RunUnreachable(RunnerError):
    """The runner could not ask about the run (no connection, refused credentials, an API error): the run may well
    still be going. Asking again later may succeed."""


# The supervisor: runs argv[2:] in the run folder argv[1], with stdout/stderr in runner.log, and writes
# the exit code atomically to exit_code. SIGINT/SIGTERM get a no-op handler (reset to the default in the
# child at exec), so a group-wide signal stops the harness and the supervisor still records how it ended.
# It is plain Python so it runs wherever the harness does (local, SSH node, container).
SUPERVISOR_CODE = f"""\
import os, signal, subprocess, sys
run_dir, argv = sys.argv[1], sys.argv[2:]
os.chdir(run_dir)
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda *_: None)
# The harness starts with SIGINT/SIGTERM blocked and unblocks them once its handlers are in place, so a cancel that
# lands while Python is still starting is held, not lost (the supervisor itself ignores them).
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT, signal.SIGTERM}})
with open({RUNNER_LOG!r}, "ab") as log:
    try:
        rc = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as exc:
        log.write(("cannot start the harness: %s\\n" % exc).encode())
        rc = 127
try:
    with open({EXIT_CODE_TMP!r}, "w") as f:
        f.write("%d\\n" % rc)
    os.replace({EXIT_CODE_TMP!r}, {EXIT_CODE!r})
except OSError:
    pass  # a full disk: no exit_code file, and a dead process without one reads as failed
sys.exit(rc if 0 <= rc < 256 else 1)
"""


def wrapped_argv(python: str, run_dir: str, harness_argv: Sequence[str]) -> list[str]:
    """``[python, "-c", SUPERVISOR_CODE, run_dir, *harness_argv]``: the harness under the exit-code supervisor."""
    return [python, "-c", SUPERVISOR_CODE, run_dir, *harness_argv]


def stopped_from_outside(progress: RunProgress, *, cancel_requested: bool, who: str) -> RunProgress:
    """A run whose harness ended as interrupted (SIGINT 130, SIGTERM 143) although no orchestrator cancelled it (no
    cancel marker) was stopped from outside (``who``: what does that on this runner): a failure saying so, not
    "cancelled"."""
    if progress.state != CANCELLED or cancel_requested:
        return progress
    code = progress.exit_code
    signal_name = {EXIT_SIGINT: "SIGINT", EXIT_SIGTERM: "SIGTERM", -2: "SIGINT", -15: "SIGTERM"}.get(code)  # type: ignore[arg-type]
    how = f"by {signal_name}" if signal_name else "by a signal"
    return replace(
        progress, state=FAILED,
        message=f"stopped {how} from outside the orchestrator ({who}), exit code {code}; nobody cancelled it here",
    )  # fmt: skip


@dataclass
class RunHandle:
    """What ``start`` returns: enough to poll, collect or cancel the run later, even from another process."""

    run_id: str
    node: str
    run_dir: str  # the run folder on the node (local path, remote path, or path inside the pod)
    scenario: str = ""
    mode: str = ""
    pid: int | None = None  # supervisor pid = process group id, where the runner has one
    started_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)  # runner-specific (job name, remote host, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunHandle":
        return cls(**dict(data))


ProgressCallback = Callable[[RunProgress], None]


class BenchmarkRunner(ABC):
    """Runs harness processes on one node. Implementations: ``LocalRunner``, ``SSHRunner``, ``KubernetesRunner``.

    ``settings`` is the node's config model (``settings_model``, e.g. ``config.SSHNode``): the only list of the
    node's fields and defaults; ``runner.host`` reads ``runner.settings.host``. Build a runner from the model
    (``SSHRunner(config.node("jw2"))``), or, in scripts and tests, from the model's fields as keywords, ``node``
    standing for its ``name`` (``LocalRunner(node="box", workdir="/tmp/w")``). ``OPTIONS`` are tuning knobs of the
    runner itself, not of the config file (how often to poll, ...): class attributes a keyword may override.

    Implementing a runner means ``start``, ``poll``, ``collect``, ``cancel`` and ``active_runs``; ``wait`` has a
    default polling loop, ``log_tail``, ``discard``, ``stop_hint`` and ``close`` have defaults.
    """

    kind: ClassVar[str]  # the config's ``runner:`` value
    settings_model: ClassVar[type]  # the config model of this runner kind
    OPTIONS: ClassVar[tuple[str, ...]] = ("poll_interval_s",)
    poll_interval_s: float = 2.0

    def __init__(self, settings: Any = None, /, **fields: Any) -> None:
        options = {name: fields.pop(name) for name in list(fields) if name in self.OPTIONS}
        if settings is None:
            settings = self.settings_model(name=fields.pop("node"), runner=self.kind, **fields)
        elif fields:
            raise TypeError(f"{type(self).__name__}: give the node model or its fields, not both ({', '.join(fields)})")
        self.settings = settings
        for name, value in options.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        """The node model's fields read as the runner's own (``runner.workdir``)."""
        settings = self.__dict__.get("settings")
        if settings is not None and not name.startswith("_") and name in type(settings).model_fields:
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def node(self) -> str:
        """The node's name in the config."""
        return self.settings.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"

    @abstractmethod
    def start(self, spec: RunSpec) -> RunHandle:
        """Launch the harness for ``spec`` and return at once; raises :class:`RunnerError`. A run id already launched
        on the node is never started twice: a remote runner adopts it (same spec), the local runner refuses it."""

    @abstractmethod
    def poll(self, handle: RunHandle) -> RunProgress:
        """The run's current progress and state; never blocks for long. :class:`RunGone` if the node has no trace
        of it; while the node cannot be reached, the last answer with ``stale=True`` (or :class:`RunUnreachable`)."""

    @abstractmethod
    def collect(self, handle: RunHandle, dest_dir: str | Path) -> Path:
        """Copy the run folder's files into ``dest_dir`` (created; replaced if present); returns it."""

    @abstractmethod
    def cancel(self, handle: RunHandle) -> None:
        """Stop the run (SIGINT, then harder); safe to call on a finished run."""

    @abstractmethod
    def active_runs(self) -> list[tuple[RunHandle, RunProgress]]:
        """Runs launched on the node that have not ended yet, with their progress (for ``monitor``)."""

    def wait(
        self,
        handle: RunHandle,
        on_progress: ProgressCallback | None = None,
        *,
        timeout_s: float | None = None,
    ) -> RunProgress:
        """Poll until the run ends; ``on_progress`` gets every observation. On timeout the run is cancelled.

        If the caller is interrupted (KeyboardInterrupt, Dagster run termination), the run is cancelled
        before the exception propagates, so no harness outlives the Dagster run that started it.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                progress = self.poll(handle)
                if on_progress is not None:
                    on_progress(progress)
                if progress.done:
                    return progress
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel(handle)
                    raise RunnerError(
                        f"node {self.node}: run {handle.run_id} exceeded its timeout of {timeout_s:.0f} s "
                        "and was cancelled"
                    )
                time.sleep(self.poll_interval_s)
        except BaseException as exc:  # noqa: BLE001 - cancel on any interruption, then re-raise
            if not isinstance(exc, RunnerError):
                self.cancel(handle)
            raise

    def log_tail(self, handle: RunHandle, lines: int = 20) -> str:
        """The last lines of the harness's output (``runner.log``), for error messages; "" if unavailable."""
        return ""

    def discard(self, handle: RunHandle) -> None:
        """Remove the node's copy of a run folder after a successful ``collect`` (default: keep it)."""

    def stop_hint(self, handle: RunHandle) -> str:
        """How a person stops the run by hand (for messages about a run no orchestrator watches)."""
        if handle.pid:
            return f"stop it on node {handle.node} (kill -INT -{handle.pid}: the harness's process group)"
        return f"stop it on node {handle.node}"

    def close(self) -> None:
        """Release connections; the runner reconnects when used again."""

    def machine_facts(self) -> dict[str, Any]:
        """What the node's machine says about itself for a submission's systems JSON (``cpu_model``, ``cpu_sockets``,
        ``cpu_mhz``, ``cpu_cache``, ``memory_gb``, ``os``). Default: nothing is knowable from the orchestrator."""
        return {}

    def render(self, spec: RunSpec) -> str:
        """What this runner would launch for ``spec``, as text (``mlperf-dagster render``); starts nothing."""
        raise RunnerError(f"node {self.node} ({self.kind}) has nothing to render")

    def run_dir_name(self, spec: RunSpec) -> str:
        """Run folder below the node's workdir: ``<run_id>/<mode>`` (one run id covers both modes)."""
        return f"{spec.run_id}/{spec.mode}"
