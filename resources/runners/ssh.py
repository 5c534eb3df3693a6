"""``SSHRunner``: the harness on a GPU node reached over SSH, detached so it outlives the connection.

One run = one folder ``<workdir>/<run_id>/<mode>`` on the node holding ``run_spec.json``, ``pid``, the
harness outputs (contract A), ``runner.log`` and ``exit_code`` (written by the exit-code supervisor of
``base.wrapped_argv``). The harness is started with ``setsid nohup ... &`` in its own session, so a dropped
connection or a dead orchestrator does not stop it; everything the runner needs later is in that folder:

- ``poll`` runs one small shell command that reports whether the pid is alive, the exit code and the tail of
  ``progress.jsonl``. On a dropped connection it keeps returning the last progress (with a "reconnecting"
  message) while reconnecting with exponential backoff, and raises only after ``reconnect_timeout_s``.
- ``start`` on a run id whose folder already holds a launched run reattaches to it instead of starting a
  second harness (an orchestrator restarted mid-run picks the run up where it is).
- ``collect`` copies the folder over SFTP into a temporary folder beside the destination, checks every file's
  size, then renames it into place: the artifact store never sees a half-copied run.
- ``cancel`` signals the whole process group on the node (SIGINT, then SIGTERM, then SIGKILL).

Security: host keys are checked against ``known_hosts`` and an unknown or changed key is refused (no
silent accept); the key's passphrase comes from an environment variable named in the config; every value
that reaches the remote shell goes through ``shlex.quote`` (the pure ``render_*`` functions build all of it).

Container mode (``container_image`` set): the supervisor and harness run inside
``docker run --gpus N ...`` (or podman with CDI devices), with the run folder and the dataset folder
mounted at the same paths, so paths and files are identical to the bare mode.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import socket
import stat
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import paramiko
from pydantic import Field, PrivateAttr

from .base import (
    CANCEL_MARKER_FILE,
    EXIT_CODE_FILE,
    HARNESS_MODULE,
    PROGRESS_FILE,
    RUNNER_LOG_FILE,
    RUNNING,
    SPEC_FILE,
    BenchmarkRunner,
    RunHandle,
    RunnerError,
    RunProgress,
    RunSpec,
    progress_from_texts,
    wrapped_argv,
)

PID_FILE = "pid"  # the supervisor's pid = its process group and session id
SECRETS_FILE = ".forward.env"  # forwarded environment (0600), read and deleted by the launch command
DATASETS_DIR = "_datasets"  # below the workdir; "_" cannot start a run id, so it never clashes with a run
HARNESS_DIST = "mlperf-dagster"
STATUS_MARK = "@@mlperf-status"


# ---------------------------------------------------------------------------------------------- errors
class SSHRunnerError(RunnerError):
    """Base of the SSH runner's errors; the message names the node."""


class HostKeyError(SSHRunnerError):
    """The node's host key is not in known_hosts, or differs from the one recorded there."""


class SSHAuthError(SSHRunnerError):
    """The key was refused, cannot be read, or needs a passphrase that is not available."""


class NodeUnreachableError(SSHRunnerError):
    """No TCP/SSH connection could be made (refused, timed out, name not resolved)."""


class HarnessNotInstalledError(SSHRunnerError):
    """The node's python cannot import the harness, or has an incompatible version of it."""


class ConnectionLostError(SSHRunnerError):
    """The connection dropped and could not be re-established within the reconnect timeout."""


class RemoteCommandError(SSHRunnerError):
    """A remote helper command failed or timed out."""


# ------------------------------------------------------------------------------------- pure helpers
def fingerprint(key: Any) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def keyscan_hint(host: str, port: int, known_hosts: str) -> str:
    return (
        f"check the node's fingerprint out of band (on the node: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "
        f"then add it: ssh-keyscan -p {port} {shlex.quote(host)} >> {shlex.quote(known_hosts)}"
    )


