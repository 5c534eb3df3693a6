"""Errors shared by the orchestrator and the node-side harness. Standard library only: the harness imports this."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, locked database): printed as one line, exit 2."""
