"""What the commands share: the config as the CLI loads it, the project's Dagster instance, Ctrl-C/SIGTERM while
jobs execute in this process (:class:`StopSignals`), and failure lines of an in-process job result."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from mlperf_assets.config import PROJECT_ROOT
from mlperf_assets.errors import UserError

DAGSTER_HOME_DIR = PROJECT_ROOT / ".dagster_home"
DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"
HUB_HOST = ("huggingface.co", 443)


# ------------------------------------------------------------------------------------------ instance
def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` if set, else ``<project>/.dagster_home`` (created, with the project's dagster.yaml)."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        return Path(home)
    DAGSTER_HOME_DIR.mkdir(parents=True, exist_ok=True)
    target = DAGSTER_HOME_DIR / "dagster.yaml"
    if DAGSTER_YAML.is_file() and (not target.is_file() or target.read_bytes() != DAGSTER_YAML.read_bytes()):
        shutil.copyfile(DAGSTER_YAML, target)
    os.environ["DAGSTER_HOME"] = str(DAGSTER_HOME_DIR)
    return DAGSTER_HOME_DIR


# `run`/`demo` keep no compute logs: a step's stdout and stderr go straight to the terminal the command runs in.
# Dagster's capture would start `tail` and `watch_orphans` helpers in the terminal's process group for every step,
# and Ctrl-C there makes each of them print a KeyboardInterrupt traceback. The UI's own runs keep theirs.
NO_COMPUTE_LOGS = {
    "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
}


def cli_instance():
    """The Dagster instance of ``$DAGSTER_HOME`` (see :func:`ensure_dagster_home`), without compute-log capture."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = os.environ.get("DAGSTER_HOME") or str(ensure_dagster_home())
    # A Ctrl-C that lands while SQLAlchemy closes one of the instance's SQLite connections makes Dagster's signal
    # handler raise inside the close; SQLAlchemy swallows it but logs the traceback on stderr. The command reports the
    # stop itself, in one line: that log is noise.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=NO_COMPUTE_LOGS))


def load_cli_config(path: str | None, *, dataset_override: str | None = None):
    """The config at ``path`` (default: ``$MLPERF_DAGSTER_CONFIG`` or the embedded one); its problems become one
    :class:`UserError` (the CLI prints it and exits 2)."""
    from mlperf_assets.config import ConfigError, load_config

    try:
        return load_config(path, dataset_override=dataset_override)
    except ConfigError as exc:
        raise UserError(str(exc) if len(exc.problems) == 1 else "invalid config:\n  " + "\n  ".join(exc.problems))


def hub_reachable(timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection(HUB_HOST, timeout=timeout_s).close()
        return True
    except OSError:
        return False


def ensure_prepared_dataset(config, instance, resources, run_config) -> None:
    """Materialize the dataset asset when its prepared file is missing (a command that runs partitions without the
    benchmark job's own dataset step); :class:`UserError` when that fails."""
    import sys

    import dagster as dg

    from mlperf_assets.assets.dataset import cnn_dailymail_dataset
    from mlperf_assets.plan import prepared_dataset_path

    if prepared_dataset_path(config).is_file():
        return
    check_dataset_reachable(config)
    print(f"preparing the dataset ({config.dataset.source}) ...", file=sys.stderr)
    done = dg.materialize([cnn_dailymail_dataset], instance=instance, resources=resources, run_config=run_config,
                          raise_on_error=False)
    if not done.success:
        raise UserError("preparing the dataset failed: " + "; ".join(failure_messages(done)))


def check_dataset_reachable(config) -> None:
    """Fail fast (one message saying how to supply the dataset) when it must come from an unreachable hub."""
    from mlperf_assets.config import how_to_supply_dataset

    if config.dataset.source == "huggingface" and config.dataset.path is None and not hub_reachable():
        raise UserError(
            f"the dataset comes from the Hugging Face hub ({config.source_path}: dataset.source: huggingface), "
            f"which cannot be reached from here. {how_to_supply_dataset()}"
        )


# ------------------------------------------------------------------------------------------ jobs in process
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Which of Ctrl-C (SIGINT) and SIGTERM reached this process while ``run``/``demo`` execute Dagster jobs.

    While a job executes, Dagster swaps in its own SIGINT/SIGTERM handler and turns the signal into an interrupt of
    the step in progress (``scenario_run``'s ``runner.wait`` then cancels the harness run); the job's result is a
    plain failure, and Dagster's handler keeps no note of which signal came. So every signal is also noted through
    the interpreter's wakeup fd (``signal.set_wakeup_fd``), which it writes whichever Python handler is installed.
    Between jobs this class's own handler is in place and only records, so the pipeline's own steps (the checks
    before each job, cancelling the runs in flight) are never cut short: a second Ctrl-C cannot leave a harness
    behind. ``received`` is the first stop signal so far, or None. Main thread only; elsewhere it is inert
    (Python delivers signals to the main thread)."""

    def __init__(self) -> None:
        self._first: int | None = None
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._old_wakeup_fd = -1
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._saved[sig] = signal.signal(sig, self._note)
        return self

    @staticmethod
    def _note(signo: int, frame: Any) -> None:  # noqa: ARG004 - the wakeup fd holds the signal already
        return None

    @property
    def received(self) -> int | None:
        if self._read_fd is not None:
            while True:
                try:
                    data = os.read(self._read_fd, 512)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    break
                for signo in data:
                    if self._first is None and signo in STOP_SIGNALS:
                        self._first = signo
        return self._first

    def __exit__(self, *exc: Any) -> None:
        if self._read_fd is None:
            return
        self.received  # noqa: B018 - drain the pipe: a signal that came last still counts
        for sig, handler in self._saved.items():
            if signal.getsignal(sig) is self._note:  # not if it was replaced meanwhile (SIG_IGN while exiting)
                signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)  # type: ignore[arg-type]
        self._read_fd = self._write_fd = None


def signal_name(signo: int) -> str:
    return signal.Signals(signo).name


def job_run_config(verbose: bool) -> dict[str, Any]:
    # Quiet by default: failures are summarised by this command, one line each.
    return {"loggers": {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}}}


def failure_messages(result) -> list[str]:
    """One line per failed step of an in-process result: ``step: message``."""
    from jobs.failures import step_failure_message

    def message(event) -> str:
        data = event.step_failure_data
        if data is not None and getattr(data.error_source, "name", None) == "INTERRUPT":
            return "interrupted"  # Ctrl-C / SIGTERM reached the step: never the exception's class name
        return step_failure_message(event)

    return [
        f"{event.step_key}: {message(event)}" for event in result.all_events if event.event_type_value == "STEP_FAILURE"
    ]
