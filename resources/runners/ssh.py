"""``SSHRunner``: the harness on a GPU node reached over SSH, detached so it outlives the connection.

One run = one folder ``<workdir>/<run_id>/<mode>`` on the node holding ``run_spec.json``, ``pid``, the
harness outputs, ``runner.log`` and ``exit_code`` (written by the exit-code supervisor of
``base.wrapped_argv``). The harness is started with ``setsid nohup ... &`` in its own session, so a dropped
connection or a dead orchestrator does not stop it; everything the runner needs later is in that folder:

- ``poll`` reads whether the pid is alive, the exit code and the tail of ``progress.jsonl`` (over SFTP and
  ``/proc``, or with one shell command from ``remote_shell``). On a dropped connection it keeps returning the last
  progress (``stale``, with a "reconnecting" message) while reconnecting with exponential backoff, and raises
  only after ``reconnect_timeout_s``; a run folder that is gone raises ``RunGone``.
- ``start`` on a run id whose folder already holds a launched run reattaches to it instead of starting a
  second harness (an orchestrator restarted mid-run picks the run up where it is).
- ``collect`` copies the folder over SFTP into a temporary folder beside the destination, checks every file's
  size, then renames it into place: the artifact store never sees a half-copied run.
- ``cancel`` signals the whole process group on the node (SIGINT, then SIGTERM, then SIGKILL).

Security: host keys are checked against ``known_hosts`` and an unknown or changed key is refused (no
silent accept); every value that reaches the remote shell goes through ``shlex.quote`` (the pure ``render_*``
functions build all of it). Secrets are names in the config, values in the orchestrator's environment: the key's
passphrase is read from the variable ``key_passphrase_env`` names when the connection is made, and ``forward_env``
values go to the node in a 0600 file. (Not ``dagster.EnvVar``: runners are plain clients built from the config
file, which is the place a user names them; the value is read at use time on the orchestrator and never logged.)

Container mode (``container`` set): the supervisor and harness run inside
``docker run --gpus N ...`` (or podman with CDI devices), with the run folder and the dataset folder
mounted at the same paths, so paths and files are identical to the bare mode.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from getpass import getuser
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import paramiko

from mlperf_assets.config import SSHNode
from mlperf_assets.harness.args import HARNESS_MODULE, RunSpec
from mlperf_assets.harness.files import replacing_folder
from mlperf_assets.harness.run_folder import (
    CANCEL_REQUESTED,
    EXIT_CODE,
    PID,
    PROGRESS,
    RUN_SPEC,
    RUNNER_LOG,
    RUNNING,
    RunProgress,
)

from .base import BenchmarkRunner, RunGone, RunHandle, RunnerError, RunUnreachable, wrapped_argv
from .harness_check import HARNESS_DIST, judge_answer, local_harness_version, version_compatible
from .remote_shell import (
    DATASETS_DIR,
    RemoteStatus,
    StatusCutShort,
    parse_free_space,
    parse_status_output,
    render_cancel_command,
    render_free_space_command,
    render_list_command,
    render_status_command,
    sha256_file,
)
from .ssh_connection import (
    CommandResult,
    HostKeyError,
    NodeUnreachableError,
    SSHAuthError,
    SSHConnection,
    SSHRunnerError,
)

SECRETS_FILE = ".forward.env"  # forwarded environment (0600), read and deleted by the launch command


# ---------------------------------------------------------------------------------------------- errors
class HarnessNotInstalledError(SSHRunnerError):
    """The node's python cannot import the harness, or has an incompatible version of it."""


class ConnectionLostError(SSHRunnerError, RunUnreachable):
    """The connection dropped and could not be re-established within the reconnect timeout."""


class RemoteCommandError(SSHRunnerError):
    """A remote helper command failed or timed out."""


class DiskFullError(SSHRunnerError):
    """No space left where the runner writes: the node's workdir (uploading the dataset, writing the run folder)
    or, collecting, the orchestrator's artifact folder. An answer, not a lost link: never retried; what was
    half-written is removed."""


class RemoteWriteError(SSHRunnerError):
    """The node's SFTP server refused a write for another reason (a quota, a read-only file system, an I/O error)."""


# ------------------------------------------------------------------------------------- pure helpers
# What the node's python prints: the harness version, or why it cannot import it. Runs with ``-c``.
HARNESS_CHECK_CODE = f"""\
import json, sys
try:
    import {HARNESS_MODULE}
except Exception as exc:
    print(json.dumps({{"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "python": sys.version.split()[0]}}))
    sys.exit(0)
version = None
try:
    from importlib import metadata
    version = metadata.version({HARNESS_DIST!r})
except Exception:
    import mlperf_assets
    version = getattr(mlperf_assets, "__version__", None)
print(json.dumps({{"ok": True, "version": version, "python": sys.version.split()[0], "executable": sys.executable}}))
"""