def version_compatible(local: str, remote: str) -> bool:
    """Same major and minor release (``0.1.3`` works with ``0.1.0``; ``0.2.0`` does not)."""

    def major_minor(v: str) -> tuple[str, ...]:
        return tuple(re.split(r"[.+-]", v.strip())[:2])

    return major_minor(local) == major_minor(remote)


def local_harness_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(HARNESS_DIST)
    except metadata.PackageNotFoundError:  # running from a source tree without installing
        import mlperf_assets

        return str(getattr(mlperf_assets, "__version__", "0+unknown"))


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
        f"rm -f {PID_FILE}; "
        f"setsid nohup sh -c {q(inner)} sh {shlex.join(argv)} > /dev/null 2>&1 < /dev/null & "
        f"i=0; while [ ! -s {PID_FILE} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
        f"cat {PID_FILE} 2>/dev/null || echo none"
    )


def _alive_snippet(run_dir: str) -> str:
    """Shell code setting ``a`` to 1 if the pid in ``pid`` runs (not a zombie) and belongs to this run folder
    (one of its arguments mentions the folder: the supervisor's, or ``docker run -v DIR:DIR``'s)."""
    q = shlex.quote(run_dir)
    return (
        f"p=$(cat {q}/{PID_FILE} 2>/dev/null); a=0; "
        'if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then '
        '  st=$(sed "s/.*) //" /proc/$p/stat 2>/dev/null | cut -d" " -f1); '
        f'  if [ "$st" != Z ] && tr "\\000" "\\n" < /proc/$p/cmdline 2>/dev/null | grep -qF -- {q}; then a=1; '
        f'  elif [ ! -e /proc/$p/cmdline ] && [ "$st" != Z ]; then a=1; fi; '
        "fi; "
    )


def render_status_command(run_dir: str) -> str:
    """One round trip: ``@@mlperf-status <dir-exists> <pid-file> <alive> <exit code|-> <cancel>`` then the
    tail of progress.jsonl. ``alive`` is read before ``exit_code`` (the supervisor writes the file, then exits)."""
    q = shlex.quote(run_dir)
    return (
        f"if [ ! -d {q} ]; then echo '{STATUS_MARK} 0 0 0 - 0'; exit 0; fi; "
        + _alive_snippet(run_dir)
        + f"e=$(cat {q}/{EXIT_CODE_FILE} 2>/dev/null | tr -d ' \\n'); [ -n \"$e\" ] || e=-; "
        f"c=0; [ -f {q}/{CANCEL_MARKER_FILE} ] && c=1; "
        f"f=0; [ -s {q}/{PID_FILE} ] && f=1; "
        f'echo "{STATUS_MARK} 1 $f $a $e $c"; '
        f"tail -c 8192 {q}/{PROGRESS_FILE} 2>/dev/null; true"
    )


@dataclass(frozen=True)
class RemoteStatus:
    exists: bool
    launched: bool  # a pid file exists: the harness was started at some point
    alive: bool
    exit_code_text: str | None
    cancel_requested: bool
    progress_text: str

    def progress(self) -> RunProgress:
        return progress_from_texts(
            self.progress_text or None,
            self.exit_code_text,
            alive=self.alive,
            cancel_requested=self.cancel_requested,
        )


def parse_status_output(text: str) -> RemoteStatus:
    head, _, rest = text.partition("\n")
    parts = head.split()
    if len(parts) != 6 or parts[0] != STATUS_MARK:
        raise ValueError(f"unexpected status output: {head[:200]!r}")
    _, exists, launched, alive, exit_code, cancel = parts
    return RemoteStatus(
        exists=exists == "1",
        launched=launched == "1",
        alive=alive == "1",
        exit_code_text=None if exit_code == "-" else exit_code,
        cancel_requested=cancel == "1",
        progress_text=rest,
    )


