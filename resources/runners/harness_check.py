"""Is the harness on a node (an SSH host, a container image) the orchestrator's? Shared by the remote runners.

The node's python runs a short program that prints one JSON line (``{"ok": true, "version": ...}`` or
``{"ok": false, "error": ...}``); :func:`judge_answer` turns that line into the node's facts or one clear error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlperf_assets.harness.args import HARNESS_MODULE

HARNESS_DIST = "mlperf-dagster"


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


def judge_answer(
    output: str,
    *,
    node: str,
    python: str,
    where: str,
    exit_code: Any,
    fix: str,
    check_version: bool,
    error: type[Exception],
) -> dict[str, Any]:
    """The check program's answer (its last output line) -> its facts (``where``: "on the node", "in image X"); ``error`` with the fix when the node's python
    did not answer, cannot import the harness, or (with ``check_version``) runs another major.minor release."""
    try:
        info = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise error(
            f"node {node}: {python} {where} did not answer the harness check "
            f"(exit code {exit_code}: {output.strip()[-300:] or 'no output'})"
        ) from None
    if not isinstance(info, dict):
        raise error(
            f"node {node}: {python} {where} answered the harness check with something else than its JSON object: "
            f"{output.strip().splitlines()[-1][:200]}"
        )
    if not info.get("ok"):
        raise error(
            f"node {node}: {python} (Python {info.get('python')}) {where} cannot import {HARNESS_MODULE} "
            f"({info.get('error')}); {fix}"
        )
    theirs, ours = str(info.get("version") or ""), local_harness_version()
    if check_version and not version_compatible(ours, theirs):
        raise error(
            f"node {node}: the harness {where} is version {theirs or 'unknown'}, the orchestrator is {ours} "
            f"(major.minor must match); {fix}"
        )
    return info
