"""`mlperf-dagster verify-compliance FOLDER`: verify a compliance run (TEST06) from the orchestrator's command line.

The harness's own subcommand, registered here as it is there (its row in ``harness/cli.py``'s ``SUBCOMMANDS``: the
same arguments, help and output, one code path). Bad input is a :class:`UserError` (``ComplianceError``): one line,
exit 2; a verification that fails exits 1.
"""

from __future__ import annotations

import argparse

COMMAND = "verify-compliance"


def register(subparsers: argparse._SubParsersAction) -> None:
    from mlperf_assets.harness.cli import SUBCOMMANDS

    name, args_cls, main_fn, help_text, description, epilog = next(row for row in SUBCOMMANDS if row[0] == COMMAND)
    parser = subparsers.add_parser(name, help=help_text, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args_cls.add_cli_args(parser)
    parser.set_defaults(func=lambda ns: main_fn(args_cls.from_cli_args(ns)))
