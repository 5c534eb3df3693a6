"""The MLPerf Endpoints submission bundle, and the Endpoints checker's verdict on it.

:func:`build_bundle` writes ``<out>/<org>/<submission>/{src/<impl>/README.md, docs/, results/<system>/
[system_power.json], results/<system>/llama3_1-8b/r<N>/{point.yaml, system_desc.json, result_summary.json,
[accuracy_results.json], config.yaml}}`` from measured points (``endpoints.results.read_point``), into a temporary
folder renamed into place (``harness.files.replacing_folder``): never seen half-written. :func:`check_bundle` runs
the checker the user installed (``endpoints-submission-cli check-submission --json``) and returns its findings.

Pure of Dagster; the layout and file names are those checker 1.5.3.0 reads (rules §8.1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from mlperf_assets.config.endpoints_disclosure import EndpointsPower, EndpointsSystem
from mlperf_assets.endpoints import disclose
from mlperf_assets.endpoints.results import RESULT_SUMMARY, PointResults, accuracy_file
from mlperf_assets.errors import UserError
from mlperf_assets.harness import run_folder as rf
from mlperf_assets.harness.files import replacing_folder
from mlperf_assets.harness.outputs import mark_output

CHECKER_COMMAND = "endpoints-submission-cli"
POINT_YAML = "point.yaml"
SYSTEM_DESC = "system_desc.json"
SYSTEM_POWER = "system_power.json"
BUNDLE_RESULT_SUMMARY = "result_summary.json"
BUNDLE_ACCURACY = "accuracy_results.json"
BUNDLE_CONFIG = "config.yaml"
STANDARDIZED = "Standardized"


@dataclass
class Bundle:
    """A written bundle: ``root`` is the folder the checker judges (``<out>/<org>/<submission>``)."""

    out: Path
    root: Path
    system: str
    points: dict[int, Path] = field(default_factory=dict)  # r<N> -> its folder


@dataclass(frozen=True)
class BundleOptions:
    """What a bundle declares beyond the points: who submits, which division, the seed set bound at every point."""

    org: str
    submission: str
    division: str  # Standardized | Serviced | RDI
    max_supported_concurrency: int  # the declared C_max
    seed_set: str = "A"
    seeds: Mapping[str, int] = field(default_factory=dict)  # empty: the checker's published values of seed_set
    target_cohort: str | None = None  # default: the cohort the seed set was published for
    implementation: str = "vllm"


def published_seed_set(seed_set: str) -> tuple[dict[str, int], str]:
    """The three seeds of a published seed set and its cohort id, from the checker's own registry
    (``submission_checker/data/seed_sets.yaml``)."""
    try:
        import submission_checker
    except ImportError:
        raise UserError("the MLPerf Endpoints checker is not installed: pip install 'mlperf-dagster[endpoints]' "
                        "(endpoints-submission-cli)") from None
    path = Path(submission_checker.__file__).parent / "data" / "seed_sets.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    cohort = data.get("cohort") or {}
    for entry in cohort.get("seed_sets") or []:
        if str(entry.get("id")) == seed_set:
            return {k: int(entry[k]) for k in disclose.SEED_KEYS}, str(cohort.get("cohort-id"))
    raise UserError(f"seed_set {seed_set!r}: not a published seed set (the checker knows "
                    f"{', '.join(str(e.get('id')) for e in cohort.get('seed_sets') or [])})")


def _safe(text: str, what: str) -> str:
    if not text or "/" in text or text in (".", "..") or text.startswith(".") or "\0" in text:
        raise UserError(f"{what} {text!r}: must be a plain folder name (no '/', not starting with '.')")
    return text


def build_bundle(points: Sequence[PointResults], out: str | os.PathLike, *, system: EndpointsSystem,
                 power: EndpointsPower | None, options: BundleOptions,
                 machine: Mapping[str, Any] | None = None) -> Bundle:
    """Write the bundle of ``points`` (one curve of one system) to ``out`` (replaced; the caller checked it with
    ``harness.outputs.check_output_folder``). Raises :class:`UserError` with one line when a point cannot go in."""
    if not points:
        raise UserError("no measured Endpoints point to package (run `mlperf-dagster endpoints run` first)")
    org, submission = _safe(options.org, "org"), _safe(options.submission, "submission")
    system_dir_name = _safe(system.name.replace(" ", "_"), "system name")
    if options.division == STANDARDIZED and power is None:
        raise UserError("division Standardized needs the endpoints power: inventory (system_power.json, §4.5)")
    seeds, cohort = (dict(options.seeds), options.target_cohort) if options.seeds else published_seed_set(
        options.seed_set)
    cohort = options.target_cohort or cohort
    by_n: dict[int, PointResults] = {}
    for p in points:
        n = disclose.point_concurrency(p.manifest)
        if n in by_n:
            raise UserError(f"{p.folder}: a second point at r{n} (also {by_n[n].folder}); package one run per point")
        by_n[n] = p
    best = max(float(p.row.get("system_tps") or 0.0) for p in points) or 1.0
    manifests = [p.manifest for p in points]
    out = Path(out)
    try:
        with replacing_folder(out) as tmp:
            mark_output(tmp)
            root = tmp / org / submission
            src = root / "src" / options.implementation
            src.mkdir(parents=True)
            (src / "README.md").write_text(disclose.src_readme(manifests, implementation=options.implementation))
            (root / "docs").mkdir()
            (root / "docs" / "software_disclosure.md").write_text(disclose.software_disclosure(system, manifests))
            sys_dir = root / "results" / system_dir_name
            model_dir = sys_dir / disclose.MODEL_NAME
            model_dir.mkdir(parents=True)
            if power is not None:
                _write_json(sys_dir / SYSTEM_POWER,
                            disclose.system_power(power, system_desc_id=system_dir_name, cooling=system.cooling))
            for n, p in sorted(by_n.items()):
                _write_point(model_dir / f"r{n}", p, system=system, options=options, seeds=seeds, cohort=cohort,
                             tps_utilization=float(p.row.get("system_tps") or 0.0) / best, machine=machine)
    except OSError as exc:
        raise UserError(f"{out}: the bundle was not written: {exc.filename or out}: {exc.strerror or exc}") from None
    final = out.resolve() / org / submission
    return Bundle(out=out.resolve(), root=final, system=system_dir_name,
                  points={n: final / "results" / system_dir_name / disclose.MODEL_NAME / f"r{n}" for n in by_n})


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_point(dest: Path, p: PointResults, *, system: EndpointsSystem, options: BundleOptions,
                 seeds: Mapping[str, int], cohort: str, tps_utilization: float,
                 machine: Mapping[str, Any] | None) -> None:
    folder = Path(p.folder or ".")
    dest.mkdir()
    steady = None
    if (folder / rf.STEADY_STATE).is_file():
        try:
            steady = json.loads((folder / rf.STEADY_STATE).read_text())
        except ValueError:
            raise UserError(f"{folder / rf.STEADY_STATE}: not JSON") from None
    doc = disclose.point_yaml(p.manifest, division=options.division,
                              max_supported_concurrency=options.max_supported_concurrency, seed_set=options.seed_set,
                              seeds=seeds, target_cohort=cohort, model_precision=system.model_precision,
                              implementation=options.implementation, steady_state=steady)
    (dest / POINT_YAML).write_text(yaml.safe_dump(doc, sort_keys=False))
    desc = disclose.system_desc(system, division=options.division,
                                max_supported_concurrency=options.max_supported_concurrency,
                                run_manifest=rf.read_manifest(folder), machine=machine, point_manifest=p.manifest)
    desc["tps_utilization"] = round(tps_utilization, 6)
    _write_json(dest / SYSTEM_DESC, desc)
    shutil.copyfile(folder / rf.CLIENT_REPORT_DIR / RESULT_SUMMARY, dest / BUNDLE_RESULT_SUMMARY)
    config = folder / rf.CLIENT_REPORT_DIR / BUNDLE_CONFIG
    if not config.is_file():
        config = folder / rf.CLIENT_YAML
    if not config.is_file():
        raise UserError(f"{folder}: neither the client's {rf.CLIENT_REPORT_DIR}/{BUNDLE_CONFIG} nor {rf.CLIENT_YAML}: "
                        "the checker requires the point's config.yaml")
    shutil.copyfile(config, dest / BUNDLE_CONFIG)
    if p.manifest.get("accuracy"):
        acc = accuracy_file(folder)
        if acc is None:
            raise UserError(f"{folder}: an accuracy point without the client's accuracy/accuracy_results.json")
        shutil.copyfile(acc, dest / BUNDLE_ACCURACY)


# ------------------------------------------------------------------------------------------------- the checker


def checker_executable() -> str:
    """The ``endpoints-submission-cli`` beside this Python (the project venv), else on PATH."""
    beside = Path(sys.executable).parent / CHECKER_COMMAND
    if beside.is_file():
        return str(beside)
    found = shutil.which(CHECKER_COMMAND)
    if not found:
        raise UserError(f"{CHECKER_COMMAND} not found: pip install 'mlperf-dagster[endpoints]' "
                        "(endpoints-submission-cli==1.5.3.0)")
    return found


@dataclass
class CheckVerdict:
    """The checker's report: every finding (``rule, severity, message, fix, path, spec_ref``), errors first."""

    root: Path
    findings: list[dict[str, Any]]
    exit_code: int

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["severity"] == "error"]

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["severity"] == "warning"]

    @property
    def passed(self) -> bool:
        return not self.errors

    def lines(self, limit: int | None = None, *, warnings: bool = True) -> list[str]:
        """One line per error (then warning): ``ERROR rule: message (path) - fix``."""
        shown = self.errors + (self.warnings if warnings else [])
        out = []
        for f in shown[:limit]:
            where = f" ({f['path']})" if f.get("path") else ""
            fix = f" - fix: {f['fix']}" if f.get("fix") else ""
            out.append(f"{f['severity'].upper()} {f['rule']}: {f['message']}{where}{fix}")
        return out


