"""``mlperf-dagster validate-config | run | demo``: the pipeline from the command line, without a daemon.

``run`` and ``demo`` execute the Dagster jobs in this process on a real Dagster instance (project-local
``DAGSTER_HOME=<project>/.dagster_home`` unless ``DAGSTER_HOME`` is set), so every run shows up in the UI
(``make dev``) afterwards, with its logs, metadata and asset checks.

Ctrl-C (SIGINT) or SIGTERM stops the whole command: the harness run in flight is cancelled on its node (through
its runner), no further partition or report starts, one line names each cancelled run, and the exit code is
130 (SIGINT) or 143 (SIGTERM). See :class:`StopSignals`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlperf_assets.commands._shared import (
    STOP_SIGNALS,
    StopSignals,
    check_dataset_reachable,
    cli_instance,
    ensure_dagster_home,
    failure_messages,
    load_cli_config,
    job_run_config,
    signal_name,
)
from mlperf_assets.commands.submission import demo_checker, print_submissions
from mlperf_assets.config import DATASET_ENV, DEFAULT_CONFIG_PATH, PROJECT_ROOT
from mlperf_assets.errors import UserError
from mlperf_assets.harness.benchmarks import SCENARIOS

# The demo's offline fallback: the CNN/DM stories shipped beside the project in a development checkout.
LOCAL_STORIES_FALLBACK = PROJECT_ROOT.parent / "shared" / "testdata" / "cnn_dailymail" / "stories"


# ------------------------------------------------------------------------------------------ execution
@dataclass
class PartitionOutcome:
    node: str
    scenario: str
    success: bool
    dagster_run_id: str
    seconds: float
    error: str | None = None
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM (its harness run cancelled), not a failure of its own


@dataclass
class PipelineOutcome:
    dataset_ok: bool = True
    partitions: list[PartitionOutcome] = field(default_factory=list)
    report_path: Path | None = None
    errors: list[str] = field(default_factory=list)
    # Ctrl-C / SIGTERM: the signal, what it stopped, the harness runs cancelled, the partitions never started
    signal: int | None = None
    stopped_while: str | None = None
    cancelled: list[Any] = field(default_factory=list)  # ledger.CancelledRun
    not_started: list[str] = field(default_factory=list)
    submissions: list["SubmissionOutcome"] = field(default_factory=list)  # the demo's submission_package runs

    @property
    def success(self) -> bool:
        return (
            self.signal is None and self.dataset_ok and not self.errors and all(p.success for p in self.partitions)
        )

    @property
    def exit_code(self) -> int:
        """0 if everything succeeded; 128 + the signal (130 Ctrl-C, 143 SIGTERM) if stopped by one; else 1."""
        if self.signal is not None:
            return 128 + self.signal
        return 0 if self.success else 1


@dataclass
class SubmissionOutcome:
    """One node's ``submission_package`` materialization: where its tree went, or why not, and its checker's
    verdict (None: not checked)."""

    node: str
    tree: str | None = None
    results: int = 0
    error: str | None = None
    verdict: str | None = None


def materialize_submission(defs, instance, node: str, run_config) -> SubmissionOutcome:
    """``submission_package`` of ``node`` as a Dagster run on ``instance`` (so the UI shows it materialized, with
    its checker's verdict as the asset check's result)."""
    from jobs import SUBMISSION_JOB
    from mlperf_assets.assets.submission import SUBMISSION_KEY

    job = defs.resolve_job_def(SUBMISSION_JOB)
    result = job.execute_in_process(instance=instance, partition_key=node, run_config=run_config,
                                    raise_on_error=False)
    outcome = SubmissionOutcome(node)
    for materialization in result.asset_materializations_for_node(SUBMISSION_KEY.path[-1]):
        meta = materialization.metadata
        outcome.tree, outcome.results = meta["tree"].value, meta["results"].value
    for check in result.get_asset_check_evaluations():
        outcome.verdict = check.metadata["verdict"].value.strip("`\n")
    if outcome.tree is None:
        outcome.error = "; ".join(m.split(": ", 1)[-1] for m in failure_messages(result)) or "not materialized"
    return outcome


class _ProgressBars:
    """tqdm bars: one over partitions, one for the harness run in flight (``on_progress``: the callback the
    definitions pass to ``scenario_run``)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self._tqdm = tqdm
        enabled = enabled and sys.stderr.isatty()  # bars on a terminal; logs and CI get the summary only
        self.enabled = enabled
        self.outer = tqdm(total=total, desc="partitions", unit="run", position=0, disable=not enabled, leave=True)
        self.inner = None
        self._current: tuple[str, str, str] | None = None

    def on_progress(self, node: str, scenario: str, mode: str, progress) -> None:
        if not self.enabled:
            return
        key = (node, scenario, mode)
        if key != self._current:
            if self.inner is not None:
                self.inner.close()
            self.inner = self._tqdm(
                total=progress.total, desc=f"{node}/{scenario} {mode}", unit="sample", position=1, leave=False
            )
            self._current = key
        if progress.total and self.inner.total != progress.total:
            self.inner.total = progress.total
        self.inner.n = progress.completed
        # while the node cannot be reached, the runner's message (e.g. "connection lost 12 s ago ...; reconnecting")
        postfix = progress.message if progress.stale and progress.message else f"{progress.tokens_per_s:,.0f} tok/s"
        self.inner.set_postfix_str(postfix, refresh=False)
        self.inner.refresh()

    def partition_done(self, text: str) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None
            self._current = None
        self.outer.update(1)
        self.outer.set_postfix_str(text)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        self.outer.close()


