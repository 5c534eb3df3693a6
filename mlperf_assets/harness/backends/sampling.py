"""Generation settings shared by the model backends (``vllm``, ``openai``): the MLPerf reference sampling and the
``--sampling-arg KEY=VALUE`` override (for tests and experiments; an override makes a run non-reference, and the
manifest records the effective settings)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Iterable

from ..errors import HarnessError

# language/llama3.1-8b/SUT_VLLM.py: greedy, 128 new tokens at most, the model's own EOS ends a summary.
LLAMA_SAMPLING: dict[str, Any] = {
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 1,
    "seed": 42,
    "max_tokens": 128,
    "min_tokens": 1,
}
# gpt-j's reference is beam search (num_beams=4, min_new_tokens=30); the backends here decode greedily with the same
# length limits, which is fine for smoke tests but not a closed-division gpt-j result.
GPTJ_SAMPLING: dict[str, Any] = {**LLAMA_SAMPLING, "min_tokens": 30}


def reference_sampling(benchmark: str) -> dict[str, Any]:
    return dict(GPTJ_SAMPLING if benchmark.startswith("gptj") else LLAMA_SAMPLING)


def parse_key_values(items: Iterable[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict; each value JSON-decoded when it parses (``true``, ``3``, ``null``), else a string."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise HarnessError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} ignore_eos=true")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def add_sampling_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--sampling-arg`` once (both model backends call this on the same run parser)."""
    if any("--sampling-arg" in action.option_strings for action in parser._actions):
        return
    parser.add_argument(
        "--sampling-arg", dest="sampling_args", action="append", default=[], metavar="KEY=VALUE",
        help="override one MLPerf reference sampling setting of a model backend (temperature=0, top_p=1, top_k=1, "
             "seed=42, max_tokens=128, min_tokens=1), e.g. --sampling-arg ignore_eos=true --sampling-arg "
             "max_tokens=32; VALUE is JSON when it parses, null removes the setting; repeatable. "
             "Any override makes the run non-reference (recorded in run_manifest.json)",
    )


def effective_sampling(benchmark: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
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
