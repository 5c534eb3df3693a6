"""Errors the harness reports as one line (exit code 2): bad input the user can fix."""

from __future__ import annotations

from mlperf_assets.errors import UserError


class HarnessError(UserError):
    """Bad input to the harness (dataset, settings, tokenizer, backend choice): one message saying what and where."""


class DatasetError(HarnessError):
    pass


class SettingsError(HarnessError, ValueError):
    """A LoadGen setting or name that LoadGen would refuse or silently ignore (also a ValueError, for callers that
    validate specs before any harness runs)."""


class TokenizerError(HarnessError):
    pass
