"""MLCommons' MLPerf Endpoints reference client for tests: its Python 3.12 venv, built once and cached, and its echo
server as a fixture.

The client is the pinned, unmodified copy in ``../shared/reference/mlcommons_endpoints`` (``PINNED.md``). Its venv
lives in ``~/.cache/mlperf-dagster/endpoints-client`` (``$MLPERF_DAGSTER_ENDPOINTS_CLIENT`` overrides): an existing
venv is reused when its installed ``inference_endpoint`` sources are byte-identical to the pinned ones (then the
pinned tree's digest is remembered in ``.pinned-digest``), else it is rebuilt: ``python3.12 -m venv`` + ``pip install <pinned copy>`` (about
90 s, every dependency from the package registry). No Python 3.12 or no pinned copy: the tests that need the client
are skipped with the reason.

    python tests/support/endpoints_client.py      # build (or check) the venv and print its folder
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

PROJECT = Path(__file__).resolve().parents[2]
PINNED = PROJECT.parent / "shared" / "reference" / "mlcommons_endpoints"
CLIENT_DIR = Path(os.environ.get("MLPERF_DAGSTER_ENDPOINTS_CLIENT",
                                 Path.home() / ".cache" / "mlperf-dagster" / "endpoints-client"))
DIGEST_FILE = ".pinned-digest"
STORIES = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail" / "stories"


def _digest(package_dir: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(package_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _same_sources(installed: Path, pinned: Path) -> bool:
    """Every installed source file is the pinned copy's, byte for byte (a wheel leaves out a few sub-projects)."""
    files = [p for p in installed.rglob("*.py") if "__pycache__" not in p.parts]
    return bool(files) and all((pinned / p.relative_to(installed)).is_file()
                               and (pinned / p.relative_to(installed)).read_bytes() == p.read_bytes() for p in files)


def pinned_digest() -> str:
    return _digest(PINNED / "src" / "inference_endpoint")


def _installed_package(venv: Path) -> Path | None:
    found = sorted(venv.glob("lib/python3.*/site-packages/inference_endpoint"))
    return found[0] if found else None


def python312() -> str | None:
    """A Python 3.12 that runs (pyenv's shim may refuse unless the version is selected)."""
    candidates = []
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10).stdout.strip()
        if root:
            candidates += sorted(str(p) for p in Path(root).glob("versions/3.12*/bin/python3.12"))
    except (OSError, subprocess.SubprocessError):
        pass
    candidates += [p for p in (shutil.which("python3.12"),) if p]
    for exe in candidates:
        try:
            if subprocess.run([exe, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                              capture_output=True, timeout=30).returncode == 0:
                return exe
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def client_ready(venv: Path = CLIENT_DIR) -> bool:
    """The venv's client is the pinned one (its digest checked once, then remembered)."""
    if not (venv / "bin" / "inference-endpoint").is_file() or not PINNED.is_dir():
        return False
    want = pinned_digest()
    marker = venv / DIGEST_FILE
    if marker.is_file() and marker.read_text().strip() == want:
        return True
    package = _installed_package(venv)
    if package is None or not _same_sources(package, PINNED / "src" / "inference_endpoint"):
        return False
    marker.write_text(want + "\n")
    return True


def ensure_client(venv: Path = CLIENT_DIR) -> Path:
    """The venv with the pinned client, built when missing or different; pytest.skip when it cannot be built."""
    if client_ready(venv):
        return venv
    if not PINNED.is_dir():
        pytest.skip(f"no pinned MLPerf Endpoints client at {PINNED}")
    exe = python312()
    if exe is None:
        pytest.skip("no Python 3.12 here: the MLPerf Endpoints reference client needs it")
    shutil.rmtree(venv, ignore_errors=True)  # a venv's scripts name its folder: built in place
    subprocess.run([exe, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(PINNED)], capture_output=True,
                         text=True, timeout=1800)
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(f"cannot install the pinned client: {pip.stderr.strip().splitlines()[-1:]}")
    if not client_ready(venv):
        pytest.skip(f"the client built in {venv} is not the pinned one")
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listened on port {port} within {timeout_s} s")


@contextlib.contextmanager
def echo_server(venv: Path, log: Path) -> Iterator[str]:
    """The client's own echo server on a free port; yields its URL and stops it (this process's child only)."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "inference_endpoint.testing.echo_server",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    print(ensure_client())
    sys.exit(0)
