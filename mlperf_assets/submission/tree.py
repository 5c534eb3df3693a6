"""The MLPerf submission tree, from collected run folders: pure (no Dagster, no DuckDB).

Layout (what the MLCommons checker reads at the benchmark's round, ``Benchmark.submission_round``)::

    <division>/<submitter>/
      systems/<system>.json
      src/README.md  src/mlperf-dagster-<commit>/  src/<benchmark>/<system>/<Scenario>/   (v5.0: code/, not src/)
      documentation/README.md
      results/<system>/<benchmark>/<Scenario>/
        performance/run_1/{mlperf_log_summary.txt, mlperf_log_detail.txt, mlperf_log_accuracy.json}
        accuracy/{accuracy.txt (+ hash=), mlperf_log_accuracy.json (truncated), mlperf_log_summary.txt,
                  mlperf_log_detail.txt}
        TEST06/{verify_accuracy.txt, accuracy/mlperf_log_accuracy.json}
        measurements.json  user.conf  mlperf.conf  README.md

as a published closed llama3.1-8b result has them (RedHat's XE8640_4xH100_vLLM, v5.1; NVIDIA's and Intel's, v6.0),
``src/`` holding what produced each result (:mod:`.sources`). v5.x kept measurements and compliance in folders of
their own: ``measurements/<system>/<benchmark>/<Scenario>/`` (``<system>_<Scenario>.json``, ``user.conf``,
``mlperf.conf``, ``README.md``) and ``compliance/<system>/<benchmark>/<Scenario>/TEST06/``; v6.x reads both from the
scenario folder under ``results/``. :data:`ROUND_LAYOUTS` holds only what differs.

One entry per node x scenario: the newest run folder (by its manifest's start time) whose performance run is VALID
and whose logs are of that scenario (with its accuracy run and, when present, its TEST06 run); a run folder holding a
symbolic link is refused (:mod:`.run_folders`). The tree is written into a temporary folder beside ``out`` and
renamed into place only when complete: never half a tree.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mlperf_assets.errors import UserError
from mlperf_assets.harness.benchmarks import BENCHMARKS, FULL_VALIDATION_SIZE, LOADGEN_MODELS, LoadGenModel
from mlperf_assets.harness.compliance import COMPLIANCE_NAMES, required_tests
from mlperf_assets.harness.files import replacing_folder
from mlperf_assets.harness.outputs import check_output_folder, mark_output
from mlperf_assets.harness.run_folder import (
    ACCURACY_LOG,
    ACCURACY_TXT,
    DETAIL_LOG,
    RUN_MANIFEST,
    SUMMARY_LOG,
    USER_CONF,
    read_manifest,
)

from .datasets import DatasetNotes
from .run_folders import refuse_links, slot_mismatch, started_at
from .sources import write_result_sources, write_src_index
from .systems import framework_name, measurements_json, safe_name, scenario_readme, system_json
from .truncate import write_truncated

# The LoadGen scenarios a system category submits (the checker refuses others as unknown for the benchmark).
CATEGORY_SCENARIOS = {"datacenter": ("Offline", "Server"), "edge": ("Offline", "SingleStream"),
                      "datacenter,edge": ("Offline", "Server", "SingleStream")}
PERF_FILES = (SUMMARY_LOG, DETAIL_LOG)
DIVISIONS = ("closed", "open", "network")  # the checker's top-level folders
MIN_DURATION_MS = 600_000  # mlperf.conf's *.*.min_duration: one value for every model (the registry has no column)
MLPERF_CONF = Path("loadgen/mlperf.conf")  # in an MLCommons inference checkout
LOADGEN_SEEDS_ROUND = "v6.1"  # the round whose RNG seeds the mlperf.conf compiled into LoadGen 6.0.x carries
_RESULT_DIR = "results/{system}/{benchmark}/{scenario}"


@dataclass(frozen=True)
class RoundLayout:
    """Where a round's checker reads what moved between rounds (folders under ``<division>/<submitter>/``, with
    ``{system}``, ``{benchmark}`` and ``{scenario}`` filled in); ``systems/`` and the results folder's
    ``performance/`` and ``accuracy/`` are the same in every round."""

    src: str  # the source code folder
    measurements: str  # the folder of the measurements JSON, user.conf and README.md
    measurements_json: str  # that JSON's file name
    compliance: str  # the folder holding one <TEST>/ folder per compliance run


ROUND_LAYOUTS: dict[str, RoundLayout] = {
    # submission_checker/constants.py: SRC_PATH, MEASUREMENTS_PATH (its loader takes the JSON starting with the
    # system's name and ending in _<scenario>.json), COMPLIANCE_PATH
    "v5.0": RoundLayout(src="code", measurements="measurements/{system}/{benchmark}/{scenario}",
                        measurements_json="{system}_{scenario}.json",
                        compliance="compliance/{system}/{benchmark}/{scenario}"),
    "v6.1": RoundLayout(src="src", measurements=_RESULT_DIR, measurements_json="measurements.json",
                        compliance=_RESULT_DIR),
}


@dataclass
class SelectedRun:
    node: str
    scenario: str
    run_id: str
    folder: Path  # <artifact_root>/<node>/<scenario>/<run_id>
    manifest: dict[str, Any]
    compliance: dict[str, Path] = field(default_factory=dict)  # test -> its run folder
    benchmark: str = ""  # its folder under results/<system>/: the checker's name (result_folder)
    result_scenario: str = ""  # its folder under that: the checker's scenario (Interactive for a Server run of one)
    dataset_size: int = FULL_VALIDATION_SIZE  # the official evaluation set of its benchmark (edge: 5,000)
    verifications: dict[str, Any] = field(default_factory=dict)  # test -> its VerifyResult as written in the tree

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
    round: str  # the MLPerf round it is laid out for, and judged at (the checker's --version)
    dataset_notes: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, scenario) -> not the official set


def _detail_value(detail: Path, key: str) -> Any:
    from mlperf_assets.loadgen_logs import parse_detail_log

    try:
        return parse_detail_log(detail).get(key)
    except (OSError, ValueError):
        return None


def select_runs(artifact_root: Path, nodes: list[str], scenarios: list[str]) -> tuple[list[SelectedRun], list[Skipped]]:
    """Newest run folder (by its manifest's start time) per node x scenario with a VALID performance run whose logs
    are of that scenario; the newer ones passed over as skipped, with why. A symbolic link in the run folder looked
    at is refused (:func:`run_folders.refuse_links`); a linked run folder is passed over, never followed."""
    chosen: list[SelectedRun] = []
    skipped: list[Skipped] = []
    for node in nodes:
        for scenario in scenarios:
            base = artifact_root / node / scenario
            candidates = sorted((p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                key=lambda p: (started_at(p), p.name), reverse=True) if base.is_dir() else []
            for folder in candidates:
                if folder.is_symlink():
                    skipped.append(Skipped(node, scenario, folder.name, "a symbolic link to a folder: not followed"))
                    continue
                refuse_links(folder)
                detail = folder / "performance" / DETAIL_LOG
                validity = _detail_value(detail, "result_validity") if detail.is_file() else None
                if validity != "VALID":
                    why = "no performance log" if validity is None else f"performance run is {validity}"
                    skipped.append(Skipped(node, scenario, folder.name, why))
                    continue
                tests = [t for t in COMPLIANCE_NAMES if (folder / "compliance" / t).is_dir()]
                mismatch = slot_mismatch(folder / "performance", scenario, "performance") or (
                    slot_mismatch(folder / "accuracy", scenario, "accuracy") if (folder / "accuracy").is_dir()
                    else None) or next(filter(None, (slot_mismatch(folder / "compliance" / t, scenario, "performance",
                                                                   test=t) for t in tests)), None)
                if mismatch:
                    skipped.append(Skipped(node, scenario, folder.name, f"not a {scenario} run: {mismatch}"))
                    continue
                run = SelectedRun(node, scenario, folder.name, folder, _checked_manifest(folder / "performance"))
                for test in tests:
                    run.compliance[test] = folder / "compliance" / test
                chosen.append(run)
                break
    return chosen, skipped


# The manifest fields the tree reads, and the JSON type each must have.
_MANIFEST_SHAPE = {"backend": dict, "backend.versions": dict, "gpus": list, "host": dict, "lg_model_name": str}


def _checked_manifest(folder: Path) -> dict[str, Any]:
    """The run manifest of ``folder``, refused (one line naming it and the field) where a field the tree reads has
    another type than the harness writes."""
    manifest = read_manifest(folder)
    for name, kind in _MANIFEST_SHAPE.items():
        holder, _, key = name.rpartition(".")
        value = manifest.get(holder) if holder else manifest
        value = value.get(key) if isinstance(value, dict) else None
        bad = value is not None and not isinstance(value, kind)
        if name == "gpus" and not bad and value:
            bad = not all(isinstance(g, dict) for g in value)
        if bad:
            raise UserError(f"{folder / RUN_MANIFEST}: {name} is not a JSON {_JSON_NAMES[kind]} (a damaged run "
                            "manifest)")
    return manifest


_JSON_NAMES = {dict: "object", list: "list (of objects)", str: "string"}


def run_loadgen_model(run: SelectedRun, default: str) -> LoadGenModel:
    """The LoadGen model a run used: its manifest's ``lg_model_name``, else ``default`` (the config's)."""
    name = run.manifest.get("lg_model_name") or default
    if name not in LOADGEN_MODELS:
        raise UserError(f"{run.folder}: LoadGen model {name!r} is not one of harness/benchmarks.py "
                        f"({', '.join(LOADGEN_MODELS)})")
    return LOADGEN_MODELS[name]


def result_folder(model: LoadGenModel, scenario: str) -> tuple[str, str]:
    """``(benchmark, scenario)`` folders of a run under ``results/<system>/``, as the checker names them: the
    LoadGen model's submission name (``gptj`` -> ``gptj-99``, ``llama3_1-8b-edge`` -> ``llama3.1-8b-edge``) and the
    LoadGen scenario. A model whose Server runs MLPerf labels otherwise (``llama3_1-8b-interactive``: Interactive) is
    a scenario of its benchmark's own model since v6.0: its Server run goes to ``llama3.1-8b/Interactive`` (the
    checker knows no ``llama3.1-8b-interactive`` folder)."""
    if model.server_scenario_label == "Server":
        return model.submission_name, scenario
    base = LOADGEN_MODELS[BENCHMARKS[model.benchmark].default_lg_model_name]
    return base.submission_name, model.server_scenario_label if scenario == "Server" else scenario


def smoke_reasons(run: SelectedRun, model: LoadGenModel, baseline: bool) -> list[str]:
    """Why a run cannot be submitted, from its own logs and the registry's facts of its LoadGen ``model`` (the
    checker's list, said in advance): :func:`smoke_settings` first, then what settings do not explain."""
    reasons = smoke_settings(run, model)
    for test in required_tests(model.name):
        if test not in run.compliance:
            reasons.append(f"no {test} run (set benchmark.compliance: [{test}] or profile: submission, and "
                           "mlcommons_inference)")
    round_ = BENCHMARKS[model.benchmark].submission_round
    if round_ != LOADGEN_SEEDS_ROUND:
        reasons.append(f"LoadGen's RNG seeds are {LOADGEN_SEEDS_ROUND}'s, not those of {round_} (the round that "
                       f"judges {model.submission_name})")
    if baseline:
        reasons.append(f"the {(run.manifest.get('backend') or {}).get('name')} backend is a baseline, not a model: "
                       "its accuracy is not the model's")
    return reasons


