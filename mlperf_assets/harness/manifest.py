"""run_manifest.json: provenance of one harness run, written atomically at start ("running") and at the end."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import write_json_atomic
from .progress import utc_now

MANIFEST_FILE = "run_manifest.json"
SCHEMA = 1
GPU_QUERY = "index,name,uuid,memory.total,driver_version"


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


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


def gpu_info(timeout_s: float = 10.0) -> list[dict[str, str]]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        proc = subprocess.run([exe, f"--query-gpu={GPU_QUERY}", "--format=csv"], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi_csv(proc.stdout) if proc.returncode == 0 else []


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
            "harness_version": package_version("mlperf-dagster"),
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
            "started_at": utc_now(),
            "finished_at": None,
            "exit_status": "running",
            "error": None,
        }
        data.update(fields)
        m = cls(out_dir / MANIFEST_FILE, data)
        m.write()
        return m

    def update(self, **fields: Any) -> None:
        self.data.update(fields)

    def write(self) -> None:
        write_json_atomic(self.path, self.data, indent=2)

    def finish(self, status: str, error: str | None = None, **fields: Any) -> None:
        self.data.update(fields)
        self.data["exit_status"] = status
        self.data["error"] = error
        self.data["finished_at"] = utc_now()
        self.write()