def run_pipeline(
    config,
    *,
    nodes: list[str] | None = None,
    scenarios: list[str] | None = None,
    instance=None,
    prepare_dataset: bool | None = None,
    report: bool = True,
    progress: bool = True,
    verbose: bool = False,
    out=None,
    stop: "StopSignals | None" = None,
    submission: bool = False,
) -> PipelineOutcome:
    """Materialize the dataset (when needed), then each chosen node x scenario partition of ``benchmark_job``
    (one Dagster run each, one after the other), then ``report_job``; all in this process.

    Ctrl-C / SIGTERM (:class:`StopSignals`; ``stop``: one the caller holds, so its own last steps are covered
    too): the step in progress is interrupted and the harness run in flight cancelled on its node; nothing further
    starts; ``outcome.signal`` says which signal, ``outcome.cancelled`` which runs were cancelled and
    ``outcome.not_started`` which partitions never ran.

    ``submission``: when every partition succeeded and the config has ``submission:``, then ``submission_package``
    of each node (``outcome.submissions``)."""
    import dagster as dg

    out = out if out is not None else sys.stderr  # bound at call time: a default bound at import may be closed

    from jobs import BENCHMARK_JOB, DATASET_JOB, REPORT_JOB
    from mlperf_assets.definitions import build_definitions
    from mlperf_assets.plan import NODE_DIM, SCENARIO_DIM, prepared_dataset_path
    from mlperf_assets.reporting import REPORT_NAME
    from resources.runners.ledger import cancel_in_flight

    nodes = nodes or config.node_names
    scenarios = scenarios or config.scenario_names
    for n in nodes:
        if n not in config.node_names:
            raise UserError(f"--node {n}: no such node in {config.source_path} (nodes: {', '.join(config.node_names)})")
    for s in scenarios:
        if s not in config.scenario_names:
            raise UserError(
                f"--scenario {s}: not configured in {config.source_path} "
                f"(benchmark.scenarios: {', '.join(config.scenario_names)})"
            )
    keys = [(n, s) for n in nodes for s in SCENARIOS if s in scenarios]
    run_config = job_run_config(verbose)
    outcome = PipelineOutcome()
    bars = _ProgressBars(len(keys), enabled=progress)

    with contextlib.ExitStack() as stack:
        if stop is None:
            stop = stack.enter_context(StopSignals())
        if instance is None:
            instance = stack.enter_context(cli_instance())  # disposed at the end (its watcher threads stopped)

        def on_progress(node: str, scenario: str, mode: str, progress) -> None:
            if stop.received is not None:
                # A harness run launched after the signal, where Dagster did not see it (the signal came between
                # two of its checkpoints): raising here makes runner.wait() cancel it at its first poll.
                raise KeyboardInterrupt
            bars.on_progress(node, scenario, mode, progress)

        def stopped(what: str) -> bool:
            if stop.received is None:
                return False
            outcome.signal = stop.received
            outcome.stopped_while = outcome.stopped_while or what
            return True

        defs = build_definitions(config, on_progress=on_progress)
        try:
            if prepare_dataset is None:
                prepare_dataset = not prepared_dataset_path(config).is_file()
            if prepare_dataset and not stopped("starting"):
                print(f"preparing the dataset ({config.dataset.source}) ...", file=out)
                result = defs.resolve_job_def(DATASET_JOB).execute_in_process(
                    instance=instance, run_config=run_config, raise_on_error=False
                )
                if not stopped("preparing the dataset") and not result.success:
                    outcome.dataset_ok = False
                    outcome.errors += failure_messages(result) or ["cnn_dailymail_dataset failed"]
                    return outcome

            job = defs.resolve_job_def(BENCHMARK_JOB)
            for node, scenario in keys:
                if stopped("starting"):
                    outcome.not_started.append(f"{node}/{scenario}")
                    continue
                started = time.monotonic()
                result = job.execute_in_process(
                    instance=instance,
                    partition_key=dg.MultiPartitionKey({NODE_DIM: node, SCENARIO_DIM: scenario}),
                    run_config=run_config,
                    raise_on_error=False,
                )
                interrupted = stopped(f"running {node}/{scenario}") and not result.success
                errors = failure_messages(result)
                outcome.partitions.append(
                    PartitionOutcome(
                        node, scenario, result.success, result.run_id, time.monotonic() - started,
                        error="; ".join(errors) if errors else None, interrupted=interrupted,
                    )
                )
                bars.partition_done(
                    f"{node}/{scenario} {'ok' if result.success else 'stopped' if interrupted else 'FAILED'}"
                )

            if report and not stopped("starting"):
                result = defs.resolve_job_def(REPORT_JOB).execute_in_process(
                    instance=instance, run_config=run_config, raise_on_error=False
                )
                if stopped("writing the report"):
                    pass
                elif result.success:
                    outcome.report_path = config.storage.report_dir / REPORT_NAME
                else:
                    outcome.errors += failure_messages(result) or ["benchmark_report failed"]

            if submission and config.submission is not None and outcome.success and not stopped("starting"):
                for node in nodes:
                    outcome.submissions.append(materialize_submission(defs, instance, node, run_config))
                    if stopped(f"writing the submission tree of {node}"):
                        break
        finally:
            bars.close()
            if stop.received is not None:
                # Whatever Dagster made of the interrupt: every harness run still in flight is cancelled on its
                # node, with this class's handler in place (a further Ctrl-C is noted, not raised).
                outcome.signal = stop.received
                outcome.cancelled = cancel_in_flight()
    return outcome


