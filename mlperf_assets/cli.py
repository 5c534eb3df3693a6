"""The ``mlperf-dagster`` command.

Each group of subcommands lives in its own module under ``mlperf_assets/commands/`` and exposes
``register(subparsers)``; every subparser sets ``func`` to a callable taking the parsed namespace and
returning an exit code. Modules are imported here so ``--help`` lists everything; heavy imports
(dagster, duckdb, plotly) stay inside the command functions so ``mlperf-dagster rouge`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "mlperf_assets.commands.pipeline",  # demo, run, validate-config
    "mlperf_assets.commands.results",  # ingest, query
    "mlperf_assets.commands.scoring",  # accuracy, rouge
    "mlperf_assets.commands.reporting",  # report
    "mlperf_assets.commands.remote",  # monitor, render-k8s
)


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, locked database): printed as one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlperf-dagster",
        description="Run MLPerf Inference LLM benchmarks on a fleet with Dagster; keep every result in DuckDB.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that group is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