def smoke_settings(run: SelectedRun, model: LoadGenModel) -> list[str]:
    """Why a run is a smoke run, from its own logs against the registry's facts of its LoadGen ``model``: fewer
    performance samples than LoadGen's count for the model, a shorter minimum duration than mlperf.conf's, an
    accuracy run short of the benchmark's dataset. Empty: the run used submission settings."""
    detail = run.performance / DETAIL_LOG
    from mlperf_assets.loadgen_logs import parse_detail_log

    values = parse_detail_log(detail).values
    reasons = []
    psc = values.get("effective_performance_sample_count")
    if isinstance(psc, int) and psc < model.performance_sample_count:
        reasons.append(f"performance_sample_count {psc} < {model.performance_sample_count} (a smoke dataset)")
    duration = values.get("effective_min_duration_ms")
    if isinstance(duration, (int, float)) and duration < MIN_DURATION_MS:
        reasons.append(f"min_duration {duration} ms < {MIN_DURATION_MS} ms")
    covered, size = accuracy_sample_count(run), BENCHMARKS[model.benchmark].dataset_size
    if covered is not None and covered < size:
        reasons.append(f"the accuracy run covers {covered} of the {size} samples of {model.submission_name} "
                       "(a smoke dataset)")
    return reasons


def accuracy_sample_count(run: SelectedRun) -> int | None:
    """The samples the run's accuracy run covered, as the checker reads them from its detail log
    (``effective_accuracy_sample_count``, else ``qsl_reported_total_count``); None when not logged."""
    detail = run.accuracy / DETAIL_LOG
    for key in ("effective_accuracy_sample_count", "qsl_reported_total_count"):
        value = _detail_value(detail, key) if detail.is_file() else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def backend_is_baseline(manifest: Mapping[str, Any]) -> bool:
    """Whether the run's own backend (its manifest's, not the config's) is a baseline, whose accuracy is no model's."""
    from mlperf_assets.harness.backends import BASELINE_BACKENDS

    backend = manifest.get("backend")
    return isinstance(backend, dict) and backend.get("name") in BASELINE_BACKENDS


