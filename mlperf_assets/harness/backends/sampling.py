"""Generation settings of the model backends (``vllm``, ``openai``): the benchmark's MLPerf reference sampling
(``harness/benchmarks.py``) with the ``--sampling-arg KEY=VALUE`` overrides applied (for tests and experiments; an
override makes a run non-reference, and the manifest records the effective settings)."""

from __future__ import annotations

from typing import Any, Mapping

from ..benchmarks import BENCHMARKS
from ..errors import HarnessError


def reference_sampling(benchmark: str) -> dict[str, Any]:
    try:
        return dict(BENCHMARKS[benchmark].sampling)
    except KeyError:
        raise HarnessError(f"unknown benchmark {benchmark!r}: expected one of {', '.join(BENCHMARKS)}") from None


def effective_sampling(benchmark: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The reference settings for ``benchmark`` with ``overrides`` applied (a ``None`` value removes a key)."""
    params = reference_sampling(benchmark)
    for key, value in (overrides or {}).items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise HarnessError(f"--sampling-arg max_tokens={max_tokens!r}: must be a positive integer")
    return params
