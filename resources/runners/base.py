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

- :class:`RunSpec` renders the harness argv; every value is its own argv element, never a shell string
  (a remote runner that must go through a shell quotes each element with ``shlex.quote``).
- :func:`wrapped_argv` runs the harness under a tiny Python supervisor that writes the exit code to
  ``exit_code`` in the run folder, so the outcome is known even if the orchestrator died meanwhile
  (a finished process may linger as a zombie; a file does not lie).
- :func:`parse_progress` / :func:`progress_from_texts` turn ``progress.jsonl`` + ``exit_code`` into a
  :class:`RunProgress`; a remote runner reads the two files' text and calls the same function.

This is deliberately not Dagster Pipes: the harness runs detached on the node and writes everything to its run
folder, so a runner can reconnect, resume polling and reattach after an orchestrator restart.

One runner instance serves one node, and Dagster runs at most one partition per node at a time (the queue's
per-node limit, plus a per-node file lock in ``ledger.PartitionRun``), so a runner never has to queue.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from mlperf_assets.harness.backends.base import format_key_value
from mlperf_assets.harness.benchmarks import MODES, SCENARIOS
from mlperf_assets.harness.settings import settings_argv, validate_settings

HARNESS_MODULE = "mlperf_assets.harness"

# Files a runner relies on inside the run folder (the harness writes the rest).
EXIT_CODE_FILE = "exit_code"  # written by the supervisor: the harness's exit code, or -N if killed by signal N
RUNNER_LOG_FILE = "runner.log"  # the harness's stdout and stderr
CANCEL_MARKER_FILE = "cancel_requested"  # written by cancel(): a later poll reports "cancelled", not "failed"
SPEC_FILE = "run_spec.json"  # the RunSpec as JSON (for reattaching and for remote runners)
PROGRESS_FILE = "progress.jsonl"

# LoadGen scenario settings pass through as one mapping keyed by LoadGen's user.conf keys: the table, its one
# validation and the harness flags they become are in harness/settings.py (LOADGEN_SETTINGS).

# Exit codes the harness uses (harness/cli.py): 0 = LoadGen finished; 130 / 143 = stopped by SIGINT / SIGTERM
# (Ctrl-C, cancel). A signal that lands before the harness's handlers exist ends the process by the signal itself,
# which the supervisor records as -2 / -15: the same outcome.
EXIT_OK = 0
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
INTERRUPTED_EXIT_CODES = frozenset({EXIT_INTERRUPTED, EXIT_TERMINATED, -2, -15})


class RunnerError(Exception):
    """A runner could not start, watch or collect a run; the message is one line naming the node."""


class RunGone(RunnerError):
    """The runner reached the node (or the cluster) and found no trace of the run: its folder or Job is gone, so
    there is nothing to resume or collect."""


class RunUnreachable(RunnerError):
    """The runner could not ask about the run (no connection, refused credentials, an API error): the run may well
    still be going. Asking again later may succeed."""


