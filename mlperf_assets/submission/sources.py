"""The tree's ``src/`` (``code/`` before v6.0): what produced each result, as its run folders record it. Per result,
``src/<benchmark>/<system>/<Scenario>/`` holds ``commands.sh`` (the exact harness command of each of its runs,
rendered from the run's ``run_spec.json`` by the one codec, ``harness/args.RunSpec``), ``user.conf`` (the one its
performance run used; ``user_<run>.conf`` where another run's differs) and ``launch.json`` (harness and LoadGen
versions, the git commit, backend, checkpoint, engine arguments, dataset, and each run's spec). The harness code
itself, as committed at the commit the runs recorded, goes to ``src/mlperf-dagster-<commit>/`` when this checkout's
git history holds it; ``src/README.md`` lists it all. Pure: no Dagster."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.backends import BACKENDS
from mlperf_assets.harness.run_folder import RUN_SPEC, USER_CONF, read_manifest

PYTHON = "python"  # the interpreter named in commands.sh (the node's own)
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout whose git history may hold the runs' commit
HARNESS_PATHS = ("pyproject.toml", "mlperf_assets/__init__.py", "mlperf_assets/errors.py", "mlperf_assets/harness")


def git_commit(harness_version: str | None) -> tuple[str | None, bool]:
    """``(commit, dirty)`` from a manifest's harness version (``0.1.0+3b084f2``, ``0.1.0+3b084f2.dirty``); no
    commit for an installed release or a source tree without git (``0.1.0+source``)."""
    m = re.fullmatch(r"[^+]+\+([0-9a-f]{7,40})(\.dirty)?", harness_version or "")
    return (m.group(1), bool(m.group(2))) if m else (None, False)


def write_harness_source(src: Path, commit: str, root: Path = PROJECT_ROOT) -> str | None:
    """``src/mlperf-dagster-<commit>/``: the harness (the SUT code a node runs) exactly as committed at ``commit``,
    taken from the git history of ``root`` (this checkout); returns the folder's name, or None when that history
    is not here (no git, another clone, a release install) and the README says so."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return None
    try:
        proc = subprocess.run([git, "-C", str(root), "archive", "--format=tar", commit, "--", *HARNESS_PATHS],
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout:
        return None
    name = f"mlperf-dagster-{commit}"
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(src / name, filter="data")
    return name


def run_folders(run) -> list[tuple[str, Path]]:
    """``(label, folder)`` of each harness run behind a result: performance, accuracy, then its compliance tests."""
    return [("performance", run.performance), ("accuracy", run.accuracy), *sorted(run.compliance.items())]


def read_spec(folder: Path) -> tuple[RunSpec | None, str | None]:
    """The run's spec as the runner recorded it, or None and why not."""
    path = folder / RUN_SPEC
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(RunSpec)}
        data["extra_args"] = tuple(data.get("extra_args") or ())
        return RunSpec(**{k: v for k, v in data.items() if k in known}), None
    except FileNotFoundError:
        return None, f"no {RUN_SPEC} recorded"
    except (OSError, ValueError, TypeError) as exc:
        return None, f"{RUN_SPEC} unreadable ({exc})"


def _command_block(label: str, folder: Path, manifest: dict[str, Any]) -> list[str]:
    spec, why = read_spec(folder)
    head = f"# {label} run {manifest.get('run_id') or folder.parent.name} (harness {manifest.get('harness_version')})"
    if spec is None:
        return [head, f"# {why}: its command cannot be given", ""]
    argv = spec.harness_argv(PYTHON, str(folder))
    return [head, shlex.join(argv), ""]


def _checkpoint(backend: dict[str, Any], default: str | None) -> str | None:
    entry = BACKENDS.get(backend.get("name") or "")
    arg = entry.checkpoint_arg if entry else None
    engine_args = backend.get("engine_args") if isinstance(backend.get("engine_args"), dict) else {}
    return engine_args.get(arg) if arg and engine_args.get(arg) else default


def launch_recipe(run, checkpoint: str | None) -> dict[str, Any]:
    """What launched the result's runs, from their manifests and specs."""
    manifest = run.manifest
    backend = manifest.get("backend") if isinstance(manifest.get("backend"), dict) else {}
    commit, dirty = git_commit(manifest.get("harness_version"))
    specs = {}
    for label, folder in run_folders(run):
        spec, why = read_spec(folder)
        specs[label] = json.loads(spec.to_json()) if spec else {"unavailable": why}
    return {
        "run_id": run.run_id,
        "node": manifest.get("node") or run.node,
        "harness": "mlperf-dagster (python -m mlperf_assets.harness run)",
        "harness_version": manifest.get("harness_version"),
        "git_commit": commit,
        "git_uncommitted_changes": dirty,
        "loadgen_version": manifest.get("loadgen_version"),
        "lg_model_name": manifest.get("lg_model_name"),
        "backend": backend.get("name"),
        "backend_kind": backend.get("kind"),
        "backend_versions": backend.get("versions") or {},
        "checkpoint": _checkpoint(backend, checkpoint),
        "engine_args": backend.get("engine_args") or {},
        "dataset": manifest.get("dataset") or {},
        "run_specs": specs,
    }


