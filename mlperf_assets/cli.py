"""The ``mlperf-dagster`` command.

Each group of subcommands lives in its own module under ``mlperf_assets/commands/`` and exposes
``register(subparsers)``; every subparser sets ``func`` to a callable taking the parsed namespace and
returning an exit code. Modules are imported here so ``--help`` lists everything; heavy imports
(dagster, duckdb, plotly) stay inside the command functions so ``mlperf-dagster rouge`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from mlperf_assets.errors import UserError  # also imported from here by the commands

COMMAND_MODULES = (
    "mlperf_assets.commands.pipeline",  # demo, run, validate-config
    "mlperf_assets.commands.results",  # ingest, query
    "mlperf_assets.commands.scoring",  # accuracy, rouge
    "mlperf_assets.commands.reporting",  # report
    "mlperf_assets.commands.remote",  # render, monitor
    "mlperf_assets.commands.search",  # search-qps
    "mlperf_assets.commands.submission",  # submission
    "mlperf_assets.commands.compliance",  # verify-compliance
    "mlperf_assets.commands.endpoints",  # endpoints plan|run|status|package|check
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlperf-dagster",
        description="Run MLPerf Inference LLM benchmarks on a fleet with Dagster; keep every result in DuckDB.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# Import names of the `orchestrator` extra. A node installs only `mlperf-dagster[node]` (the harness); this command
# is the orchestrator's, so without them it says what to install instead of failing deep inside a subcommand.
ORCHESTRATOR_MODULES = ("dagster", "duckdb", "pandas", "pydantic", "yaml", "plotly", "matplotlib", "paramiko")


def missing_orchestrator_modules() -> list[str]:
    return [name for name in ORCHESTRATOR_MODULES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    missing = missing_orchestrator_modules()
    if missing:
        print(f"mlperf-dagster: the orchestrator is not installed here (no {', '.join(missing)}): "
              "pip install 'mlperf-dagster[orchestrator]' (a node needs only 'mlperf-dagster[node]' and runs "
              "`python -m mlperf_assets.harness`)", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mlperf-dagster {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlperf-dagster {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