@dataclass(frozen=True)
class RunSpec:
    """Everything one harness process needs; renders its argv."""

    run_id: str
    node: str
    scenario: str  # Offline | Server | SingleStream
    mode: str  # performance | accuracy
    benchmark: str  # a harness/benchmarks.py name
    backend: str  # a harness/backends registry name
    dataset_path: str  # the prepared dataset on the orchestrator; a remote runner maps it to its copy
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    # LoadGen scenario settings (harness/settings.py: LoadGen keys or their config spelling; None values dropped),
    # held validated, by LoadGen key
    settings: Mapping[str, Any] = field(default_factory=dict)
    max_samples: int | None = None
    lg_model_name: str | None = None
    progress_interval_s: float = 2.0
    # engine replicas behind the run's one SUT (data parallelism: --data-parallel-size), tensor_parallel_size GPUs
    # each; plan.build_spec sets it from the config's parallelism and the node's GPUs
    data_parallel_size: int = 1
    extra_args: tuple[str, ...] = ()  # appended verbatim (backend-specific flags), each one argv element
    # A compliance test (harness/compliance.py: "TEST06") and the TEXT of its audit.config, taken from the user's
    # MLCommons checkout; the harness writes it into LoadGen's working directory for the run only.
    compliance: str | None = None
    audit_config: str | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, not {self.scenario!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        object.__setattr__(self, "settings", validate_settings(self.settings))  # SettingsError is a ValueError
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.run_id):
            raise ValueError(f"run_id must be letters, digits, '.', '_' or '-', not {self.run_id!r}")

    def harness_args(self, output_dir: str, *, dataset_path: str | None = None) -> list[str]:
        """Arguments after ``python -m mlperf_assets.harness``: ``["run", "--scenario", ...]``."""
        args = [
            "run",
            "--scenario", self.scenario,
            "--mode", self.mode,
            "--backend", self.backend,
            "--benchmark", self.benchmark,
            "--dataset", dataset_path or self.dataset_path,
            "--output-dir", output_dir,
            "--run-id", self.run_id,
            "--node", self.node,
            "--progress-interval-s", repr(float(self.progress_interval_s)),
        ]  # fmt: skip
        if self.lg_model_name:
            args += ["--lg-model-name", self.lg_model_name]
        if self.max_samples is not None:
            args += ["--max-samples", str(int(self.max_samples))]
        args += settings_argv(self.settings)
        if self.compliance:
            args += ["--compliance", self.compliance]
        if self.audit_config is not None:
            args += ["--audit-config-text", self.audit_config]
        for key, value in self.engine_args.items():
            args += ["--engine-arg", format_key_value(key, value)]
        if self.data_parallel_size > 1:
            args += ["--data-parallel-size", str(int(self.data_parallel_size))]
        args += list(self.extra_args)
        return args

    def identity(self) -> dict[str, Any]:
        """What makes two specs of one run id the same run (a runner adopting a launched run compares these)."""
        return {
            "scenario": self.scenario, "mode": self.mode, "benchmark": self.benchmark, "backend": self.backend,
            "max_samples": self.max_samples, "settings": dict(self.settings), "engine_args": dict(self.engine_args),
            "compliance": self.compliance, "data_parallel_size": self.data_parallel_size,
            "extra_args": list(self.extra_args),
        }  # fmt: skip

    def harness_argv(self, python: str, output_dir: str, *, dataset_path: str | None = None) -> list[str]:
        """The full argv: ``[python, "-m", "mlperf_assets.harness", "run", ...]``."""
        return [python, "-m", HARNESS_MODULE, *self.harness_args(output_dir, dataset_path=dataset_path)]

    def to_json(self) -> str:
        data = asdict(self)
        data["engine_args"] = dict(self.engine_args)
        data["settings"] = dict(self.settings)
        data["extra_args"] = list(self.extra_args)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        data = json.loads(text)
        data["extra_args"] = tuple(data.get("extra_args", ()))
        return cls(**data)


# The supervisor: runs argv[2:] in the run folder argv[1], with stdout/stderr in runner.log, and writes
# the exit code atomically to exit_code. SIGINT/SIGTERM get a no-op handler (reset to the default in the
# child at exec), so a group-wide signal stops the harness and the supervisor still records how it ended.
# It is plain Python so it runs wherever the harness does (local, SSH node, container).
SUPERVISOR_CODE = """\
import os, signal, subprocess, sys
run_dir, argv = sys.argv[1], sys.argv[2:]
os.chdir(run_dir)
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda *_: None)
# The harness starts with SIGINT/SIGTERM blocked and unblocks them once its handlers are in place, so a cancel that
# lands while Python is still starting is held, not lost (the supervisor itself ignores them).
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
with open("runner.log", "ab") as log:
    try:
        rc = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as exc:
        log.write(("cannot start the harness: %s\\n" % exc).encode())
        rc = 127
try:
    with open("exit_code.tmp", "w") as f:
        f.write("%d\\n" % rc)
    os.replace("exit_code.tmp", "exit_code")
except OSError:
    pass  # a full disk: no exit_code file, and a dead process without one reads as failed
sys.exit(rc if 0 <= rc < 256 else 1)
"""


def wrapped_argv(python: str, run_dir: str, harness_argv: Sequence[str]) -> list[str]:
    """``[python, "-c", SUPERVISOR_CODE, run_dir, *harness_argv]``: the harness under the exit-code supervisor."""
    return [python, "-c", SUPERVISOR_CODE, run_dir, *harness_argv]


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


RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
TERMINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class RunProgress:
    """One observation of a run: the last ``progress.jsonl`` line plus the process state."""

    state: str = RUNNING  # running | succeeded | failed | cancelled
    elapsed_s: float = 0.0
    issued: int = 0
    completed: int = 0
    total: int | None = None
    output_tokens: int = 0
    tokens_per_s: float = 0.0
    final: bool = False  # the harness wrote its final progress line
    exit_code: int | None = None
    message: str | None = None  # why it failed, when known (runner-level)
    stale: bool = False  # the node could not be reached just now: the runner's last answer, repeated while it retries
    kv_cache_usage_pct: float | None = None  # the engine's KV-cache use on the last progress line, when reported

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def fraction(self) -> float | None:
        """Completed / total, when the total is known."""
        if not self.total:
            return None
        return min(1.0, self.completed / self.total)

    def describe(self) -> str:
        """One short line for logs: ``running 120/400 samples (30%), 5,123 tokens/s, 12.0 s[, KV cache 43%]``.

        A stale observation (the node cannot be reached just now) leads with the runner's message and gives the
        figures as the last ones seen, never as live: ``connection lost 12 s ago (...); reconnecting (last seen:
        running 120/400 samples ...)``. A failed or cancelled run ends with its message."""
        count = f"{self.completed}/{self.total}" if self.total else f"{self.completed}"
        pct = f" ({self.fraction:.0%})" if self.fraction is not None else ""
        text = f"{self.state} {count} samples{pct}, {self.tokens_per_s:,.0f} tokens/s, {self.elapsed_s:.1f} s"
        if self.kv_cache_usage_pct is not None:
            text += f", KV cache {self.kv_cache_usage_pct:.0f}%"
        if self.stale:
            return f"{self.message or 'no answer from the node'} (last seen: {text})"
        if self.message and self.state in (FAILED, CANCELLED):
            text += f": {self.message}"
        elif self.exit_code is not None and self.state != SUCCEEDED:
            text += f", exit code {self.exit_code}"
        return text


def parse_progress(text: str) -> dict[str, Any] | None:
    """The last complete JSON line of a ``progress.jsonl`` text (a line being written is ignored)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn last line: the harness is writing it right now
        if isinstance(value, dict):
            return value
    return None


def state_from_exit_code(exit_code: int | None, *, alive: bool, cancel_requested: bool = False) -> str:
    """Run state from the supervisor's exit code (None = no file yet) and whether the process still exists."""
    if exit_code is None:
        if alive:
            return RUNNING
        return CANCELLED if cancel_requested else FAILED
    if exit_code == EXIT_OK:
        return SUCCEEDED
    if cancel_requested or exit_code in INTERRUPTED_EXIT_CODES:
        return CANCELLED
    return FAILED


def progress_from_texts(
    progress_text: str | None,
    exit_code_text: str | None,
    *,
    alive: bool,
    cancel_requested: bool = False,
) -> RunProgress:
    """Build a :class:`RunProgress` from the two files' contents (None = file absent)."""
    last = parse_progress(progress_text or "") or {}
    exit_code: int | None = None
    if exit_code_text and exit_code_text.strip():
        try:
            exit_code = int(exit_code_text.strip())
        except ValueError:
            exit_code = None
    state = state_from_exit_code(exit_code, alive=alive, cancel_requested=cancel_requested)
    message = None
    if state == FAILED:
        message = (
            f"the harness exited with code {exit_code}"
            if exit_code is not None
            else "the harness process ended without recording an exit code (killed?)"
        )
    elif state == CANCELLED:
        message = "the run was cancelled"
    total = last.get("total")
    kv = last.get("kv_cache_usage_pct")
    return RunProgress(
        state=state,
        elapsed_s=float(last.get("elapsed_s") or 0.0),
        issued=int(last.get("issued") or 0),
        completed=int(last.get("completed") or 0),
        total=int(total) if total is not None else None,
        output_tokens=int(last.get("output_tokens") or 0),
        tokens_per_s=float(last.get("tokens_per_s") or 0.0),
        kv_cache_usage_pct=float(kv) if isinstance(kv, (int, float)) and not isinstance(kv, bool) else None,
        final=bool(last.get("final", False)),
        exit_code=exit_code,
        message=message,
    )


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

    def run_dir_name(self, spec: RunSpec) -> str:
        """Run folder below the node's workdir: ``<run_id>/<mode>`` (one run id covers both modes)."""
        return f"{spec.run_id}/{spec.mode}"


@contextmanager
def replacing_folder(dest_dir: str | Path) -> Iterator[Path]:
    """``with replacing_folder(dest) as tmp: <fill tmp>``: a temporary folder beside ``dest`` that replaces it when
    the block succeeds and is removed when it fails, so a collected run folder is never seen half-copied."""
    dest = Path(dest_dir).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
