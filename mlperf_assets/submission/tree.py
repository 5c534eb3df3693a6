"""The MLPerf submission tree, from collected run folders: pure (no Dagster, no DuckDB).

Layout (what the MLCommons checker ``--version v6.1`` reads; ``src/``, not ``code/``)::

    <division>/<submitter>/
      systems/<system>.json
      src/README.md  documentation/README.md
      results/<system>/<benchmark>/<Scenario>/
        performance/run_1/{mlperf_log_summary.txt, mlperf_log_detail.txt}
        accuracy/{accuracy.txt (+ hash=), mlperf_log_accuracy.json (truncated), mlperf_log_summary.txt,
                  mlperf_log_detail.txt}
        TEST06/{verify_accuracy.txt, accuracy/mlperf_log_accuracy.json, accuracy/mlperf_log_{summary,detail}.txt}
        measurements.json  user.conf  README.md

(v5.x kept measurements and compliance in their own ``measurements/`` and ``compliance/`` folders; v6.x reads
both from the scenario folder under ``results/``, so they are written there.)

One entry per node x scenario: the newest run folder whose performance run is VALID (with its accuracy run and,
when present, its TEST06 run). The tree is written into a temporary folder beside ``out`` and renamed into place
only when complete: never half a tree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlperf_assets.errors import UserError
from mlperf_assets.harness.compliance import COMPLIANCE_NAMES

from .systems import framework_name, local_machine, measurements_json, safe_name, scenario_readme, system_json
from .truncate import write_truncated

# The LoadGen scenarios a system category submits (the checker refuses others as unknown for the benchmark).
CATEGORY_SCENARIOS = {"datacenter": ("Offline", "Server"), "edge": ("Offline", "SingleStream"),
                      "datacenter,edge": ("Offline", "Server", "SingleStream")}
PERF_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
FULL_SAMPLES = 13368
MIN_DURATION_MS = 600_000


@dataclass
class SelectedRun:
    node: str
    scenario: str
    run_id: str
    folder: Path  # <artifact_root>/<node>/<scenario>/<run_id>
    manifest: dict[str, Any]
    compliance: dict[str, Path] = field(default_factory=dict)  # test -> its run folder

    @property
    def performance(self) -> Path:
        return self.folder / "performance"

    @property
    def accuracy(self) -> Path:
        return self.folder / "accuracy"


@dataclass
class Skipped:
    node: str
    scenario: str
    run_id: str
    reason: str


@dataclass
class SubmissionTree:
    root: Path  # the folder given as out
    submitter_dir: Path  # root/<division>/<submitter>
    results: list[SelectedRun]
    skipped: list[Skipped]
    systems: dict[str, str]  # node -> system folder name
    smoke_reasons: dict[tuple[str, str], list[str]]  # (node, scenario) -> why not submittable


def _detail_value(detail: Path, key: str) -> Any:
    from mlperf_assets.loadgen_logs import parse_detail_log

    try:
        return parse_detail_log(detail).get(key)
    except (OSError, ValueError):
        return None


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "run_manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def select_runs(artifact_root: Path, nodes: list[str], scenarios: list[str]) -> tuple[list[SelectedRun], list[Skipped]]:
    """Newest run folder per node x scenario with a VALID performance run; the newer INVALID ones as skipped."""
    chosen: list[SelectedRun] = []
    skipped: list[Skipped] = []
    for node in nodes:
        for scenario in scenarios:
            base = artifact_root / node / scenario
            candidates = sorted((p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                key=lambda p: p.name, reverse=True) if base.is_dir() else []
            for folder in candidates:
                detail = folder / "performance" / "mlperf_log_detail.txt"
                validity = _detail_value(detail, "result_validity") if detail.is_file() else None
                if validity != "VALID":
                    why = "no performance log" if validity is None else f"performance run is {validity}"
                    skipped.append(Skipped(node, scenario, folder.name, why))
                    continue
                run = SelectedRun(node, scenario, folder.name, folder, _manifest(folder / "performance"))
                for test in COMPLIANCE_NAMES:
                    test_dir = folder / "compliance" / test
                    if test_dir.is_dir():
                        run.compliance[test] = test_dir
                chosen.append(run)
                break
    return chosen, skipped


def smoke_reasons(run: SelectedRun, baseline: bool) -> list[str]:
    """Why a run cannot be submitted, from its own logs (the checker's list, said in advance)."""
    detail = run.performance / "mlperf_log_detail.txt"
    from mlperf_assets.loadgen_logs import parse_detail_log

    values = parse_detail_log(detail).values
    reasons = []
    psc = values.get("effective_performance_sample_count")
    if isinstance(psc, int) and psc < FULL_SAMPLES:
        reasons.append(f"performance_sample_count {psc} < {FULL_SAMPLES} (a smoke dataset)")
    duration = values.get("effective_min_duration_ms")
    if isinstance(duration, (int, float)) and duration < MIN_DURATION_MS:
        reasons.append(f"min_duration {duration} ms < {MIN_DURATION_MS} ms")
    if not run.compliance:
        reasons.append("no TEST06 run (set benchmark.compliance: [TEST06] or profile: submission, and "
                       "mlcommons_inference)")
    if baseline:
        reasons.append(f"the {(run.manifest.get('backend') or {}).get('name')} backend is a baseline, not a model: "
                       "its accuracy is not the model's")
    return reasons


def _copy(src: Path, dest: Path, names: tuple[str, ...]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (src / name).is_file():
            raise UserError(f"{src / name} is missing: the run folder is incomplete")
        shutil.copy2(src / name, dest / name)


def _write_result(run: SelectedRun, scen_dir: Path, *, system: str, benchmark: str, sub: Mapping[str, Any],
                  checkpoint: str | None, reasons: list[str], mlcommons_inference: Path | None) -> None:
    _copy(run.performance, scen_dir / "performance" / "run_1", PERF_FILES)
    acc = scen_dir / "accuracy"
    _copy(run.accuracy, acc, PERF_FILES)
    log = run.accuracy / "mlperf_log_accuracy.json"
    if not log.is_file():
        raise UserError(f"{log} is missing: the run has no accuracy log")
    if not (run.accuracy / "accuracy.txt").is_file():
        raise UserError(f"{run.accuracy / 'accuracy.txt'} is missing: materialize accuracy_results for run "
                        f"{run.run_id} first")
    write_truncated(log, run.accuracy / "accuracy.txt", acc)
    for test, test_dir in run.compliance.items():
        _write_compliance(test, test_dir, scen_dir / test, scenario=run.scenario, benchmark=benchmark,
                          mlcommons_inference=mlcommons_inference)
    user_conf = run.performance / "user.conf"
    (scen_dir / "user.conf").write_text(user_conf.read_text() if user_conf.is_file() else "# mlperf.conf only\n")
    (scen_dir / "measurements.json").write_text(
        json.dumps(measurements_json(sub, run.manifest, checkpoint), indent=2) + "\n")
    (scen_dir / "README.md").write_text(scenario_readme(
        system=system, benchmark=benchmark, scenario=run.scenario, manifest=run.manifest, run_id=run.run_id,
        smoke_reasons=reasons))


def _write_compliance(test: str, test_dir: Path, out: Path, *, scenario: str, benchmark: str,
                      mlcommons_inference: Path | None) -> None:
    """``<Scenario>/<TEST>/``: ``verify_accuracy.txt`` and ``accuracy/mlperf_log_accuracy.json``, verified afresh
    from the run's logs (by the user's MLCommons ``run_verification.py`` when a checkout is configured, its output
    kept verbatim), plus the run's summary and detail logs in ``accuracy/``."""
    from mlperf_assets.harness.compliance import ComplianceError, verify

    out.mkdir(parents=True)
    try:
        verify(test_dir, scenario, benchmark, mlcommons_inference, test=test, out=out)
    except ComplianceError as exc:
        raise UserError(f"{test} of {test_dir}: {exc}") from None
    _copy(test_dir, out / "accuracy", tuple(n for n in PERF_FILES if (test_dir / n).is_file()))


def _src_readme(config_path: Path | None) -> str:
    from mlperf_assets.harness.manifest import package_version

    return (
        "# Source\n\nThe benchmark harness is mlperf-dagster "
        f"{package_version('mlperf-dagster') or ''} (`python -m mlperf_assets.harness run`), LoadGen from "
        "`mlcommons-loadgen`. The config that produced these results: "
        f"`{config_path.name if config_path else 'config.yaml'}`.\n"
    )


def build_tree(config, out: Path, *, nodes: list[str] | None = None, machine: Mapping[str, Any] | None = None,
               replace: bool = True) -> SubmissionTree:
    """Write the submission tree of ``config``'s runs to ``out`` (atomically). Raises :class:`UserError` (one
    line) when the config has no ``submission:`` block or no run qualifies."""
    from mlperf_assets.config import LocalNode

    sub_cfg = config.submission
    if sub_cfg is None:
        raise UserError(f"{config.source_path}: submission: is required to build a submission tree "
                        f"(submitter, system_name, and what a machine cannot report; see the README)")
    missing = sub_cfg.missing_fields()
    if missing:
        raise UserError(f"{config.source_path}: submission: missing {', '.join(missing)}")
    sub = sub_cfg.model_dump()
    nodes = nodes or config.node_names
    benchmark = config.benchmark.model
    allowed = CATEGORY_SCENARIOS[sub_cfg.category]
    selected, skipped = select_runs(config.storage.artifact_root, nodes,
                                    [s for s in config.scenario_names if s in allowed])
    skipped += [Skipped(n, s, "-", f"{s} is not a {sub_cfg.category} scenario of {benchmark}")
                for n in nodes for s in config.scenario_names if s not in allowed]
    if not selected:
        why = "; ".join(f"{s.node}/{s.scenario}/{s.run_id}: {s.reason}" for s in skipped[:3])
        raise UserError(f"no VALID performance run to submit under {config.storage.artifact_root}"
                        + (f" ({why})" if why else " (run the benchmark first)"))
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not replace:
        raise UserError(f"{out} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        sub_dir = tmp / sub_cfg.division / safe_name(sub_cfg.submitter)
        for name in ("systems", "src", "documentation", "results"):
            (sub_dir / name).mkdir(parents=True)
        (sub_dir / "src" / "README.md").write_text(_src_readme(config.source_path))
        (sub_dir / "documentation" / "README.md").write_text(
            "# Documentation\n\nResults produced by mlperf-dagster; see each scenario's README.md.\n")
        systems: dict[str, str] = {}
        reasons_by: dict[tuple[str, str], list[str]] = {}
        for run in selected:
            node_cfg = config.node(run.node)
            system = systems.get(run.node) or safe_name(
                sub_cfg.system_name if len(nodes) == 1 else f"{sub_cfg.system_name}_{run.node}")
            if run.node not in systems:
                systems[run.node] = system
                facts = dict(machine if machine is not None else
                             (local_machine() if isinstance(node_cfg, LocalNode) else {}))
                data = system_json(sub, run.manifest, division=sub_cfg.division, machine=facts,
                                   framework=framework_name(run.manifest))
                (sub_dir / "systems" / f"{system}.json").write_text(json.dumps(data, indent=2) + "\n")
            reasons = smoke_reasons(run, config.benchmark.is_baseline)
            reasons_by[(run.node, run.scenario)] = reasons
            scen_dir = sub_dir / "results" / system / benchmark / run.scenario
            _write_result(run, scen_dir, system=system, benchmark=benchmark, sub=sub,
                          checkpoint=config.benchmark.checkpoint, reasons=reasons,
                          mlcommons_inference=config.mlcommons_inference)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = out / sub_cfg.division / safe_name(sub_cfg.submitter)
    return SubmissionTree(out, final, selected, skipped, systems, reasons_by)