def render_cancel_command(run_dir: str, *, grace_s: float, container: str | None = None, engine: str = "docker") -> str:
    """Mark the run cancelled and signal its process group: SIGINT, wait ``grace_s``; SIGTERM, 3 s; SIGKILL.

    Stops as soon as the supervisor has written ``exit_code`` or the group is gone. In container mode the
    container is killed too (the ``docker run`` client's group may not reach the container's processes)."""
    q = shlex.quote(run_dir)
    steps = max(1, int(grace_s / 0.2))
    script = (
        f"cd {q} 2>/dev/null || exit 0; "
        f"[ -f {EXIT_CODE_FILE} ] && exit 0; "
        f"[ -f {CANCEL_MARKER_FILE} ] || date +%s > {CANCEL_MARKER_FILE}; "
        f"p=$(cat {PID_FILE} 2>/dev/null); [ -n \"$p\" ] || exit 0; "
    )
    if container:
        script += f"{shlex.quote(engine)} kill --signal INT {shlex.quote(container)} > /dev/null 2>&1; "
    script += (
        f"for s in INT:{steps} TERM:15 KILL:10; do "
        "  sig=${s%%:*}; n=${s##*:}; "
        '  kill -$sig -$p 2>/dev/null || break; '
        "  i=0; while [ $i -lt $n ]; do "
        f"    [ -f {EXIT_CODE_FILE} ] && break 2; "
        '    kill -0 -$p 2>/dev/null || break 2; '
        "    sleep 0.2; i=$((i+1)); "
        "  done; "
        "done; "
    )
    if container:
        script += f"{shlex.quote(engine)} rm -f {shlex.quote(container)} > /dev/null 2>&1; "
    script += "true"
    return script


def render_list_command(workdir: str) -> str:
    """Run folders below ``workdir`` that were launched and have no exit code yet, one ``<run_id>/<mode>`` a line."""
    return (
        f"cd {shlex.quote(workdir)} 2>/dev/null || exit 0; "
        f'for d in */*/; do [ -f "${{d}}{PID_FILE}" ] && [ ! -f "${{d}}{EXIT_CODE_FILE}" ] && echo "${{d%/}}"; done; true'
    )


def sha256_file(path: Path, _cache: dict[tuple[str, int, int], str] = {}) -> str:  # noqa: B006 - memo
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