def _print_stopped(command: str, outcome: PipelineOutcome, *, report: bool) -> None:
    """One line per cancelled harness run, then one line saying what the signal stopped (stderr)."""
    for c in outcome.cancelled:
        if c.problem is not None:
            print(f"could not cancel {c.run}: {c.problem}; {c.hint}", file=sys.stderr)
        elif c.run_dir is None:
            print(f"cancelled {c.run} before it started", file=sys.stderr)
        else:
            print(f"cancelled {c.run} (its folder stays on node {c.run.spec.node} at {c.run_dir})", file=sys.stderr)
    name = signal_name(outcome.signal) if outcome.signal is not None else "a signal"
    text = f"mlperf-dagster {command}: stopped by {name}"
    if outcome.stopped_while and outcome.stopped_while != "starting":
        text += f" while {outcome.stopped_while}"
    if not outcome.cancelled:
        text += "; no benchmark run was in flight"
    if outcome.not_started:
        text += f"; not started: {', '.join(outcome.not_started)}"
    if report and outcome.report_path is None:
        text += "; no report written"
    print(text, file=sys.stderr)


def summary_rows(config, outcome: PipelineOutcome) -> list[dict[str, Any]]:
    """run_summary rows (performance runs, with accuracy) of this invocation's Dagster runs."""
    from mlperf_assets import store

    ids = [p.dagster_run_id for p in outcome.partitions if p.success]
    if not ids or not config.storage.duckdb_path.is_file():
        return []
    frame = store.query(
        config.storage.duckdb_path,
        "SELECT node, scenario, backend, backend_kind, result_validity, samples_per_second, tokens_per_second, "
        "ttft_p99_ns, tpot_p99_ns, rouge1, rougeL, accuracy_passed FROM run_summary "
        "WHERE mode = 'performance' AND list_contains(?, dagster_run_id) ORDER BY node, scenario",
        [ids],
    )
    return frame.to_dict("records")


