"""``mlperf-dagster search-qps``: the capacity search (``max_qps_search``) from the command line, in this process.

Each chosen node x {Server, Interactive} partition of ``max_qps_search`` is materialized on the project's Dagster
instance (so it shows in the UI afterwards), one after the other, printing one line per search step. The last
lines are the suggestion to accept: ``benchmark.scenarios.Server.target_qps: Q`` (and its YAML file). Running the
command again with the same config resumes a search instead of starting over; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from mlperf_assets.errors import UserError

# flag -> search: field (config units); the flags override the config's search: section for this invocation
OVERRIDES = (
    ("probe_duration_s", float, "S", "LoadGen min_duration of each probe"),
    ("confirm_duration_s", float, "S", "min_duration of the confirmation run (MLPerf: 600)"),
    ("start_qps", float, "QPS", "first estimate in samples/s (default: the node's latest Offline run, else a probe)"),
    ("max_probes", int, "N", "probes at most"),
    ("tolerance_pct", float, "PCT", "stop when the highest pass and the lowest fail are this close"),
    ("margin_pct", float, "PCT", "p99 TTFT/TPOT must stay this far under the limits"),
    ("min_queries", int, "N", "min_query_count of probes (LoadGen's early stopping needs about 460)"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search-qps",
        help="find the highest Server / Interactive target_qps that stays VALID (capacity search)",
        description=(
            "Capacity search: short LoadGen Server probes on the node (bracketing, then bisection), each judged by "
            "LoadGen's verdict and p99 TTFT/TPOT against the scenario's limits with a safety margin, then one "
            "full-length confirmation run at the chosen rate. Every probe is a LoadGen run in DuckDB (run_summary) "
            "and a qps_search row. Prints the config line to accept, also written to "
            "<report_dir>/qps_search_<node>_<scenario>.yaml. Runs again with the same config resume the search."
        ),
        epilog=(
            "examples:\n"
            "  mlperf-dagster search-qps --scenario Server\n"
            "  mlperf-dagster search-qps --node h200-01 --scenario Interactive --probe-duration-s 60\n"
            "  mlperf-dagster search-qps --fresh            # start over instead of resuming"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="config file (default: $MLPERF_DAGSTER_CONFIG, else config/config.yaml)")
    parser.add_argument("--dataset", default=None, metavar="PATH",
                        help="local CNN/DM copy replacing the config's dataset (like $MLPERF_DAGSTER_DATASET)")
    parser.add_argument("--node", action="append", default=None, metavar="NAME", help="node (repeatable; default all)")
    parser.add_argument("--scenario", action="append", default=None, choices=("Server", "Interactive"),
                        help="Server or Interactive (LoadGen Server under the -interactive model); default both")
    parser.add_argument("--fresh", action="store_true", help="start a new search instead of resuming the stored one")
    parser.add_argument("--verbose", action="store_true", help="show Dagster's log lines")
    group = parser.add_argument_group("search settings (override the config's search: section)")
    for name, kind, metavar, text in OVERRIDES:
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, metavar=metavar,
                           help=text)
    parser.set_defaults(func=cmd_search_qps)


def apply_overrides(config: Any, args: argparse.Namespace) -> Any:
    """The config with the flags' search settings (validated like the file's)."""
    from pydantic import ValidationError

    from mlperf_assets.config import SearchConfig

    given = {name: getattr(args, name) for name, *_ in OVERRIDES if getattr(args, name, None) is not None}
    if not given:
        return config
    try:
        config.search = SearchConfig.model_validate({**config.search.model_dump(), **given})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-")
        raise UserError(f"{flag}: {err.get('ctx', {}).get('error') or err['msg']}") from None
    return config


def _step_printer(out) -> Any:
    started = time.monotonic()

    def on_step(node: str, label: str, step: Any, reused: bool) -> None:
        stored = " (stored)" if reused else ""
        print(f"[{time.monotonic() - started:7.1f}s] {node}/{label}{stored} {step.describe()}", file=out, flush=True)

    return on_step


def cmd_search_qps(args: argparse.Namespace) -> int:
    import dagster as dg

    from mlperf_assets.assets.search import FRESH_TAG, build_max_qps_search, search_partitions
    from mlperf_assets.commands._shared import (
        StopSignals,
        cli_instance,
        ensure_prepared_dataset,
        failure_messages,
        job_run_config,
        load_cli_config,
    )
    from mlperf_assets.definitions import build_resources
    from mlperf_assets.plan import NODE_DIM, SCENARIO_DIM
    from mlperf_assets.search import RESULT, search_labels, suggestion_lines, suggestion_path

    config = apply_overrides(load_cli_config(args.config, dataset_override=args.dataset), args)
    labels = search_labels(config)
    nodes = args.node or config.node_names
    for n in nodes:
        if n not in config.node_names:
            raise UserError(f"--node {n}: no such node in {config.source_path} (nodes: {', '.join(config.node_names)})")
    wanted = args.scenario or labels
    for label in wanted:
        if label not in labels:
            raise UserError(f"--scenario {label}: benchmark {config.benchmark.model} has no {label} LoadGen model")
    # no compute-log capture: its `watch_orphans` helpers share the terminal's process group and each prints a
    # KeyboardInterrupt traceback on Ctrl-C (as for `run`)
    instance = cli_instance()
    run_config = job_run_config(args.verbose)
    resources = build_resources(config)
    results: dict[tuple[str, str], Any] = {}
    printer = _step_printer(sys.stdout)

    def on_step(node: str, label: str, step: Any, reused: bool) -> None:
        printer(node, label, step, reused)
        if step.kind == RESULT:
            results[(node, label)] = step

    asset = build_max_qps_search(config, search_partitions(config), on_step=on_step)
    failed = 0
    with StopSignals() as stop:
        ensure_prepared_dataset(config, instance, resources, run_config)
        for node in nodes:
            for label in [x for x in labels if x in wanted]:
                if stop.received is not None:
                    break
                result = dg.materialize(
                    [asset], partition_key=dg.MultiPartitionKey({NODE_DIM: node, SCENARIO_DIM: label}),
                    instance=instance, resources=resources, run_config=run_config, raise_on_error=False,
                    tags={FRESH_TAG: "true"} if args.fresh else None, selection=[asset.key],
                )
                step = results.get((node, label))
                if stop.received is not None:
                    print(f"{node}/{label}: interrupted; the steps so far are stored, run the command again to "
                          "resume", file=sys.stderr)
                    return 130
                if not result.success:
                    failed += 1
                    errors = failure_messages(result)
                    print(f"FAILED {node}/{label}: {'; '.join(errors) or 'see the Dagster run ' + result.run_id}",
                          file=sys.stderr)
                    continue
                if step is not None and step.target_qps is not None:
                    lines = suggestion_lines(label, step.lg_model_name or "", step.target_qps)
                    print(f"{node}/{label}: {step.reason}")
                    print(f"suggestion written to {suggestion_path(config, node, label)}; accept it with:")
                    for line in lines:
                        print(f"  {line}")
    return 1 if failed else 0
