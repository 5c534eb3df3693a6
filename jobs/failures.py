"""The user's words for a failed Dagster step, shared by the failure sensor and ``mlperf-dagster run``."""

from __future__ import annotations

from typing import Any


def step_failure_message(event: Any) -> str:
    """One line for a ``STEP_FAILURE`` event: the ``dagster.Failure``'s description when the asset raised one, else
    the user code's exception (Dagster wraps it in a step-execution error; its cause is the user's)."""
    data = event.step_failure_data
    if data is not None and data.user_failure_data is not None and data.user_failure_data.description:
        text = data.user_failure_data.description
    else:
        error = data.error if data is not None else None
        while error is not None and error.cause is not None and "StepExecutionError" in (error.cls_name or ""):
            error = error.cause
        text = error.message if error is not None else ""
    lines = text.strip().splitlines()
    return lines[0] if lines else "failed"