def format_summary(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    from mlperf_assets.charts import backend_label
    from mlperf_assets.reporting.text import fmt_bool, fmt_ms, fmt_number

    table = [
        [
            r["node"], r["scenario"], backend_label(r), r["result_validity"] or "-",
            fmt_number(r["samples_per_second"]), fmt_number(r["tokens_per_second"]),
            fmt_ms(r["ttft_p99_ns"]), fmt_ms(r["tpot_p99_ns"]),
            fmt_number(r["rouge1"], 2), fmt_bool(r["accuracy_passed"]),
        ]
        for r in rows
    ]
    headers = ["node", "scenario", "backend", "validity", "samples/s", "tokens/s", "TTFT p99 ms", "TPOT p99 ms",
               "ROUGE-1", "accuracy"]  # fmt: skip
    return tabulate(table, headers=headers, disable_numparse=True)


def _print_outcome(config, outcome: PipelineOutcome, started: float) -> None:
    rows = summary_rows(config, outcome)
    if rows:
        print(format_summary(rows))
    for p in outcome.partitions:
        if not p.success and not p.interrupted:
            print(f"FAILED {p.node}/{p.scenario}: {p.error}", file=sys.stderr)
    for e in outcome.errors:
        print(f"FAILED {e}", file=sys.stderr)
    if outcome.signal is not None:
        return  # _print_stopped says the rest
    ok = sum(p.success for p in outcome.partitions)
    print(f"\n{ok}/{len(outcome.partitions)} partitions succeeded in {time.monotonic() - started:.1f} s")
    db = config.storage.duckdb_path
    print(f"results:  {db}  (mlperf-dagster query --db {db} 'SELECT * FROM run_summary')")
    if outcome.report_path:
        print(f"report:   {outcome.report_path}")
    print(f"UI:       make dev  (Dagster on http://127.0.0.1:3000, instance {os.environ.get('DAGSTER_HOME')})")


# ------------------------------------------------------------------------------------------ commands


def cmd_validate_config(args: argparse.Namespace) -> int:
    from mlperf_assets.config import ConfigError, config_path, load_config

    try:
        config = load_config(args.path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    shown = config_path(args.path)
    nodes = ", ".join(f"{n.name} ({n.runner})" for n in config.nodes)
    dataset = f"{config.dataset.source}" + (f" {config.dataset.path}" if config.dataset.path else "")
    if config.dataset_overridden_by:
        dataset += f" (from {config.dataset_overridden_by})"
    print(f"{shown}: OK")
    print(f"  nodes:     {nodes}")
    print(f"  benchmark: {config.benchmark.model}, backend {config.benchmark.backend}"
          + (" (baseline)" if config.benchmark.is_baseline else ""))  # fmt: skip
    print(f"  scenarios: {', '.join(config.scenario_names)}")
    print(f"  dataset:   {dataset}")
    print(f"  results:   {config.storage.duckdb_path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = load_cli_config(args.config)
    needs_dataset = args.refresh_dataset or not _prepared_exists(config)
    if needs_dataset:
        check_dataset_reachable(config)
    ensure_dagster_home()
    with StopSignals() as stop:  # held until the end: a further Ctrl-C while this prints is noted, not raised
        outcome = run_pipeline(
            config,
            nodes=args.node,
            scenarios=args.scenario,
            prepare_dataset=True if args.refresh_dataset else None,
            report=not args.no_report,
            progress=not args.no_progress,
            verbose=args.verbose,
            stop=stop,
        )
        _print_outcome(config, outcome, started)
        if outcome.signal is not None:
            _print_stopped("run", outcome, report=not args.no_report)
        return _exit_code(outcome, stop)


def _exit_code(outcome: PipelineOutcome, stop: StopSignals) -> int:
    """The outcome's exit code; 128 + the signal when one came after the pipeline had finished (while printing).
    Once stopped by a signal, the command ignores further ones while the interpreter shuts down, so it ends with
    this code rather than killed half-way through its exit."""
    code = 128 + stop.received if outcome.signal is None and stop.received is not None else outcome.exit_code
    if code >= 128:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # StopSignals.__exit__ leaves them so: it restores only its own
    return code


def _prepared_exists(config) -> bool:
    from mlperf_assets.plan import prepared_dataset_path

    return prepared_dataset_path(config).is_file()


def demo_dataset_override(explicit: str | None, fallback: Path | None = None) -> tuple[str | None, str]:
    """(value for MLPERF_DAGSTER_DATASET or None, a sentence saying where the demo's dataset comes from)."""
    fallback = fallback or LOCAL_STORIES_FALLBACK
    if explicit:
        return explicit, f"dataset: {explicit} (--dataset)"
    env = os.environ.get(DATASET_ENV)
    if env:
        return env, f"dataset: {env} (from {DATASET_ENV})"
    if fallback.is_dir():
        return str(fallback), (
            f"dataset: {fallback} (the local CNN/DM stories beside the project; {DATASET_ENV} not set)"
        )
    return None, "dataset: the Hugging Face hub (abisee/cnn_dailymail)"


def demo_compliance(config):
    """The demo runs the benchmark's required compliance tests (TEST06) when it can: their audit.config comes from an
    MLCommons checkout, the configured one or the pinned copy beside the project (../shared/reference/
    mlcommons_inference). Without one it says so once and runs without them."""
    from mlperf_assets.config import PROJECT_ROOT
    from mlperf_assets.plan import compliance_tests
    from mlperf_assets.harness.compliance import required_tests

    wanted = [t for t in required_tests(config.benchmark.model) if t not in compliance_tests(config)]
    if not wanted:
        return config
    checkout = config.mlcommons_inference
    fallback = PROJECT_ROOT.parent / "shared" / "reference" / "mlcommons_inference"
    if checkout is None and (fallback / "compliance").is_dir():
        checkout = fallback
    if checkout is None:
        print(f"compliance: {', '.join(wanted)} not run (its audit.config comes from an MLCommons checkout: set "
              "mlcommons_inference: in the config)", file=sys.stderr)
        return config
    print(f"compliance: {', '.join(wanted)} after each accuracy run (audit.config from {checkout})", file=sys.stderr)
    benchmark = config.benchmark.model_copy(update={"compliance": [*config.benchmark.compliance, *wanted]})
    return config.model_copy(update={"mlcommons_inference": checkout, "benchmark": benchmark})


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    override, where = demo_dataset_override(args.dataset)
    config = load_cli_config(str(args.config or DEFAULT_CONFIG_PATH), dataset_override=override)
    print(f"mlperf-dagster demo: {config.source_path}", file=sys.stderr)
    print(where, file=sys.stderr)
    config = demo_checker(demo_compliance(config))
    check_dataset_reachable(config)
    ensure_dagster_home()
    with StopSignals() as stop:  # held until the end, as in cmd_run
        outcome = run_pipeline(
            config, prepare_dataset=True, progress=not args.no_progress, verbose=args.verbose, stop=stop,
            submission=True,
        )
        print()
        _print_outcome(config, outcome, started)
        if outcome.signal is not None:
            _print_stopped("demo", outcome, report=True)
            return _exit_code(outcome, stop)
        if config.benchmark.is_baseline:
            print(
                f"note: backend {config.benchmark.backend} is a baseline (no model): figures show the harness and "
                "pipeline working, not a model's performance; see config/examples/ for GPU fleets."
            )
        print_submissions(outcome.submissions)  # the smoke submission trees, and the checker's verdict on each
        return _exit_code(outcome, stop)


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "validate-config",
        help="check a config file; one line per problem",
        formatter_class=fmt,
        description=(
            "Validate a config file and print what it describes, or one line per problem "
            "(<file>: <field>: <what is wrong>). Exit code 2 if invalid.\n\n"
            "Without PATH: $MLPERF_DAGSTER_CONFIG, else config/config.yaml. $MLPERF_DAGSTER_DATASET is applied."
        ),
    )
    p.add_argument(
        "path", nargs="?", default=None, help="config file (default: $MLPERF_DAGSTER_CONFIG or config/config.yaml)"
    )
    p.set_defaults(func=cmd_validate_config)

    p = subparsers.add_parser(
        "run",
        help="run chosen node x scenario partitions and everything downstream, in this process",
        formatter_class=fmt,
        description=(
            "Materialize the dataset (if not prepared yet), then for each chosen node x scenario the benchmark "
            "job (LoadGen performance + accuracy runs, ingestion into DuckDB, ROUGE), then the report; one "
            "Dagster run each, in this process (no daemon needed: suits cron and scripts). Runs are recorded in "
            "the project's Dagster instance (.dagster_home) and visible in `make dev`.\n\n"
            "examples:\n"
            "  mlperf-dagster run                                  # every node and scenario of the config\n"
            "  mlperf-dagster run --config fleet.yaml --node jw2 --scenario Server\n"
            "\nCtrl-C or SIGTERM cancels the harness run in flight on its node and starts nothing else; one line\n"
            "names each cancelled run.\n\n"
            "exit code: 0 if everything succeeded, 1 if a partition failed, 2 for a bad config or option,\n"
            "130 if stopped by Ctrl-C (SIGINT), 143 by SIGTERM."
        ),
    )
    p.add_argument("--config", default=None, help="config file (default: $MLPERF_DAGSTER_CONFIG or config/config.yaml)")
    p.add_argument("--node", action="append", default=None, metavar="N", help="only this node (repeatable)")
    p.add_argument(
        "--scenario", action="append", default=None, choices=SCENARIOS, help="only this scenario (repeatable)"
    )
    p.add_argument("--refresh-dataset", action="store_true", help="prepare the dataset again even if the file exists")
    p.add_argument("--no-report", action="store_true", help="skip the report job")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log (INFO) on the console")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser(
        "demo",
        help="the whole pipeline on the default config (local node, extractive baseline, smoke settings)",
        formatter_class=fmt,
        description=(
            "Run everything on config/config.yaml: prepare the dataset, run Offline, Server and SingleStream "
            "(performance and accuracy) on the local node with the extractive lead-3 baseline, ingest into "
            "results/mlperf.duckdb, score ROUGE, write results/report/report.md; then print a summary.\n\n"
            f"The dataset: --dataset, else ${DATASET_ENV}, else the CNN/DM stories in ../shared/testdata when "
            "present, else the Hugging Face hub (stops at once with instructions if the hub is unreachable)."
        ),
    )
    p.add_argument("--config", default=None, help="another config instead of config/config.yaml")
    p.add_argument("--dataset", default=None, metavar="PATH",
                   help="local CNN/DM copy: a folder of .story files, cnn_eval.json, or .jsonl")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log (INFO) on the console")
    p.set_defaults(func=cmd_demo)