def check_bundle(root: str | os.PathLike, *, timeout_s: float = 600) -> CheckVerdict:
    """Run ``endpoints-submission-cli check-submission ROOT --json`` and return its findings (INFO results left
    out). ``root`` is the ``<org>/<submission>`` folder."""
    root = Path(root)
    if not (root / "results").is_dir():
        raise UserError(f"{root}: not an Endpoints bundle (no results/ folder); name the <org>/<submission> folder")
    try:
        proc = subprocess.run([checker_executable(), "check-submission", str(root), "--json"], capture_output=True,
                              text=True, timeout=timeout_s, env={**os.environ, "NO_COLOR": "1"})
    except subprocess.TimeoutExpired:
        raise UserError(f"{root}: the Endpoints checker did not finish in {timeout_s:g} s") from None
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"{root}: the Endpoints checker failed (exit {proc.returncode}): {tail[0]}") from None
    findings = [{"rule": r.get("rule"), "severity": r.get("severity"), "message": r.get("message"),
                 "fix": r.get("fix"), "path": r.get("path"), "spec_ref": r.get("spec_ref")}
                for r in report.get("results", []) if r.get("severity") in ("error", "warning")]
    findings.sort(key=lambda f: f["severity"] != "error")
    return CheckVerdict(root=root, findings=findings, exit_code=proc.returncode)


