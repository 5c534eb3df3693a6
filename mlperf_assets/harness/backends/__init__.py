"""Backend registry: name -> "module:Class", imported only when chosen (backend libraries are optional).

A backend module must import without its library installed (import the library inside ``start``), so ``--help``
lists every backend's flags on any node. Adding a backend: its module and one line here; the ``--backend`` choices
and the config's ``backend`` literal come from this table.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging

from ..errors import HarnessError
from .base import BACKEND_KINDS, Backend, BackendArgs  # noqa: F401  (BACKEND_KINDS: part of the registry)

BACKENDS: dict[str, str] = {
    "vllm": "mlperf_assets.harness.backends.vllm_backend:VLLMBackend",
    "openai": "mlperf_assets.harness.backends.openai_backend:OpenAIBackend",
    "extractive": "mlperf_assets.harness.backends.extractive:ExtractiveBackend",
    "replay": "mlperf_assets.harness.backends.replay:ReplayBackend",
    "sim": "mlperf_assets.harness.backends.sim:SimBackend",
}

BACKEND_NAMES = tuple(BACKENDS)  # the --backend choices and the config's backend literal
log = logging.getLogger(__name__)


def backend_class(name: str) -> type[Backend]:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise HarnessError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise HarnessError(f"backend {name!r} cannot be imported ({exc}); is its package installed?") from exc
    return getattr(module, class_name)


def add_backend_cli_args(parser: argparse.ArgumentParser) -> list[str]:
    """Add every importable backend's options, returns the names added."""
    added = []
    for name in BACKENDS:
        try:
            cls = backend_class(name)
        except HarnessError as exc:
            module = BACKENDS[name].partition(":")[0]
            if importlib.util.find_spec(module) is not None:  # written, but broken: say so
                log.warning("backend %s: its options are unavailable: %s", name, exc.__cause__ or exc)
            continue
        cls.add_cli_args(parser)  # each backend makes its own argument group
        added.append(name)
    return added


def build_backend(name: str, args: BackendArgs, data_parallel_size: int = 1) -> Backend:
    """The backend a run uses: ``name`` built from ``args``, or ``data_parallel_size`` replicas of it behind one SUT
    (``replicas.ReplicatedBackend``: one worker process and GPU group each; any registered backend)."""
    cls = backend_class(name)
    if data_parallel_size <= 1:
        return cls.from_args(args)
    from .replicas import ReplicatedBackend

    return ReplicatedBackend(name, args, data_parallel_size)