def result_src_dir(src: Path, run, system: str) -> Path:
    return src / run.benchmark / system / run.result_scenario


def write_result_sources(src: Path, run, system: str, checkpoint: str | None) -> Path:
    """``src/<benchmark>/<system>/<Scenario>/`` of one result; returns the folder."""
    out = result_src_dir(src, run, system)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh", f"# The harness runs behind {run.benchmark} {run.result_scenario} on {system}, as recorded "
             "in their run folders (run_spec.json).", "# --dataset is the prepared dataset (launch.json: dataset); "
             "--output-dir the run folder it was collected to.", ""]
    confs: dict[str, str] = {}
    for label, folder in run_folders(run):
        lines += _command_block(label, folder, read_manifest(folder))
        conf = folder / USER_CONF
        if conf.is_file():
            confs[label] = conf.read_text(encoding="utf-8", errors="replace")
    (out / "commands.sh").write_text("\n".join(lines))
    main = confs.get("performance")
    if main is not None:
        (out / USER_CONF).write_text(main)
    for label, text in confs.items():
        if label != "performance" and text != main:
            (out / f"user_{label}.conf").write_text(text)
    (out / "launch.json").write_text(json.dumps(launch_recipe(run, checkpoint), indent=2, default=str) + "\n")
    return out


def src_readme(entries: Iterable[tuple[Any, str]], code: dict[str, str | None] | None = None) -> str:
    """``src/README.md``: the harness, where its code is, and where each result's recipe is. ``entries``: (run,
    system) pairs; ``code``: git commit -> the folder holding the harness at that commit (None: not available)."""
    entries = list(entries)
    code = code or {}
    versions = sorted({str(r.manifest.get("harness_version")) for r, _ in entries if r.manifest.get("harness_version")})
    lines = [
        "# Source",
        "",
        "The benchmark harness is mlperf-dagster (`python -m mlperf_assets.harness run`), the SUT around MLCommons "
        "LoadGen (`mlcommons-loadgen`); the runs recorded harness version(s) "
        + (", ".join(f"`{v}`" for v in versions) or "unknown")
        + " (`<version>+<git commit>`; `.dirty`: run from a checkout with uncommitted changes).",
        "",
    ]
    dirty = {c for c, d in (git_commit(r.manifest.get("harness_version")) for r, _ in entries) if d}
    for commit, folder in sorted(code.items()):
        note = " (runs marked `.dirty` had uncommitted changes on top of it, which are not here)" \
            if commit in dirty else ""
        lines.append(f"- `{folder}/`: the harness as committed at `{commit}`{note}" if folder else
                     f"- the harness at commit `{commit}` is not included: it could not be taken from the git history of "
                     "the checkout that built this tree; add its `mlperf_assets/harness/` here before publishing")
    if not code:
        lines.append("- the harness code is not included (the runs recorded no git commit: an installed release); "
                     "add the `mlperf_assets/harness/` of the version above before publishing")
    lines += [
        "",
        "Per result, its folder here holds `commands.sh` (the exact harness command of each run: performance, "
        "accuracy, compliance), `user.conf` (the LoadGen settings its performance run used) and `launch.json` "
        "(backend, checkpoint, engine arguments, dataset, versions, and each run's spec).",
        "",
    ]
    for run, system in entries:
        rel = f"{run.benchmark}/{system}/{run.result_scenario}"
        commit, dirty = git_commit(run.manifest.get("harness_version"))
        lines.append(f"- `{rel}/`: run `{run.run_id}` on node `{run.node}`"
                     + (f", git commit `{commit}`{' (plus uncommitted changes)' if dirty else ''}" if commit else ""))
    return "\n".join(lines) + "\n"


def write_src_index(src: Path, entries: Iterable[tuple[Any, str]]) -> None:
    """The harness code of each commit the runs recorded, and ``src/README.md``. ``entries``: (run, system)."""
    entries = list(entries)
    commits = {c for c in (git_commit(r.manifest.get("harness_version"))[0] for r, _ in entries) if c}
    code = {c: write_harness_source(src, c) for c in sorted(commits)}
    (src / "README.md").write_text(src_readme(entries, code))
