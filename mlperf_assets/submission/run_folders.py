"""What a submission tree takes from a run folder, and only that: the run's own regular files (a symbolic link could
bring any file of the machine into the tree, ``/etc/passwd`` as an accuracy log), and logs of the scenario and mode
the tree files them under, as the logs and the manifest say (not as the folder's name says). Pure: no Dagster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlperf_assets.errors import UserError
from mlperf_assets.harness.run_folder import DETAIL_LOG, RUN_MANIFEST, read_manifest

# LoadGen's test mode (the detail log's effective_test_mode) of each harness mode
LOADGEN_MODES = {"performance": "PerformanceOnly", "accuracy": "AccuracyOnly"}


def refuse_links(folder: Path) -> None:
    """:class:`UserError` naming the first symbolic link in run folder ``folder`` (the folder itself included):
    nothing of a run folder that holds one goes into a tree. Linked folders are not entered."""
    if folder.is_symlink():
        raise UserError(_link_message(folder))
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            path = Path(root) / name
            if path.is_symlink():
                raise UserError(_link_message(path))


def _link_message(path: Path) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return (f"{path}: is a symbolic link (to {target}); a submission takes only a run's own files: put the file "
            "itself there, or remove the link")


def started_at(folder: Path) -> str:
    """The run's start time (its performance manifest's ``started_at``, ISO 8601 UTC, so it sorts as text); ""
    when unknown or when the manifest is reached through a link (never followed)."""
    perf = folder / "performance"
    manifest = perf / RUN_MANIFEST
    if folder.is_symlink() or perf.is_symlink() or manifest.is_symlink():
        return ""
    value = read_manifest(perf).get("started_at")
    return value if isinstance(value, str) else ""


def _logged(detail: Path) -> dict[str, Any]:
    from mlperf_assets.loadgen_logs import parse_detail_log

    try:
        return parse_detail_log(detail).values
    except (OSError, ValueError):
        return {}


def slot_mismatch(folder: Path, scenario: str, mode: str, *, test: str | None = None) -> str | None:
    """Why the run in ``folder`` (one harness run: its detail log and manifest) is not a ``mode`` run of
    ``scenario`` (and of compliance test ``test``), or None when it is. The detail log must say so; the manifest,
    where there is one, must not say otherwise."""
    where = folder.name if test is None else f"compliance/{test}"
    values = _logged(folder / DETAIL_LOG)
    logged = (values.get("effective_scenario"), values.get("effective_test_mode"))
    if logged != (scenario, LOADGEN_MODES[mode]):
        said = f"{logged[0]} {logged[1]}" if all(logged) else "no scenario and mode"
        return f"{where}: its LoadGen log says {said}, not {scenario} {LOADGEN_MODES[mode]}"
    manifest = read_manifest(folder)
    for key, want in (("scenario", scenario), ("mode", mode)):
        if manifest.get(key) not in (None, want):
            return f"{where}: its run manifest says {key} {manifest.get(key)!r}, not {want!r}"
    if test is not None:
        record = manifest.get("compliance")
        got = record.get("test") if isinstance(record, dict) else None
        if got not in (None, test):
            return f"{where}: its run manifest says compliance test {got!r}, not {test!r}"
    return None