# ------------------------------------------------------------------------------------------ connection
class _RefuseUnknownHost(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, refusing with a message naming the host, the offered fingerprint and the fix."""

    def __init__(self, node: str, host: str, port: int, known_hosts: str) -> None:
        self.node, self.host, self.port, self.known_hosts = node, host, port, known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise HostKeyError(
            f"node {self.node}: host key of {known_hosts_name(self.host, self.port)} is not in {self.known_hosts} "
            f"(the server offered {key.get_name()} {fingerprint(key)}); refusing to connect. "
            + keyscan_hint(self.host, self.port, self.known_hosts)
        )


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


class SSHConnection:
    """One authenticated paramiko connection to a node, with clear errors and a command timeout."""

    def __init__(
        self,
        *,
        node: str,
        host: str,
        port: int,
        user: str,
        key_file: str | None,
        known_hosts: str,
        passphrase_env: str | None,
        connect_timeout_s: float,
        command_timeout_s: float,
        keepalive_s: float,
    ) -> None:
        self.node, self.host, self.port, self.user = node, host, port, user
        self.key_file = os.path.expanduser(key_file) if key_file else None
        self.known_hosts = os.path.expanduser(known_hosts)
        self.passphrase_env = passphrase_env
        self.connect_timeout_s, self.command_timeout_s, self.keepalive_s = connect_timeout_s, command_timeout_s, keepalive_s
        self._client: Any = None
        self._sftp: Any = None

    # ---- connecting
    def _load_key(self) -> Any:
        """The private key (None: let paramiko use the SSH agent and the default ~/.ssh keys)."""
        if self.key_file is None:
            return None
        if not os.path.isfile(self.key_file):
            raise SSHAuthError(f"node {self.node}: key file {self.key_file} does not exist")
        passphrase = None
        if self.passphrase_env:
            passphrase = os.environ.get(self.passphrase_env)
            if passphrase is None:
                raise SSHAuthError(
                    f"node {self.node}: environment variable {self.passphrase_env} (passphrase of {self.key_file}) is not set"
                )
        try:
            return paramiko.PKey.from_path(self.key_file, password=passphrase.encode() if passphrase is not None else None)
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            if isinstance(exc, TypeError) and "password" not in str(exc).lower():
                raise
            raise SSHAuthError(
                f"node {self.node}: key {self.key_file} is encrypted; name the environment variable holding its "
                "passphrase with key_passphrase_env in the node's config"
            ) from None
        except (paramiko.SSHException, ValueError) as exc:
            hint = " (wrong passphrase?)" if passphrase else ""
            raise SSHAuthError(f"node {self.node}: cannot read key {self.key_file}{hint}: {exc}") from None

    def connect(self) -> None:
        self.close()
        if not os.path.isfile(self.known_hosts):
            raise HostKeyError(
                f"node {self.node}: known_hosts file {self.known_hosts} does not exist; "
                + keyscan_hint(self.host, self.port, self.known_hosts)
            )
        pkey = self._load_key()
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(self.known_hosts)
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"node {self.node}: cannot read known_hosts file {self.known_hosts}: {exc}") from None
        client.set_missing_host_key_policy(_RefuseUnknownHost(self.node, self.host, self.port, self.known_hosts))
        where = f"{self.user}@{self.host}:{self.port}"
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=pkey,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
                look_for_keys=pkey is None,
                allow_agent=pkey is None,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            name = known_hosts_name(self.host, self.port)
            raise HostKeyError(
                f"node {self.node}: host key of {name} CHANGED: {self.known_hosts} records {fingerprint(exc.expected_key)}, "
                f"the server offered {fingerprint(exc.key)}; refusing to connect (possible man-in-the-middle). If the node "
                f"was reinstalled, remove the old entry (ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(self.known_hosts)}), "
                + keyscan_hint(self.host, self.port, self.known_hosts)
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            which = f"key {self.key_file} ({pkey.get_name()} {fingerprint(pkey)})" if pkey else "the agent's and ~/.ssh's keys"
            raise SSHAuthError(
                f"node {self.node}: {where} refused {which}; add the public key to ~{self.user}/.ssh/authorized_keys "
                "on the node (ssh-copy-id), or set key_file in the node's config"
            ) from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise NodeUnreachableError(
                f"node {self.node}: cannot reach {where}: no answer within {self.connect_timeout_s:g} s"
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                reason = "connection refused (is sshd running and the port right?)"
            raise NodeUnreachableError(f"node {self.node}: cannot reach {where}: {reason}") from None
        transport = client.get_transport()
        if self.keepalive_s:
            transport.set_keepalive(int(max(1, self.keepalive_s)))
        self._client = client

    @property
    def active(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def close(self) -> None:
        for thing in (self._sftp, self._client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass
        self._sftp = self._client = None

    # ---- commands and files
    def run(self, command: str, *, timeout_s: float | None = None, stdin: bytes | None = None) -> CommandResult:
        """Run ``command`` through the node's shell; raises ConnectionError-like exceptions on a dead link."""
        timeout = timeout_s or self.command_timeout_s
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise ConnectionResetError("SSH connection is not active")
        channel = transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                if channel.recv_ready():
                    out += channel.recv(65536)
                    continue
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    continue
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"remote command did not finish within {timeout:g} s")
                if not transport.is_active():
                    raise ConnectionResetError("SSH connection dropped during a command")
                time.sleep(0.005)
            return CommandResult(channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace"))
        finally:
            channel.close()

    def sftp(self) -> Any:
        if self._sftp is None:
            if not self.active:
                raise ConnectionResetError("SSH connection is not active")
            self._sftp = self._client.open_sftp()
            self._sftp.get_channel().settimeout(self.command_timeout_s)
        return self._sftp


_CONNECTION_ERRORS = (OSError, EOFError, TimeoutError)  # socket errors, dropped links, command timeouts


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (RunnerError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False  # a file-level answer from a live server, not a broken link
    return isinstance(exc, _CONNECTION_ERRORS + (paramiko.SSHException,))


# ---------------------------------------------------------------------------------------------- runner
class SSHRunner(BenchmarkRunner):
    """Runs the harness on one SSH node.

    ``host``/``port``/``user``: where to log in; ``key_file``: private key (None: the SSH agent and the
    default ``~/.ssh/id_*`` keys); ``key_passphrase_env``: name of the environment variable holding the
    key's passphrase (never the passphrase itself); ``known_hosts``: host keys
    to verify against (an unknown or changed key is refused); ``workdir``: run folders on the node;
    ``python``: interpreter with the harness installed (inside the image in container mode);
    ``forward_env``: names of orchestrator environment variables passed to the harness (``HF_TOKEN``),
    through a 0600 file the launch reads and deletes, never the command line; ``container_engine`` and
    ``container_image``: container mode; ``reconnect_timeout_s``: how long a lost connection is retried
    (with backoff up to ``reconnect_backoff_max_s``) before the run is reported lost; the harness keeps
    running on the node meanwhile and a later ``start`` of the same run id reattaches.
    """

    host: str
    port: int = 22
    user: str = Field(default_factory=lambda: os.environ.get("USER", "root"))
    key_file: str | None = None
    key_passphrase_env: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    workdir: str = "mlperf-runs"
    python: str = "python3"
    gpus: int | None = None
    forward_env: list[str] = Field(default_factory=list)
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 60.0
    keepalive_s: float = 15.0
    reconnect_timeout_s: float = 1800.0
    reconnect_backoff_max_s: float = 30.0
    cancel_grace_s: float = 10.0
    check_harness_version: bool = True
    container_engine: str | None = None
    container_image: str | None = None
    container_args: list[str] = Field(default_factory=list)

    _conn: Any = PrivateAttr(default=None)
    _workdir_abs: str | None = PrivateAttr(default=None)
    _harness_ok: bool = PrivateAttr(default=False)
    _proc_over_sftp: bool | None = PrivateAttr(default=None)
    _last: dict[str, RunProgress] = PrivateAttr(default_factory=dict)
    _outage_since: float | None = PrivateAttr(default=None)
    _next_attempt: float = PrivateAttr(default=0.0)
    _backoff: float = PrivateAttr(default=0.0)
    _outage_reason: str = PrivateAttr(default="")

    # ---- construction
    @classmethod
    def from_node_config(cls, node: Any, config: Any = None) -> "SSHRunner":
        """From a ``config`` SSH node. Optional fields the model may not have are read with defaults."""
        fields = {
            "node": node.name,
            "host": node.host,
            "port": getattr(node, "port", None) or 22,
            "user": getattr(node, "user", None) or os.environ.get("USER", "root"),
            "key_file": str(node.key_file) if getattr(node, "key_file", None) else None,
            "known_hosts": str(getattr(node, "known_hosts", None) or "~/.ssh/known_hosts"),
            "workdir": getattr(node, "workdir", None) or "mlperf-runs",
            "python": getattr(node, "python", None) or "python3",
            "gpus": getattr(node, "gpus", None),
        }
        optional = (
            "key_passphrase_env", "forward_env", "connect_timeout_s", "command_timeout_s", "keepalive_s",
            "reconnect_timeout_s", "reconnect_backoff_max_s", "cancel_grace_s", "poll_interval_s",
            "check_harness_version", "container_engine", "container_image", "container_args",
        )  # fmt: skip
        for name in optional:
            value = getattr(node, name, None)
            if value is not None:
                fields[name] = list(value) if isinstance(value, (list, tuple)) else value
        container = getattr(node, "container", None)  # config.ContainerConfig {image, engine, extra_args}
        if container:
            get = container.get if isinstance(container, dict) else lambda k, d=None: getattr(container, k, d)
            fields["container_engine"] = get("engine") or "docker"
            fields["container_image"] = get("image")
            fields["container_args"] = list(get("extra_args") or get("args") or ())
        return cls(**fields)

    @property
    def container(self) -> ContainerSettings | None:
        if not self.container_image:
            return None
        return ContainerSettings(
            engine=self.container_engine or "docker",
            image=self.container_image,
            gpus=self.gpus,
            extra_args=tuple(self.container_args),
        )

    # ---- connection management
    def _new_connection(self) -> SSHConnection:
        return SSHConnection(
            node=self.node,
            host=self.host,
            port=self.port,
            user=self.user,
            key_file=self.key_file,
            known_hosts=self.known_hosts,
            passphrase_env=self.key_passphrase_env,
            connect_timeout_s=self.connect_timeout_s,
            command_timeout_s=self.command_timeout_s,
            keepalive_s=self.keepalive_s,
        )

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

    def teardown_after_execution(self, context: Any) -> None:  # Dagster resource hook
        self.close()

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
        """The absolute workdir on the node (``~`` and relative paths are below the login's home)."""
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
        where = f"the image {self.container_image}" if self.container else "the node"
        if result.exit_code == 127 or (result.exit_code != 0 and "not found" in result.stderr):
            raise HarnessNotInstalledError(
                f"node {self.node}: python {self.python!r} not found on {where} ({result.stderr.strip()[:200]}); "
                "set `python:` in the node's config to the interpreter of the environment that has the harness"
            )
        try:
            info = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise HarnessNotInstalledError(
                f"node {self.node}: {self.python} on {where} did not answer the harness check "
                f"(exit code {result.exit_code}: {(result.stderr or result.stdout).strip()[:300]})"
            ) from None
        if not info.get("ok"):
            raise HarnessNotInstalledError(
                f"node {self.node}: {self.python} (Python {info.get('python')}) on {where} cannot import "
                f"{HARNESS_MODULE} ({info.get('error')}); {fix}"
            )
        remote_version, local_version = str(info.get("version") or ""), local_harness_version()
        if self.check_harness_version and not version_compatible(local_version, remote_version):
            raise HarnessNotInstalledError(
                f"node {self.node}: the harness on {where} is version {remote_version or 'unknown'}, the orchestrator "
                f"is {local_version} (major.minor must match); {fix}"
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
        pid_text = (_sftp_read(sftp, f"{run_dir}/{PID_FILE}") or "").strip()
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
        exit_text = _sftp_read(sftp, f"{run_dir}/{EXIT_CODE_FILE}")
        return RemoteStatus(
            exists=True,
            launched=bool(pid_text),
            alive=alive,
            exit_code_text=exit_text.strip() if exit_text and exit_text.strip() else None,
            cancel_requested=_sftp_exists(sftp, f"{run_dir}/{CANCEL_MARKER_FILE}"),
            progress_text=_sftp_read(sftp, f"{run_dir}/{PROGRESS_FILE}", tail=8192) or "",
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
        sftp.put(str(local), tmp, confirm=True)
        sftp.posix_rename(tmp, remote)
        self._put_text(sftp, remote + ".sha256", f"{digest}  {local.name}\n")
        return remote

    @staticmethod
    def _put_text(sftp: Any, remote: str, text: str, mode: int | None = None) -> None:
        tmp = f"{remote}.{time.time_ns()}.tmp"
        with sftp.open(tmp, "w") as f:
            if mode is not None:
                f.chmod(mode)
            f.write(text.encode())
        sftp.posix_rename(tmp, remote)

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
            _sftp_makedirs(conn.sftp(), run_dir)
            _sftp_makedirs(conn.sftp(), datasets_dir)
            dataset_remote = self._ensure_dataset(conn, dataset, datasets_dir)
            sftp = conn.sftp()
            self._put_text(sftp, f"{run_dir}/{SPEC_FILE}", spec.to_json())
            if self.forward_env:
                env_text = "".join(f"{name}={shlex.quote(os.environ[name])}\n" for name in self.forward_env)
                self._put_text(sftp, f"{run_dir}/{SECRETS_FILE}", env_text, mode=0o600)
            return dataset_remote

        dataset_remote = self._call("preparing the run folder", prepare)
        argv = self.launch_argv(spec, run_dir, dataset_remote, datasets_dir)
        command = render_launch_command(run_dir, argv, with_env_file=bool(self.forward_env))
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

    def _reattach(self, handle: RunHandle, spec: RunSpec, existing: RemoteStatus) -> RunHandle:
        """The run id was launched on this node before: check it is the same run, then adopt it."""

        def read_spec(conn: SSHConnection) -> str:
            with conn.sftp().open(f"{handle.run_dir}/{SPEC_FILE}", "r") as f:
                return f.read().decode()

        try:
            remote_spec = RunSpec.from_json(self._call("reading the remote run spec", read_spec))
        except (OSError, ValueError, TypeError) as exc:
            raise RunnerError(
                f"node {self.node}: {handle.run_dir} holds a launched run without a readable {SPEC_FILE} ({exc}); "
                "refusing to start a second harness there"
            ) from None
        def comparable(s: RunSpec) -> dict[str, Any]:
            return {
                "scenario": s.scenario, "mode": s.mode, "benchmark": s.benchmark, "backend": s.backend,
                "max_samples": s.max_samples, "settings": dict(s.settings), "engine_args": dict(s.engine_args),
            }  # fmt: skip

        mine, theirs = comparable(spec), comparable(remote_spec)
        diffs = [key for key in mine if mine[key] != theirs[key]]
        if diffs:
            raise RunnerError(
                f"node {self.node}: run {spec.run_id} ({spec.mode}) already exists on the node with different "
                f"{', '.join(diffs)}; run ids must be unique"
            )
        pid = self._call("reading the pid", lambda c: c.sftp().open(f"{handle.run_dir}/{PID_FILE}").read().decode())
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
            if not (isinstance(exc, (NodeUnreachableError, RemoteCommandError)) or _is_connection_error(exc)):
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
            raise RunnerError(f"node {self.node}: run folder {handle.run_dir} no longer exists on the node")
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
        )

    @property
    def disconnected_for_s(self) -> float | None:
        return None if self._outage_since is None else time.monotonic() - self._outage_since

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
        dest.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay = 0.5
        while True:
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            try:
                self._download(handle, tmp)
                if dest.exists():
                    old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
                    os.replace(dest, old)
                    os.replace(tmp, dest)
                    _rmtree(old)
                else:
                    os.replace(tmp, dest)
                return dest
            except ConnectionLostError:
                _rmtree(tmp)
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(self.reconnect_backoff_max_s, delay * 2)
            except (NodeUnreachableError, RemoteCommandError) as exc:
                _rmtree(tmp)
                if time.monotonic() > deadline:
                    raise ConnectionLostError(f"node {self.node}: collecting {handle.run_dir} failed: {exc}") from None
                time.sleep(delay)
                delay = min(self.reconnect_backoff_max_s, delay * 2)
            except BaseException:
                _rmtree(tmp)
                raise

    def _download(self, handle: RunHandle, tmp: Path) -> None:
        def fetch(conn: SSHConnection) -> None:
            sftp = conn.sftp()
            try:
                files = list(self._walk(sftp, handle.run_dir))
            except FileNotFoundError:
                raise RunnerError(f"node {self.node}: run folder {handle.run_dir} is missing; nothing to collect") from None
            for rel, size in files:
                local = tmp / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                sftp.get(f"{handle.run_dir}/{rel}", str(local))
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
        command = f"tail -n {int(lines)} {shlex.quote(handle.run_dir + '/' + RUNNER_LOG_FILE)} 2>/dev/null; true"
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
                    with conn.sftp().open(f"{run_dir}/{SPEC_FILE}") as f:
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


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "SSHRunner",
    "SSHConnection",
    "SSHRunnerError",
    "HostKeyError",
    "SSHAuthError",
    "NodeUnreachableError",
    "HarnessNotInstalledError",
    "ConnectionLostError",
    "RemoteCommandError",
    "ContainerSettings",
    "render_container_argv",
    "render_launch_command",
    "render_status_command",
    "render_cancel_command",
    "parse_status_output",
    "version_compatible",
]
