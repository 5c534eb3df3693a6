"""run_manifest.json: provenance of one harness run, written atomically at start ("running") and at the end.

The final record must reach the disk even when the disk is full (finding F7: a manifest left ``running`` after the
harness exited). So ``begin`` also writes a small reserve file (``.run_manifest.reserve``) that ``finish`` deletes
just before the final write, and if the atomic write still fails, ``finish`` overwrites the existing manifest in place
with the compact JSON record padded with spaces to the old length (overwriting allocated bytes needs no new space).
Only if both fail does ``finish`` raise :class:`OutputError`; the harness then still exits non-zero.
"""

from __future__ import annotations

import errno
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OutputError
from .files import write_json_atomic
from .progress import utc_now
from .run_folder import MANIFEST_RESERVE, RUN_MANIFEST
from .telemetry import select_visible

RESERVE_BYTES = 64 * 1024
SCHEMA = 1
GPU_QUERY = "index,name,uuid,memory.total,driver_version"


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def harness_version() -> str:
    """The harness's version for the manifest. Run from a source checkout (this file under a folder whose
    pyproject.toml names mlperf-dagster, as with PYTHONPATH=checkout or an editable install): the pyproject version +
    the git commit, ``0.1.0+3b084f2`` (``.dirty`` appended when tracked files are modified), or ``0.1.0+source``
    where git or the repository is absent. Otherwise the installed distribution's version."""
    root = Path(__file__).resolve().parents[2]
    source = _pyproject_version(root / "pyproject.toml")
    if source is None:
        return package_version("mlperf-dagster") or "unknown"
    return f"{source}+{_git_describe(root) or 'source'}"


def _pyproject_version(path: Path) -> str | None:
    try:
        import tomllib

        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError, ImportError):
        return None
    if project.get("name") != "mlperf-dagster" or not project.get("version"):
        return None
    return str(project["version"])


def _git_describe(root: Path) -> str | None:
    """``<short commit>`` or ``<short commit>.dirty``; None without git or outside a repository (never raises)."""
    if not (root / ".git").exists():
        return None
    git = shutil.which("git")
    if not git:
        return None
    try:
        head = subprocess.run([git, "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        status = subprocess.run([git, "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return head.stdout.strip() + (".dirty" if dirty else "")


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }


def parse_nvidia_smi_csv(text: str) -> list[dict[str, str]]:
    """``nvidia-smi --query-gpu=... --format=csv`` output (header line first) as one dict per GPU."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    header = [h.strip().split(" [")[0] for h in lines[0].split(",")]
    return [dict(zip(header, (v.strip() for v in ln.split(",")))) for ln in lines[1:]]


def visible_gpus(gpus: list[dict[str, str]], cuda_visible: str | None) -> list[dict[str, str]]:
    """The GPUs this run can use: nvidia-smi lists the whole host, ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs)
    narrows it, as CUDA and the telemetry sampler read it (a run on GPU 1 of an 8-GPU host used one GPU)."""
    devices = []
    for g in gpus:
        try:
            devices.append((int(g.get("index", "")), g.get("uuid", "")))
        except ValueError:
            return gpus  # not nvidia-smi's usual columns: keep the list as it came
    keep = set(select_visible(devices, cuda_visible))
    return [g for g, (i, _) in zip(gpus, devices) if i in keep]


def gpu_info(timeout_s: float = 10.0) -> list[dict[str, str]]:
    """The GPUs visible to this process (nvidia-smi's list narrowed by ``CUDA_VISIBLE_DEVICES``)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        proc = subprocess.run([exe, f"--query-gpu={GPU_QUERY}", "--format=csv"], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    return visible_gpus(parse_nvidia_smi_csv(proc.stdout), os.environ.get("CUDA_VISIBLE_DEVICES"))


@dataclass
class RunManifest:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def begin(cls, out_dir: Path, **fields: Any) -> "RunManifest":
        data = {
            "schema": SCHEMA,
            "run_id": None,
            "node": None,
            "harness_version": harness_version(),
            "loadgen_version": package_version("mlcommons-loadgen"),
            "benchmark": None,
            "lg_model_name": None,
            "scenario": None,
            "mode": None,
            "backend": {"name": None, "kind": None, "versions": {}, "engine_args": {}, "token_ids": None},
            "dataset": {},
            "settings": {},
            "requested_settings": {},
            "performance_sample_count": None,
            "performance_sample_count_note": None,
            "host": host_info(),
            "gpus": gpu_info(),
            "telemetry": None,  # telemetry.py's record (summary over LoadGen's window), or {"enabled": false}
            "started_at": utc_now(),
            "finished_at": None,
            "exit_status": "running",
            "error": None,
        }
        data.update(fields)
        m = cls(out_dir / RUN_MANIFEST, data)
        m.write()
        m._make_reserve()
        return m

    @property
    def reserve_path(self) -> Path:
        return self.path.parent / MANIFEST_RESERVE

    def update(self, **fields: Any) -> None:
        self.data.update(fields)

    def write(self) -> None:
        """Atomically; :class:`OutputError` naming the manifest if it cannot be written."""
        try:
            write_json_atomic(self.path, self.data, indent=2)
        except OSError as exc:
            raise OutputError(self.path, exc) from None

    def finish(self, status: str, error: str | None = None, **fields: Any) -> None:
        """The final record; on a full disk through the reserve, then in place (see the module docstring)."""
        self.data.update(fields)
        self.data["exit_status"] = status
        self.data["error"] = error
        self.data["finished_at"] = utc_now()
        self._drop_reserve()
        try:
            self.write()
        except OutputError as first:
            try:
                self._write_in_place()
            except OSError:
                raise first from None

    def _make_reserve(self) -> None:
        text = b"space kept free for the final record of run_manifest.json; deleted when the run ends\n"
        try:
            with open(self.reserve_path, "wb") as fh:
                fh.write(text.ljust(RESERVE_BYTES, b" "))
        except OSError:
            self._drop_reserve()  # a disk this full fails the run at its next write anyway

    def _drop_reserve(self) -> None:
        try:
            self.reserve_path.unlink(missing_ok=True)
        except OSError:
            pass

    def _write_in_place(self) -> None:
        """Overwrite the manifest's existing bytes with the compact record, padded with spaces (valid JSON)."""
        new = json.dumps(self.data, ensure_ascii=False).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            old = os.fstat(fd).st_size
            if len(new) + 1 > old:
                raise OSError(errno.ENOSPC, "the final record is longer than the manifest it replaces")
            os.pwrite(fd, new + b" " * (old - len(new) - 1) + b"\n", 0)
        finally:
            os.close(fd)