@dataclass(frozen=True)
class ContainerSettings:
    """Container mode: run the harness in ``image`` with ``engine`` (docker or podman)."""

    engine: str  # docker | podman
    image: str
    gpus: int | None = None  # None or 0: all GPUs
    extra_args: tuple[str, ...] = ()  # verbatim ``run`` options (volumes for the HF cache, --user, ...)

    def __post_init__(self) -> None:
        if self.engine not in ("docker", "podman"):
            raise ValueError(f"container engine must be docker or podman, not {self.engine!r}")
        if not self.image:
            raise ValueError("container mode needs an image")


def container_name(run_dir: str) -> str:
    """A container name derived from the run folder (``<run_id>/<mode>``): stable, so cancel can find it."""
    parts = PurePosixPath(run_dir).parts[-2:]
    return "mlperf-" + re.sub(r"[^A-Za-z0-9_.-]", "-", "-".join(parts))[:100]


def render_container_argv(
    container: ContainerSettings,
    *,
    run_dir: str,
    datasets_dir: str,
    inner_argv: Sequence[str],
    env_names: Sequence[str] = (),
) -> list[str]:
    """``docker run ...`` argv running ``inner_argv`` with the run and dataset folders mounted at the same paths.

    Environment variables are passed by name only (``-e NAME``): their values come from the launching shell,
    never from the command line.
    """
    argv = [container.engine, "run", "--rm", "--name", container_name(run_dir), "--init", "--ipc=host"]
    if container.engine == "docker":
        argv += ["--gpus", str(container.gpus) if container.gpus else "all"]
    else:  # podman: CDI device names (nvidia-ctk cdi generate)
        if container.gpus:
            for index in range(container.gpus):
                argv += ["--device", f"nvidia.com/gpu={index}"]
        else:
            argv += ["--device", "nvidia.com/gpu=all"]
    argv += ["-v", f"{run_dir}:{run_dir}", "-v", f"{datasets_dir}:{datasets_dir}:ro", "-w", run_dir]
    for name in env_names:
        argv += ["-e", name]
    argv += list(container.extra_args)
    argv += [container.image, *inner_argv]
    return argv


def render_launch_command(run_dir: str, argv: Sequence[str], *, with_env_file: bool = False) -> str:
    """The shell command that starts ``argv`` detached in ``run_dir`` and prints its pid.

    ``setsid`` gives it its own session and process group (cancel signals the group; no SIGHUP when the
    connection goes), ``nohup`` and the redirections cut it from the SSH channel. The list is
    ``cd ...; ... &`` and not ``cd ... && ... &``: the latter backgrounds the whole list in a subshell that
    keeps the channel open until the job ends (platform facts). The inner ``sh -c`` records its own pid (the
    session leader, which then ``exec``s the supervisor) before anything else, and the outer shell waits
    for that file so the caller gets the real pid.
    """
    inner = "echo $$ > pid.tmp && mv pid.tmp pid && "
    if with_env_file:
        inner += f"set -a && . ./{SECRETS_FILE} && set +a && rm -f {SECRETS_FILE} && "
    inner += 'exec "$@"'
    q = shlex.quote
    return (
        f"cd {q(run_dir)} || exit 97; "
        f"rm -f {PID}; "
        f"setsid nohup sh -c {q(inner)} sh {shlex.join(argv)} > /dev/null 2>&1 < /dev/null & "
        f"i=0; while [ ! -s {PID} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
        f"cat {PID} 2>/dev/null || echo none"
    )


_CONNECTION_ERRORS = (OSError, EOFError, TimeoutError)  # socket errors, dropped links, command timeouts
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FREE_SPACE_MARGIN = 1 << 20  # a refused write with less than this free (or less than the file) is a full disk


def _error_text(exc: OSError) -> str:
    return str(exc.args[0]) if exc.errno is None and exc.args else ""


def _is_disk_full(exc: BaseException) -> bool:
    """An error that says the disk is full, wherever it comes from: errno ENOSPC/EDQUOT (a local write, or a server
    that sends it); paramiko's ``IOError("size mismatch in put!  N != M")`` (``put`` pipelines its writes and drops
    the server's refusals; its confirming ``stat`` finds the short file); a server's own "no space" text."""
    if not isinstance(exc, OSError) or isinstance(exc, (ConnectionError, TimeoutError)):
        return False
    text = _error_text(exc)
    return exc.errno in _DISK_ERRNOS or text.startswith("size mismatch in put") or "no space" in text.lower()


