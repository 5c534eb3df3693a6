"""A private OpenSSH server on 127.0.0.1 for tests: its own config, host key, authorized_keys and port.

Needs the Debian package ``openssh-server`` (``/usr/sbin/sshd``); the system sshd is neither needed nor touched.
``stop()`` drops every open connection too (the listener and its per-connection ``sshd`` children), which is how
tests simulate a network failure; ``start()`` again listens on the same port with the same host key.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER_CANDIDATES = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")


def sshd_available() -> str | None:
    """None when a private sshd can run here, else the reason it cannot."""
    if not Path(SSHD).exists():
        return "OpenSSH server not installed (apt-get install -y openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen not installed (apt-get install -y openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, passphrase: str = "", comment: str = "test") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


@dataclass
class PrivateSSHD:
    root: Path
    port: int = 0
    user: str = ""

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.user = self.user or getpass.getuser()
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.authorized_keys = self.root / "authorized_keys"
        self.config = self.root / "sshd_config"
        self.pid_file = self.root / "sshd.pid"
        self.log = self.root / "sshd.log"
        self._proc: subprocess.Popen | None = None
        if not self.host_key.exists():
            keygen(self.host_key, comment="test-host")
        self.authorized_keys.touch()
        sftp = next((p for p in SFTP_SERVER_CANDIDATES if Path(p).exists()), "internal-sftp")
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pid_file}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "StrictModes no",  # keys live under /tmp
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    f"Subsystem sftp {sftp}",
                    "LogLevel VERBOSE",
                    "MaxStartups 50",
                    "",
                ]
            )
        )

    # ---- keys -------------------------------------------------------------------------------------
    def authorize(self, public_key_file: Path) -> None:
        with self.authorized_keys.open("a") as fh:
            fh.write(public_key_file.read_text().strip() + "\n")

    def known_hosts_line(self, host_key: Path | None = None) -> str:
        """The known_hosts entry for this server (``[127.0.0.1]:PORT ssh-ed25519 AAAA...``)."""
        pub = Path(str(host_key or self.host_key) + ".pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n"

    def write_known_hosts(self, path: Path, host_key: Path | None = None) -> Path:
        path.write_text(self.known_hosts_line(host_key))
        return path

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        try:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory (sshd as root)
        except PermissionError:
            pass  # not root: sshd then runs without privilege separation for this user only
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"sshd config rejected: {check.stderr.strip()}")
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited at start: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.settimeout(2)
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Stop the listener and drop every open connection (processes spawned by sessions keep running)."""
        if self._proc is None:
            return
        victims = [self._proc.pid, *_sshd_descendants(self._proc.pid)]
        for pid in reversed(victims):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc.wait(timeout=10)
        self._proc = None
        # the port is free again once the listener is gone
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.02)
            except OSError:
                return

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def _sshd_descendants(pid: int) -> list[int]:
    """Descendants of ``pid`` whose command is sshd (the per-connection servers), depth first."""
    children: dict[int, list[int]] = {}
    comm: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        comm[int(entry.name)] = name
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        p = stack.pop()
        if comm.get(p) == "sshd":
            out.append(p)
            stack.extend(children.get(p, []))
    return out