def _copy(src: Path, dest: Path, names: tuple[str, ...]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (src / name).is_file():
            raise UserError(f"{src / name} is missing: the run folder is incomplete")
        shutil.copy2(src / name, dest / name)


def _write_result(run: SelectedRun, sub_dir: Path, layout: RoundLayout, *, system: str, sub: Mapping[str, Any],
                  checkpoint: str | None, reasons: list[str], mlcommons_inference: Path | None,
                  smoke: list[str] = ()) -> None:
    """One result: its logs under ``results/``, its compliance runs, measurements JSON, user.conf, mlperf.conf
    (from the user's MLCommons checkout, when configured) and README.md where ``layout`` puts them (the README also
    beside the logs, whatever the round), and its recipe under ``src/`` (:mod:`.sources`)."""
    names = {"system": system, "benchmark": run.benchmark, "scenario": run.result_scenario}
    scen_dir = sub_dir / _RESULT_DIR.format(**names)
    measurements = sub_dir / layout.measurements.format(**names)
    measurements.mkdir(parents=True, exist_ok=True)
    _copy(run.performance, scen_dir / "performance" / "run_1", PERF_FILES)
    if (run.performance / ACCURACY_LOG).is_file():  # LoadGen's (empty) log of a performance run, as real trees keep
        shutil.copyfile(run.performance / ACCURACY_LOG, scen_dir / "performance" / "run_1" / ACCURACY_LOG)
    acc = scen_dir / "accuracy"
    _copy(run.accuracy, acc, PERF_FILES)
    log = run.accuracy / ACCURACY_LOG
    if not log.is_file():
        raise UserError(f"{log} is missing: the run has no accuracy log")
    if not (run.accuracy / ACCURACY_TXT).is_file():
        raise UserError(f"{run.accuracy / 'accuracy.txt'} is missing: materialize accuracy_results for run "
                        f"{run.run_id} first")
    write_truncated(log, run.accuracy / ACCURACY_TXT, acc)
    compliance = sub_dir / layout.compliance.format(**names)
    for test, test_dir in run.compliance.items():
        run.verifications[test] = _write_compliance(test, test_dir, compliance / test, scenario=run.scenario,
                                                    benchmark=run.benchmark, mlcommons_inference=mlcommons_inference)
    user_conf = run.performance / USER_CONF
    (measurements / USER_CONF).write_text(user_conf.read_text() if user_conf.is_file() else "# mlperf.conf only\n")
    mlperf_conf = Path(mlcommons_inference) / MLPERF_CONF if mlcommons_inference else None
    if mlperf_conf is not None and mlperf_conf.is_file():
        shutil.copyfile(mlperf_conf, measurements / "mlperf.conf")
    src = write_result_sources(sub_dir / layout.src, run, system, checkpoint)
    (measurements / layout.measurements_json.format(**names)).write_text(
        json.dumps(measurements_json(sub, run.manifest, checkpoint), indent=2) + "\n")
    readme = scenario_readme(system=system, benchmark=run.benchmark, scenario=run.result_scenario,
                             manifest=run.manifest, run_id=run.run_id, smoke_reasons=reasons, smoke_settings=smoke,
                             node=run.node, lg_scenario=run.scenario, src=src.relative_to(sub_dir).as_posix(),
                             mlperf_conf=mlperf_conf is not None and mlperf_conf.is_file())
    for folder in dict.fromkeys((scen_dir, measurements)):
        (folder / "README.md").write_text(readme)


def _write_compliance(test: str, test_dir: Path, out: Path, *, scenario: str, benchmark: str,
                      mlcommons_inference: Path | None) -> Any:
    """``<Scenario>/<TEST>/``: ``verify_accuracy.txt`` and ``accuracy/mlperf_log_accuracy.json``, verified afresh
    from the run's logs (by the user's MLCommons ``run_verification.py`` when a checkout is configured, its output
    kept verbatim), as real trees hold them (the run's summary and detail logs stay in its run folder). Returns
    the verification (its verdict
    and notes: a failure or a disagreement of the two verifiers fails the result, ``check_tree``)."""
    from mlperf_assets.harness.compliance import ComplianceError, verify

    out.mkdir(parents=True)
    try:
        result = verify(test_dir, scenario, benchmark, mlcommons_inference, test=test, out=out)
    except ComplianceError as exc:
        raise UserError(f"{test} of {test_dir}: {exc}") from None
    return result


def build_tree(config, out: Path, *, nodes: list[str] | None = None, machine: Mapping[str, Any] | None = None,
               machine_facts: Callable[[str], Mapping[str, Any]] | None = None,
               replace: bool = True, option: str = "--out") -> SubmissionTree:
    """Write the submission tree of ``config``'s runs to ``out`` (atomically). ``machine_facts(node)`` gives what
    the node's machine reports for its systems JSON (its runner's ``machine_facts()``; none: nothing known);
    ``machine`` overrides it for every node. Raises :class:`UserError` (one line) when the config has no
    ``submission:`` block or no run qualifies, or ``out`` (named ``option`` in messages) may not be written
    (:func:`output_check`)."""
    from mlperf_assets.plan import prepared_dataset_path

    sub_cfg = config.submission
    if sub_cfg is None:
        raise UserError(f"{config.source_path}: submission: is required to build a submission tree "
                        f"(submitter, system_name, and what a machine cannot report; see the README)")
    missing = sub_cfg.missing_fields()
    if missing:
        raise UserError(f"{config.source_path}: submission: missing {', '.join(missing)}")
    out = output_check(config, out, option)
    sub = sub_cfg.model_dump()
    nodes = nodes or config.node_names
    benchmark = config.benchmark.model
    default_lg = config.benchmark.lg_model_name or BENCHMARKS[benchmark].default_lg_model_name
    round_ = BENCHMARKS[benchmark].submission_round
    layout = ROUND_LAYOUTS[round_]
    allowed = CATEGORY_SCENARIOS[sub_cfg.category]
    selected, skipped = select_runs(config.storage.artifact_root, nodes,
                                    [s for s in config.scenario_names if s in allowed])
    skipped += [Skipped(n, s, "-", f"{s} is not a {sub_cfg.category} scenario of {benchmark}")
                for n in nodes for s in config.scenario_names if s not in allowed]
    if not selected:
        why = "; ".join(f"{s.node}/{s.scenario}/{s.run_id}: {s.reason}" for s in skipped[:3])
        raise UserError(f"no VALID performance run to submit under {config.storage.artifact_root}"
                        + (f" ({why})" if why else " (run the benchmark first)"))
    if out.exists() and not replace:
        raise UserError(f"{out} already exists")
    try:
        with replacing_folder(out) as tmp:
            mark_output(tmp)
            sub_dir = tmp / sub_cfg.division / safe_name(sub_cfg.submitter)
            for name in ("systems", layout.src, "documentation", "results"):
                (sub_dir / name).mkdir(parents=True)
            (sub_dir / "documentation" / "README.md").write_text(
                "# Documentation\n\nResults produced by mlperf-dagster; see each scenario's README.md.\n")
            systems: dict[str, str] = {}
            reasons_by: dict[tuple[str, str], list[str]] = {}
            dataset_notes: dict[tuple[str, str], str] = {}
            datasets = DatasetNotes(config.dataset_dir, [prepared_dataset_path(config)])
            for run in selected:
                system = systems.get(run.node) or safe_name(
                    sub_cfg.system_name if len(nodes) == 1 else f"{sub_cfg.system_name}_{run.node}")
                if run.node not in systems:
                    systems[run.node] = system
                    facts = dict(machine if machine is not None else
                                 machine_facts(run.node) if machine_facts else {})
                    data = system_json(sub, run.manifest, division=sub_cfg.division, machine=facts,
                                       framework=framework_name(run.manifest))
                    (sub_dir / "systems" / f"{system}.json").write_text(json.dumps(data, indent=2) + "\n")
                model = run_loadgen_model(run, default_lg)
                if BENCHMARKS[model.benchmark].submission_round != round_:
                    raise UserError(f"{run.folder}: LoadGen model {model.name} is judged at round "
                                    f"{BENCHMARKS[model.benchmark].submission_round}, the tree of {benchmark} at "
                                    f"{round_}: one tree holds one round")
                run.benchmark, run.result_scenario = result_folder(model, run.scenario)
                run.dataset_size = BENCHMARKS[model.benchmark].dataset_size
                reasons = smoke_reasons(run, model, backend_is_baseline(run.manifest))
                note = datasets.note(run.manifest, model.benchmark)
                if note:
                    reasons.append(note)
                    dataset_notes[(run.node, run.scenario)] = note
                reasons_by[(run.node, run.scenario)] = reasons
                _write_result(run, sub_dir, layout, system=system, sub=sub, checkpoint=config.benchmark.checkpoint,
                              reasons=reasons, mlcommons_inference=config.mlcommons_inference,
                              smoke=smoke_settings(run, model))
            write_src_index(sub_dir / layout.src, [(r, systems[r.node]) for r in selected])
    except OSError as exc:  # a run folder changed under us, a full disk, an --out found unwritable only now
        raise UserError(f"{option} {out}: the tree was not written: {exc.filename or out}: "
                        f"{exc.strerror or exc}") from None
    final = out / sub_cfg.division / safe_name(sub_cfg.submitter)
    return SubmissionTree(out, final, selected, skipped, systems, reasons_by, round_, dataset_notes)


def output_check(config, out: Path, option: str) -> Path:
    """``out`` checked as a submission tree's folder (:func:`check_output_folder`): not the artifact root or any run
    folder, not holding the results store, the config file, the report or the dataset folder."""
    storage = config.storage
    source = config.source_path
    keeps = {"the results store": storage.duckdb_path, "the results store's folder": storage.duckdb_path.parent,
             "the report folder": storage.report_dir, "the dataset folder": config.dataset_dir,
             "the config file": source, "the config file's folder": source.parent if source else None}
    return check_output_folder(out, option=option, reads={"the artifact root": storage.artifact_root},
                               keeps=keeps, written_by_us=_earlier_tree)


def _earlier_tree(folder: Path) -> bool:
    """A tree an earlier version wrote (before :data:`OUTPUT_MARKER`): only <division>/<submitter>/systems/."""
    divisions = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(divisions) and all(
        d.is_dir() and d.name in DIVISIONS and all(s.is_dir() and (s / "systems").is_dir() for s in d.iterdir())
        for d in divisions)

