"""Errors the harness reports as one line (exit code 2): bad input the user can fix."""

from __future__ import annotations

from mlperf_assets.cli import UserError  # a light module: argparse only, no dagster


class HarnessError(UserError):
    """Bad input to the harness (dataset, settings, tokenizer, backend choice): one message saying what and where."""


class DatasetError(HarnessError):
    pass


class SettingsError(HarnessError):
    pass


class TokenizerError(HarnessError):
    pass
