"""``SSHConnection``: one authenticated paramiko connection to a node, the transport the SSH runner and the Docker
runner's ``ssh://`` engines share (not a runner itself).

Security: host keys are checked against ``known_hosts`` and an unknown or changed key is refused (no silent accept),
with a message naming the offered fingerprint and the ``ssh-keyscan`` fix. The key's passphrase is read from the
variable ``key_passphrase_env`` names when the connection is made, never stored.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import time
from dataclasses import dataclass
from getpass import getuser
from typing import Any

import paramiko

from mlperf_assets.config import SSHNode

from .base import RunnerError, RunUnreachable


# ---------------------------------------------------------------------------------------------- errors
class SSHRunnerError(RunnerError):
    """Base of the SSH runner's errors; the message names the node."""


class HostKeyError(SSHRunnerError, RunUnreachable):
    """The node's host key is not in known_hosts, or differs from the one recorded there."""


class SSHAuthError(SSHRunnerError, RunUnreachable):
    """The key was refused, cannot be read, or needs a passphrase that is not available."""


class NodeUnreachableError(SSHRunnerError, RunUnreachable):
    """No TCP/SSH connection could be made (refused, timed out, name not resolved)."""


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

    def __init__(self, settings: SSHNode) -> None:
        self.settings = settings
        self.node, self.host, self.port = settings.name, settings.host, settings.port
        self.user = settings.user or getuser()
        self.key_file = os.path.expanduser(str(settings.key_file)) if settings.key_file else None
        self.known_hosts = os.path.expanduser(str(settings.known_hosts))
        self.passphrase_env = settings.key_passphrase_env  # the variable's NAME; its value is read in _load_key
        self.connect_timeout_s = settings.connect_timeout_s
        self.command_timeout_s = settings.command_timeout_s
        self.keepalive_s = settings.keepalive_s
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


__all__ = [
    "SSHConnection",
    "CommandResult",
    "SSHRunnerError",
    "HostKeyError",
    "SSHAuthError",
    "NodeUnreachableError",
    "fingerprint",
    "known_hosts_name",
    "keyscan_hint",
]
