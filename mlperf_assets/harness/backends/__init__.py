"""Backend registry: one row per backend (:class:`BackendEntry`), its class imported only when chosen (backend
libraries are optional).

A backend module must import without its library installed (import the library inside ``start``), so ``--help``
lists every backend's flags on any node. Adding a backend: its module and one row here; the ``--backend`` choices,
the config's ``backend`` literal, its baseline label, how the checkpoint reaches it and whether the planner gives
it the node's GPUs all come from this table.

This module imports ``.base`` only for type hints, so ``base`` can read the table (``Backend.kind``) without an
import circle.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import HarnessError

if TYPE_CHECKING:
    from .base import Backend, BackendArgs

BackendKind = Literal["model", "baseline", "harness-ceiling", "simulation"]


@dataclass(frozen=True)
class BackendEntry:
    """What the rest of the project knows of a backend without importing it."""

    target: str  # "module:Class"
    # What its figures are, shown beside every figure: a real LLM, extractive lead-3, the harness's own ceiling
    # (replay), a simulated engine
    kind: BackendKind
    checkpoint_arg: str | None = None  # the engine argument the config's checkpoint goes to (None: takes none)
    # Whether one engine runs on the node's GPUs: the planner then sets tensor_parallel_size (and data parallelism)
    # from the node's ``gpus``, and a runner that hands GPUs to a container checks the spec against them
    uses_node_gpus: bool = False


BACKENDS: dict[str, BackendEntry] = {
    "vllm": BackendEntry("mlperf_assets.harness.backends.vllm_backend:VLLMBackend", "model",
                         checkpoint_arg="model", uses_node_gpus=True),
    # the server owns its GPUs: the node's are not the harness's to hand out
    "openai": BackendEntry("mlperf_assets.harness.backends.openai_backend:OpenAIBackend", "model",
                           checkpoint_arg="api_model"),
    "extractive": BackendEntry("mlperf_assets.harness.backends.extractive:ExtractiveBackend", "baseline"),
    "replay": BackendEntry("mlperf_assets.harness.backends.replay:ReplayBackend", "harness-ceiling"),
    "sim": BackendEntry("mlperf_assets.harness.backends.sim:SimBackend", "simulation"),
}  # fmt: skip

BACKEND_NAMES = tuple(BACKENDS)  # the --backend choices and the config's backend literal
BASELINE_BACKENDS = tuple(n for n, e in BACKENDS.items() if e.kind != "model")  # labelled, never a model
log = logging.getLogger(__name__)


def backend_class(name: str) -> type[Backend]:
    try:
        target = BACKENDS[name].target
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
    for name, entry in BACKENDS.items():
        try:
            cls = backend_class(name)
        except HarnessError as exc:
            module = entry.target.partition(":")[0]
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