def _is_write_refusal(exc: BaseException) -> bool:
    """A live SFTP server's answer that a write did not succeed: a full disk (:func:`_is_disk_full`), or
    ``IOError("Failure")``: SSH_FX_FAILURE, OpenSSH's sftp-server answer to ENOSPC (SFTP v3 has no code for a full
    disk) and to other failed writes. Only writes are judged by this; a read's "Failure" stays a transient error."""
    if not isinstance(exc, OSError) or isinstance(exc, (ConnectionError, TimeoutError)):
        return False
    return _is_disk_full(exc) or _error_text(exc) == "Failure"


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (RunnerError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False  # a file-level answer from a live server, not a broken link
    if _is_disk_full(exc):
        return False  # a full disk: retrying cannot help, and it is not a lost connection
    return isinstance(exc, _CONNECTION_ERRORS + (paramiko.SSHException,))


def _size(n: int | None) -> str:
    if n is None:
        return "? bytes"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _remove_quietly(sftp: Any, path: str) -> None:
    """Remove a temporary file after a failed write; a link that is gone meanwhile leaves it (named ``.*.tmp``)."""
    try:
        sftp.remove(path)
    except Exception:  # noqa: BLE001 - best effort: the write's own error is the one reported
        pass


# ---------------------------------------------------------------------------------------------- runner
class SSHRunner(BenchmarkRunner):
    """Runs the harness on one SSH node, configured by a ``config.SSHNode`` (its fields are documented there).

    ``host``/``port``/``user``: where to log in (``user`` default: the local user name); ``key_file``: private key
    (None: the SSH agent and the default ``~/.ssh/id_*`` keys); ``key_passphrase_env``: name of the environment
    variable holding the key's passphrase (never the passphrase itself); ``known_hosts``: host keys to verify against
    (an unknown or changed key is refused); ``workdir``: run folders on the node; ``python``: interpreter with the
    harness installed (inside the image in container mode); ``forward_env``: names of orchestrator environment
    variables passed to the harness (``HF_TOKEN``), through a 0600 file the launch reads and deletes, never the
    command line; ``container``: container mode; ``reconnect_timeout_s``: how long a lost connection is retried
    (with backoff up to ``reconnect_backoff_max_s``) before the run is reported lost; the harness keeps running on
    the node meanwhile and a later ``start`` of the same run id reattaches. Option ``check_harness_version``: refuse
    a node whose harness differs from the orchestrator's in major.minor (default true).
    """

    kind = "ssh"
    settings_model = SSHNode
    OPTIONS = ("poll_interval_s", "check_harness_version")
    check_harness_version = True

    def __init__(self, settings: SSHNode | None = None, /, **fields: Any) -> None:
        super().__init__(settings, **fields)
        self._conn: SSHConnection | None = None
        self._workdir_abs: str | None = None
        self._harness_ok = False
        self._proc_over_sftp: bool | None = None
        self._last: dict[str, RunProgress] = {}
        self._outage_since: float | None = None
        self._next_attempt = 0.0
        self._backoff = 0.0
        self._outage_reason = ""

    # ---- the node model's fields in the form paramiko and the shell take
    @property
    def user(self) -> str:
        return self.settings.user or getuser()

    @property
    def key_file(self) -> str | None:
        return str(self.settings.key_file) if self.settings.key_file else None

    @property
    def known_hosts(self) -> str:
        return str(self.settings.known_hosts)

    @property
    def container(self) -> ContainerSettings | None:
        c = self.settings.container
        if c is None:
            return None
        return ContainerSettings(engine=c.engine, image=c.image, gpus=self.gpus, extra_args=tuple(c.extra_args))

    # ---- connection management
    def _new_connection(self) -> SSHConnection:
        return SSHConnection(self.settings)

    def connection(self) -> SSHConnection:
        """The open connection, (re)connecting once if needed; raises the clear SSHRunnerError subclasses."""
        if self._conn is None or not self._conn.active:
            conn = self._conn or self._new_connection()
            conn.connect()
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, what: str, fn: Any) -> Any:
        """``fn(conn)`` on a live connection; one reconnect on a dropped link, then a clear error."""
        for attempt in (1, 2):
            conn = self.connection()
            try:
                return fn(conn)
            except Exception as exc:  # noqa: BLE001 - classify below
                if not _is_connection_error(exc):
                    raise
                conn.close()
                if attempt == 2:
                    raise ConnectionLostError(f"node {self.node}: connection lost while {what}: {exc}") from None
        raise AssertionError("unreachable")

    def _sh(self, conn: SSHConnection, command: str, what: str, *, timeout_s: float | None = None) -> CommandResult:
        result = conn.run(command, timeout_s=timeout_s)
        if result.exit_code != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise RemoteCommandError(
                f"node {self.node}: {what} failed (exit code {result.exit_code}): {detail[-1] if detail else 'no output'}"
            )
        return result

    def remote_workdir(self) -> str:
        """The absolute workdir on the node (``~`` and relative paths are below the login's home, asked of the node)."""
        if self._workdir_abs is None and self.workdir.startswith("/"):
            self._workdir_abs = str(PurePosixPath(self.workdir))
        if self._workdir_abs is None:

            def resolve(conn: SSHConnection) -> str:
                home = conn.sftp().normalize(".")
                wd = self.workdir
                if wd == "~" or wd.startswith("~/"):
                    wd = home + wd[1:]
                elif not wd.startswith("/"):
                    wd = f"{home}/{wd}"
                return str(PurePosixPath(wd))

            self._workdir_abs = self._call("resolving the workdir", resolve)
        return self._workdir_abs

    def remote_run_dir(self, spec: RunSpec) -> str:
        return f"{self.remote_workdir()}/{self.run_dir_name(spec)}"

    # ---- checks
    def harness_check_argv(self) -> list[str]:
        argv = [self.python, "-c", HARNESS_CHECK_CODE]
        container = self.container
        if container:
            return [container.engine, "run", "--rm", container.image, *argv]
        return argv

    def check_harness(self) -> dict[str, Any]:
        """Ask the node's python for the harness version; HarnessNotInstalledError with the fix if it is wrong."""
        command = shlex.join(self.harness_check_argv())
        result = self._call("checking the harness", lambda c: c.run(command, timeout_s=max(self.command_timeout_s, 120)))
        fix = (
            f"install it into that environment on the node, e.g. `{shlex.quote(self.python)} -m pip install "
            f"'{HARNESS_DIST}=={local_harness_version()}'` (or a wheel built with `pip wheel . -w dist` and copied over; "
            "see docs/setup-guide.md)"
        )
        container = self.container
        where = f"in the image {container.image}" if container else "on the node"
        if result.exit_code == 127 or (result.exit_code != 0 and "not found" in result.stderr):
            raise HarnessNotInstalledError(
                f"node {self.node}: python {self.python!r} not found {where} ({result.stderr.strip()[:200]}); "
                "set `python:` in the node's config to the interpreter of the environment that has the harness"
            )
        info = judge_answer(
            result.stdout, node=self.node, python=self.python, where=where, exit_code=result.exit_code, fix=fix,
            check_version=self.check_harness_version, error=HarnessNotInstalledError,
        )
        self._harness_ok = True
        return info

    # ---- start
    def status(self, run_dir: str) -> RemoteStatus:
        return self._call("reading the run status", lambda c: self._status(c, run_dir))

    def _status(self, conn: SSHConnection, run_dir: str) -> RemoteStatus:
        """The run folder's state. Over SFTP where the node has /proc (no process is started on the node, and a
        poll costs one round trip per file instead of a shell session); else one shell command."""
        sftp = conn.sftp()
        if self._proc_over_sftp is None:
            try:
                self._proc_over_sftp = bool(_sftp_read(sftp, "/proc/self/stat"))
            except OSError:
                self._proc_over_sftp = False
        if not self._proc_over_sftp:
            return parse_status_output(self._sh(conn, render_status_command(run_dir), "status").stdout)
        try:
            sftp.stat(run_dir)
        except FileNotFoundError:
            return RemoteStatus(False, False, False, None, False, "")
        pid_text = (_sftp_read(sftp, f"{run_dir}/{PID}") or "").strip()
        alive = False
        if pid_text.isdigit():
            try:
                stat_text = _sftp_read(sftp, f"/proc/{pid_text}/stat") or ""
                cmdline = _sftp_read(sftp, f"/proc/{pid_text}/cmdline") or ""
            except PermissionError:  # /proc mounted with hidepid: ask the shell instead from now on
                self._proc_over_sftp = False
                return parse_status_output(self._sh(conn, render_status_command(run_dir), "status").stdout)
            state = stat_text.rsplit(")", 1)[-1].split()[:1]
            alive = bool(stat_text) and state != ["Z"] and run_dir in cmdline  # read before exit_code, as in poll
        exit_text = _sftp_read(sftp, f"{run_dir}/{EXIT_CODE}")
        return RemoteStatus(
            exists=True,
            launched=bool(pid_text),
            alive=alive,
            exit_code_text=exit_text.strip() if exit_text and exit_text.strip() else None,
            cancel_requested=_sftp_exists(sftp, f"{run_dir}/{CANCEL_REQUESTED}"),
            progress_text=_sftp_read(sftp, f"{run_dir}/{PROGRESS}", tail=8192) or "",
        )

    def _ensure_dataset(self, conn: SSHConnection, local: Path, remote_dir: str) -> str:
        """Upload the dataset unless the node's copy has the same sha256 (kept in ``<name>.sha256`` beside it)."""
        digest = sha256_file(local)
        remote = f"{remote_dir}/{local.name}"
        sftp = conn.sftp()
        try:
            with sftp.open(remote + ".sha256", "r") as f:
                if f.read().decode().split()[0] == digest:
                    sftp.stat(remote)
                    return remote
        except (OSError, IndexError):
            pass
        tmp = f"{remote_dir}/.{local.name}.{os.getpid()}.{time.time_ns()}.tmp"
        with self._writes(conn, remote_dir, f"uploading the dataset {local.name}", local.stat().st_size):
            try:
                sftp.put(str(local), tmp, confirm=True)
                sftp.posix_rename(tmp, remote)
            except BaseException:
                _remove_quietly(sftp, tmp)
                raise
            self._put_text(sftp, remote + ".sha256", f"{digest}  {local.name}\n")
        return remote

    @staticmethod
    def _put_text(sftp: Any, remote: str, text: str, mode: int | None = None) -> None:
        tmp = f"{remote}.{time.time_ns()}.tmp"
        try:
            with sftp.open(tmp, "w") as f:
                if mode is not None:
                    f.chmod(mode)
                f.write(text.encode())
            sftp.posix_rename(tmp, remote)
        except BaseException:
            _remove_quietly(sftp, tmp)
            raise

    @contextmanager
    def _writes(self, conn: SSHConnection, directory: str, what: str, size: int = 0) -> Iterator[None]:
        """Writes into ``directory`` on the node: a refusal (:func:`_is_write_refusal`) becomes DiskFullError, or
        RemoteWriteError when the file system has room, after the block has removed its temporary files."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - classified here, re-raised otherwise
            if not _is_write_refusal(exc):
                raise
            raise self._write_refused(conn, directory, what, size, exc) from None

    def _write_refused(self, conn: SSHConnection, directory: str, what: str, size: int, exc: OSError) -> SSHRunnerError:
        free = None
        try:  # one round trip, only on a failure: SFTP v3 cannot say why a write failed, df can say what is free
            answer = conn.run(render_free_space_command(directory), timeout_s=min(self.command_timeout_s, 30.0))
            free = parse_free_space(answer.stdout)
        except Exception:  # noqa: BLE001 - without df the error's own text decides
            pass
        text = str(exc.args[0]) if exc.args else str(exc)
        full = (exc.errno in _DISK_ERRNOS or "no space" in text.lower()
                or (free is not None and free < max(size, FREE_SPACE_MARGIN))
                or (free is None and text.startswith("size mismatch in put")))  # fmt: skip
        if full:
            return DiskFullError(
                f"node {self.node}: no space left on device in {directory} ({what}: {_size(size)}, {_size(free)} "
                "free); free space there or set the node's workdir to a larger disk"
            )
        room = f" ({_size(free)} free there)" if free is not None else ""
        return RemoteWriteError(f"node {self.node}: cannot write in {directory} ({what}): the node answered "
                                f"{text!r}{room}")  # fmt: skip

    def launch_argv(self, spec: RunSpec, run_dir: str, dataset_remote: str, datasets_dir: str) -> list[str]:
        """The argv started on the node: supervisor + harness, wrapped in ``docker run`` in container mode."""
        harness = spec.harness_argv(self.python, run_dir, dataset_path=dataset_remote)
        inner = wrapped_argv(self.python, run_dir, harness)
        container = self.container
        if container is None:
            return inner
        return render_container_argv(
            container, run_dir=run_dir, datasets_dir=datasets_dir, inner_argv=inner, env_names=self.forward_env
        )

    def launch_command(self, spec: RunSpec, run_dir: str, dataset_remote: str, datasets_dir: str) -> str:
        """The shell command ``start`` sends to launch ``spec`` in ``run_dir``."""
        argv = self.launch_argv(spec, run_dir, dataset_remote, datasets_dir)
        return render_launch_command(run_dir, argv, with_env_file=bool(self.forward_env))

    def render(self, spec: RunSpec) -> str:
        """The shell command ``start`` would send to the node, as it sends it. A workdir below the login's home is
        resolved by asking the node (one SFTP call); nothing is written there."""
        datasets_dir = f"{self.remote_workdir()}/{DATASETS_DIR}"
        dataset_remote = f"{datasets_dir}/{Path(spec.dataset_path).resolve().name}"  # where _ensure_dataset puts it
        return self.launch_command(spec, self.remote_run_dir(spec), dataset_remote, datasets_dir) + "\n"

    def start(self, spec: RunSpec) -> RunHandle:
        dataset = Path(spec.dataset_path).resolve()
        if not dataset.is_file():
            raise RunnerError(f"node {self.node}: prepared dataset {dataset} does not exist")
        missing = [name for name in self.forward_env if name not in os.environ]
        if missing:
            raise RunnerError(f"node {self.node}: forward_env names unset environment variable(s): {', '.join(missing)}")
        run_dir = self.remote_run_dir(spec)
        handle = RunHandle(
            run_id=spec.run_id,
            node=self.node,
            run_dir=run_dir,
            scenario=spec.scenario,
            mode=spec.mode,
            extra={"host": self.host, "port": self.port},
        )
        existing = self.status(run_dir)
        if existing.launched:
            return self._reattach(handle, spec, existing)
        if not self._harness_ok:
            self.check_harness()
        datasets_dir = f"{self.remote_workdir()}/{DATASETS_DIR}"

        def prepare(conn: SSHConnection) -> str:  # idempotent: retried after a dropped link
            with self._writes(conn, run_dir, "creating the run folder"):
                _sftp_makedirs(conn.sftp(), run_dir)
            with self._writes(conn, datasets_dir, "creating the dataset folder"):
                _sftp_makedirs(conn.sftp(), datasets_dir)
            dataset_remote = self._ensure_dataset(conn, dataset, datasets_dir)
            sftp = conn.sftp()
            spec_text = spec.to_json()
            with self._writes(conn, run_dir, f"writing {RUN_SPEC}", len(spec_text.encode())):
                self._put_text(sftp, f"{run_dir}/{RUN_SPEC}", spec_text)
            if self.forward_env:
                env_text = "".join(f"{name}={shlex.quote(os.environ[name])}\n" for name in self.forward_env)
                with self._writes(conn, run_dir, "writing the forwarded environment", len(env_text.encode())):
                    self._put_text(sftp, f"{run_dir}/{SECRETS_FILE}", env_text, mode=0o600)
            return dataset_remote

        try:
            dataset_remote = self._call("preparing the run folder", prepare)
        except (DiskFullError, RemoteWriteError):
            self._remove_unlaunched(run_dir)  # nothing half-written stays: the run never started
            raise
        command = self.launch_command(spec, run_dir, dataset_remote, datasets_dir)
        try:  # not retried blindly: the link may have dropped after the harness started
            pid_text = self._sh(self.connection(), command, "launching the harness").stdout.strip()
        except Exception as exc:  # noqa: BLE001 - classify below
            if not _is_connection_error(exc):
                raise
            self.close()
            existing = self.status(run_dir)  # reconnects; raises clearly if the node is gone
            if existing.launched:
                return self._reattach(handle, spec, existing)
            raise ConnectionLostError(f"node {self.node}: connection lost while launching the harness: {exc}") from None
        if not pid_text.isdigit():
            raise RemoteCommandError(f"node {self.node}: the harness did not start in {run_dir} (no pid recorded)")
        handle.pid = int(pid_text)
        return handle

    def _remove_unlaunched(self, run_dir: str) -> None:
        """Remove a run folder whose harness was never launched (its preparation failed), and its empty parent."""
        parent = str(PurePosixPath(run_dir).parent)
        command = (f"[ -s {shlex.quote(run_dir + '/' + PID)} ] || rm -rf {shlex.quote(run_dir)}; "
                   f"rmdir {shlex.quote(parent)} 2>/dev/null; true")  # fmt: skip
        try:
            self._call("removing the unlaunched run folder", lambda c: c.run(command))
        except RunnerError:
            pass  # the refused write is what gets reported

    def _reattach(self, handle: RunHandle, spec: RunSpec, existing: RemoteStatus) -> RunHandle:
        """The run id was launched on this node before: check it is the same run, then adopt it."""

        def read_spec(conn: SSHConnection) -> str:
            with conn.sftp().open(f"{handle.run_dir}/{RUN_SPEC}", "r") as f:
                return f.read().decode()

        try:
            remote_spec = RunSpec.from_json(self._call("reading the remote run spec", read_spec))
        except (OSError, ValueError, TypeError) as exc:
            raise RunnerError(
                f"node {self.node}: {handle.run_dir} holds a launched run without a readable {RUN_SPEC} ({exc}); "
                "refusing to start a second harness there"
            ) from None
        mine, theirs = spec.identity(), remote_spec.identity()
        diffs = [key for key in mine if mine[key] != theirs[key]]
        if diffs:
            raise RunnerError(
                f"node {self.node}: run {spec.run_id} ({spec.mode}) already exists on the node with different "
                f"{', '.join(diffs)}; run ids must be unique"
            )
        pid = self._call("reading the pid", lambda c: c.sftp().open(f"{handle.run_dir}/{PID}").read().decode())
        handle.pid = int(pid.strip()) if pid.strip().isdigit() else None
        handle.extra["reattached"] = True
        handle.extra["state_at_reattach"] = existing.progress().state
        return handle

    # ---- poll, with reconnection
    def poll(self, handle: RunHandle) -> RunProgress:
        now = time.monotonic()
        last = self._last.get(handle.run_dir, RunProgress())
        if self._outage_since is not None and now < self._next_attempt:
            return self._stale(last, now)
        try:
            status = self._status(self.connection(), handle.run_dir)
        except (HostKeyError, SSHAuthError):
            raise  # permanent: a changed host key mid-run is a security event, not a hiccup
        except Exception as exc:  # noqa: BLE001 - any transport trouble: back off and retry
            if not (isinstance(exc, (NodeUnreachableError, RemoteCommandError, StatusCutShort)) or _is_connection_error(exc)):
                raise
            if self._conn is not None:
                self._conn.close()
            if self._outage_since is None:
                self._outage_since, self._backoff = now, 0.5
            else:
                self._backoff = min(self.reconnect_backoff_max_s, self._backoff * 2)
            self._next_attempt = time.monotonic() + self._backoff
            self._outage_reason = str(exc).split(": ", 1)[-1] if isinstance(exc, RunnerError) else (str(exc) or type(exc).__name__)
            return self._stale(last, time.monotonic())
        self._outage_since = None
        if not status.exists:
            raise RunGone(f"node {self.node}: run folder {handle.run_dir} no longer exists on the node")
        progress = status.progress()
        self._last[handle.run_dir] = progress
        return progress

    def _stale(self, last: RunProgress, now: float) -> RunProgress:
        down_for = now - (self._outage_since or now)
        if down_for > self.reconnect_timeout_s:
            raise ConnectionLostError(
                f"node {self.node}: no connection to {self.host}:{self.port} for {down_for:.0f} s ({self._outage_reason}); "
                "the harness keeps running on the node: start the same run id again to reattach and collect it"
            )
        return replace(
            last,
            state=RUNNING,
            message=f"connection lost {down_for:.0f} s ago ({self._outage_reason}); reconnecting",
            stale=True,
        )

    # ---- collect, cancel, logs
    def _walk(self, sftp: Any, remote_dir: str, prefix: str = "") -> Iterator[tuple[str, int]]:
        for entry in sftp.listdir_attr(remote_dir):
            rel = f"{prefix}{entry.filename}"
            if stat.S_ISDIR(entry.st_mode or 0):
                yield from self._walk(sftp, f"{remote_dir}/{entry.filename}", rel + "/")
            elif stat.S_ISREG(entry.st_mode or 0) and entry.filename != SECRETS_FILE:
                yield rel, int(entry.st_size or 0)

    def collect(self, handle: RunHandle, dest_dir: str | Path) -> Path:
        dest = Path(dest_dir).resolve()
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay = 0.5
        while True:
            try:
                with replacing_folder(dest) as tmp:
                    self._download(handle, tmp)
                return dest
            except ConnectionLostError:
                if time.monotonic() > deadline:
                    raise
            except (NodeUnreachableError, RemoteCommandError) as exc:
                if time.monotonic() > deadline:
                    raise ConnectionLostError(f"node {self.node}: collecting {handle.run_dir} failed: {exc}") from None
            time.sleep(delay)
            delay = min(self.reconnect_backoff_max_s, delay * 2)

    def _download(self, handle: RunHandle, tmp: Path) -> None:
        def fetch(conn: SSHConnection) -> None:
            sftp = conn.sftp()
            try:
                files = list(self._walk(sftp, handle.run_dir))
            except FileNotFoundError:
                raise RunGone(f"node {self.node}: run folder {handle.run_dir} is missing; nothing to collect") from None
            for rel, size in files:
                local = tmp / rel
                try:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    sftp.get(f"{handle.run_dir}/{rel}", str(local))
                except OSError as exc:
                    if exc.errno not in _DISK_ERRNOS:
                        raise
                    raise DiskFullError(
                        f"node {self.node}: no space left on device in {tmp.parent} on the orchestrator, collecting "
                        f"{handle.run_dir} ({rel}: {_size(size)}); nothing half-copied was kept"
                    ) from None
                got = local.stat().st_size
                if got < size:  # files only grow (logs); a shorter copy is a broken transfer
                    raise OSError(f"short copy of {rel}: {got} of {size} bytes")

        self._call(f"collecting {handle.run_dir}", fetch)

    def cancel(self, handle: RunHandle) -> None:
        container = self.container
        command = render_cancel_command(
            handle.run_dir,
            grace_s=self.cancel_grace_s,
            container=container_name(handle.run_dir) if container else None,
            engine=container.engine if container else "docker",
        )
        timeout = self.cancel_grace_s + 30
        self._call("cancelling the run", lambda c: c.run(command, timeout_s=timeout))

    def log_tail(self, handle: RunHandle, lines: int = 20) -> str:
        command = f"tail -n {int(lines)} {shlex.quote(handle.run_dir + '/' + RUNNER_LOG)} 2>/dev/null; true"
        try:
            return self._call("reading the log", lambda c: c.run(command)).stdout.rstrip()
        except RunnerError:
            return ""

    def discard(self, handle: RunHandle) -> None:
        parent = str(PurePosixPath(handle.run_dir).parent)
        command = f"rm -rf {shlex.quote(handle.run_dir)} && rmdir {shlex.quote(parent)} 2>/dev/null; true"
        self._call("removing the run folder", lambda c: c.run(command))

    # ---- monitoring
    def active_runs(self) -> list[tuple[RunHandle, RunProgress]]:
        """Runs launched below the workdir that have not ended yet, with their progress (for ``monitor``)."""
        workdir = self.remote_workdir()
        listing = self._call("listing runs", lambda c: self._sh(c, render_list_command(workdir), "listing runs")).stdout
        out = []
        for rel in listing.split():
            run_id, _, mode = rel.partition("/")
            run_dir = f"{workdir}/{rel}"

            def read_scenario(conn: SSHConnection, run_dir: str = run_dir) -> str:
                try:
                    with conn.sftp().open(f"{run_dir}/{RUN_SPEC}") as f:
                        return str(json.loads(f.read().decode()).get("scenario", ""))
                except (OSError, ValueError):
                    return ""

            scenario = self._call("reading a run spec", read_scenario)
            handle = RunHandle(run_id=run_id, node=self.node, run_dir=run_dir, scenario=scenario, mode=mode)
            out.append((handle, self.status(run_dir).progress()))
        return out


def _sftp_read(sftp: Any, path: str, *, tail: int | None = None) -> str | None:
    """A remote file's text (its last ``tail`` bytes), or None if it does not exist. Works for /proc files."""
    try:
        with sftp.open(path, "rb") as f:
            if tail is not None:
                size = f.stat().st_size or 0
                if size > tail:
                    f.seek(size - tail)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return None


def _sftp_exists(sftp: Any, path: str) -> bool:
    try:
        sftp.stat(path)
        return True
    except FileNotFoundError:
        return False


def _sftp_makedirs(sftp: Any, path: str) -> None:
    """``mkdir -p`` over SFTP."""
    parts = PurePosixPath(path).parts
    current = ""
    for part in parts:
        current = part if not current else (current.rstrip("/") + "/" + part)
        try:
            sftp.stat(current)
        except FileNotFoundError:
            try:
                sftp.mkdir(current)
            except OSError:
                sftp.stat(current)  # created meanwhile by someone else; else the error stands


__all__ = [
    "SSHRunner",
    "HarnessNotInstalledError",
    "ConnectionLostError",
    "RemoteCommandError",
    "DiskFullError",
    "RemoteWriteError",
    "ContainerSettings",
    "render_container_argv",
    "render_launch_command",
    "render_status_command",
    "render_cancel_command",
    "parse_status_output",
    "version_compatible",
]