def find_bundle_root(path: str | os.PathLike) -> Path:
    """The ``<org>/<submission>`` folder of a bundle given as itself or as the ``--out`` folder above it."""
    path = Path(path)
    if (path / "results").is_dir():
        return path
    found = [p for p in path.glob("*/*") if (p / "results").is_dir()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"{path}: no Endpoints bundle here (no results/ folder in it or in <org>/<submission>/)")
    raise UserError(f"{path}: holds {len(found)} bundles ({', '.join(str(p) for p in found[:3])}); name one")


def provisioned_power_kw(power: EndpointsPower | None, *, system_desc_id: str, cooling: str) -> float | None:
    """The provisioned power the checker computes from our ``system_power.json`` (its own model), or None."""
    if power is None:
        return None
    try:
        from submission_checker.models.file.system_power import SystemPower
    except ImportError:
        return None
    doc = disclose.system_power(power, system_desc_id=system_desc_id, cooling=cooling)
    return SystemPower.model_validate(doc).compute().provisioned_power_kw


def latest_points(rows: "Any") -> list["Any"]:
    """The newest ingested run of each point label (``endpoint_points`` rows as a DataFrame, any order)."""
    if rows is None or len(rows) == 0:
        return []
    ordered = rows.sort_values("ingested_at")
    return [r for _, r in ordered.groupby("label", dropna=False).tail(1).sort_values("concurrency").iterrows()]
