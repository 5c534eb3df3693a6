"""`mlperf-dagster submission --out DIR`: the MLPerf submission tree of the config's runs, checked by the user's
MLCommons submission checker when ``mlcommons_inference`` is configured."""

from __future__ import annotations

import argparse
import sys

from mlperf_assets.commands._shared import load_cli_config
from mlperf_assets.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submission",
        help="write the MLPerf submission tree of the latest VALID runs (and check it)",
        description=(
            "Write <division>/<submitter>/{results,systems,src,documentation} for the newest VALID performance "
            "run of each node and scenario, with its accuracy run (accuracy.txt with the log's hash, the truncated "
            "mlperf_log_accuracy.json) and its TEST06 run, measurements.json, user.conf and README.md, plus "
            "systems/<system>.json from the run manifests and the config's submission: block. The tree is "
            "written to a temporary folder and renamed into place. With mlcommons_inference: in the config (or "
            "--mlcommons-inference), the MLCommons checker of that checkout judges it; its verdict per result is "
            "stored in DuckDB (submission_checks)."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the tree: a new or empty folder, or one an "
                        "earlier `submission` wrote (then replaced); never the artifact root, a run folder, or a "
                        "folder holding the results store, the config or the current directory")
    parser.add_argument("--config", default=None, metavar="FILE", help="config file (default: $MLPERF_DAGSTER_CONFIG, "
                        "else config/config.yaml)")
    parser.add_argument("--node", action="append", default=None, help="only these nodes (repeatable)")
    parser.add_argument("--mlcommons-inference", default=None, metavar="PATH",
                        help="your mlcommons/inference checkout (overrides the config's mlcommons_inference)")
    parser.add_argument("--no-check", action="store_true", help="write the tree without running the checker")
    parser.set_defaults(func=run_submission)


def package_and_record(config, out, **options):
    """``submission.package`` with each node's machine facts asked of its runner, and the checker's verdict (when
    it ran) recorded in the results store through the ``ResultsStore`` resource, as the asset records it."""
    from mlperf_assets.submission import check_records, package
    from resources.runners import build_runner
    from resources.store import ResultsStore

    def machine_facts(node: str) -> dict:
        return build_runner(config.node(node)).machine_facts()

    tree, verdict, rows = package(config, out, machine_facts=machine_facts, **options)
    if verdict is not None:
        ResultsStore(path=str(config.storage.duckdb_path)).save_submission_checks(check_records(tree, verdict, rows))
    return tree, verdict, rows


def run_submission(args: argparse.Namespace, out=sys.stdout) -> int:
    from pathlib import Path

    from mlperf_assets.submission import checker_path, verdict_block

    config = load_cli_config(args.config)
    if args.mlcommons_inference:
        checker_path(args.mlcommons_inference)  # a missing checkout: one line, before anything is written
        config.mlcommons_inference = Path(args.mlcommons_inference).expanduser().absolute()
    for node in args.node or []:
        if node not in config.node_names:
            raise UserError(f"--node {node}: no such node (nodes: {', '.join(config.node_names)})")
    tree, verdict, rows = package_and_record(config, Path(args.out), check=False if args.no_check else None,
                                             nodes=args.node)
    print(f"submission tree: {tree.submitter_dir} ({len(tree.results)} result(s))", file=out)
    for s in tree.skipped:
        print(f"  skipped {s.node}/{s.scenario}/{s.run_id}: {s.reason}", file=out)
    for r in tree.results:
        if (r.node, r.scenario) in tree.dataset_notes:
            print(f"  note: {r.node}/{r.scenario}/{r.run_id}: {tree.dataset_notes[(r.node, r.scenario)]}", file=out)
    if verdict is None:
        if not args.no_check:
            print("  not checked: set mlcommons_inference: in the config (your mlcommons/inference checkout)",
                  file=out)
        return 0
    print(verdict_block(verdict, rows), file=out)
    return 1 if any(r["unexpected"] for r in rows) or verdict.general_errors else 0


def demo_checker(config):
    """The demo's config with an MLCommons checkout to judge its smoke trees: the configured one, else the pinned
    copy beside the project (``../shared/reference/mlcommons_inference``) when present."""
    from mlperf_assets.config import PROJECT_ROOT

    fallback = PROJECT_ROOT.parent / "shared" / "reference" / "mlcommons_inference"
    if config.submission is None or config.mlcommons_inference is not None or not fallback.is_dir():
        return config
    return config.model_copy(update={"mlcommons_inference": fallback})


def print_submissions(submissions, out=None) -> None:
    """The end of ``demo``: each node's ``submission_package`` (materialized through Dagster, so the UI shows it)
    in a few lines: where the tree went, or why it was not written, and the checker's verdict. Never fails the demo."""
    out = out if out is not None else sys.stdout
    for s in submissions:
        if s.tree is None:
            print(f"submission tree of {s.node}: not written: {s.error}", file=out)
            continue
        print(f"submission tree: {s.tree} ({s.results} result(s); smoke settings, not submittable)", file=out)
        print(s.verdict if s.verdict is not None else
              "  not checked: set mlcommons_inference: to your mlcommons/inference checkout", file=out)
