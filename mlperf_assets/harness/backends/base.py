"""The one interface every backend implements, and the typed arguments a backend is built from.

LoadGen owns timing; the SUT (``harness/sut.py``) only queues work and hands it to a backend:
- Offline calls :meth:`Backend.generate` from worker threads with batches of QSL indices;
- Server and SingleStream call :meth:`Backend.stream`, which returns at once and later calls
  ``on_first_token`` (exactly once, before) ``on_complete`` (exactly once), from any thread.
Token ids are plain Python ints; the SUT packs them into the benchmark's token dtype (``harness/benchmarks.py``).

A backend is built from :class:`BackendArgs` (``Backend.from_args``): the engine-argument mapping (a config's
``engine:`` mapping, passed as ``--engine-arg KEY=VALUE``, plus the backend's own flags, declared as
:class:`EngineFlag` rows) and the sampling overrides. ``from_cli_args`` is the one adapter from a parsed command line.
"""

from __future__ import annotations

import argparse
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol, Sequence

from ..errors import HarnessError
from . import BACKENDS  # the registry's rows (the package imports this module for type hints only)

TokenCallback = Callable[[Sequence[int]], None]
log = logging.getLogger(__name__)

SAMPLING_ARG_HELP = (
    "override one MLPerf reference sampling setting of a model backend (temperature=0, top_p=1, top_k=1, seed=42, "
    "max_tokens=128, min_tokens=1), e.g. --sampling-arg ignore_eos=true --sampling-arg max_tokens=32; VALUE is JSON "
    "when it parses, null removes the setting; repeatable. Any override makes the run non-reference (recorded in "
    "run_manifest.json)"
)


def parse_key_values(items: Iterable[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict; each value JSON-decoded when it parses (``true``, ``3``, ``{"a": 1}``, ``null``),
    else kept as a string. The one parser of ``--engine-arg`` and ``--sampling-arg``."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise HarnessError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} max_tokens=32")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def format_key_value(key: str, value: Any) -> str:
    """The inverse of :func:`parse_key_values` for one pair: strings stay bare unless they would parse as JSON
    (``"1"``, ``"true"``), which are quoted so they arrive as strings; everything else is written as JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


@dataclass(frozen=True)
class EngineFlag:
    """One command-line flag of a backend that sets one engine argument (``--dtype`` -> ``dtype``)."""

    flags: tuple[str, ...]
    key: str
    type: Callable[[str], Any] = str
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BackendArgs:
    """What a backend is built from."""

    engine_args: Mapping[str, Any] = field(default_factory=dict)
    sampling_overrides: Mapping[str, Any] = field(default_factory=dict)
    scenario: str | None = None  # the LoadGen scenario the backend will serve (per-scenario engine defaults)

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace, backend: type["Backend"]) -> "BackendArgs":
        """From a parsed command line: ``ns.engine_args`` (the ``--engine-arg`` strings, or a mapping already
        parsed), then ``backend``'s own flags, which win over an ``--engine-arg`` of the same key."""
        given = getattr(ns, "engine_args", None) or {}
        engine = dict(given) if isinstance(given, Mapping) else parse_key_values(given, "--engine-arg")
        for f in backend.cli_flags:
            value = getattr(ns, backend.flag_dest(f), None)
            if value is None:
                continue
            if f.key in engine and engine[f.key] != value:
                log.info("%s: %s=%s overrides --engine-arg %s=%r", backend.name, f.flags[0], value, f.key,
                         engine[f.key])
            engine[f.key] = value
        return cls(engine, parse_key_values(getattr(ns, "sampling_args", None), "--sampling-arg"),
                   _scenario_label(getattr(ns, "scenario", None), getattr(ns, "lg_model_name", None)))


def _scenario_label(scenario: str | None, lg_model_name: str | None) -> str | None:
    """The scenario as MLPerf names it: a Server run of llama3_1-8b-interactive is "Interactive" (its own latency
    limits, so its own engine defaults)."""
    from ..benchmarks import LOADGEN_MODELS

    model = LOADGEN_MODELS.get(lg_model_name or "")
    return model.server_scenario_label if scenario == "Server" and model is not None else scenario


class DatasetView(Protocol):
    """What a backend may read of the prepared dataset (implemented by ``harness.dataset.PreparedDataset``)."""

    benchmark: str  # a name of harness/benchmarks.py
    tokenizer_name: str  # "byte" or a Hugging Face name/path

    def __len__(self) -> int: ...
    def prompt_token_ids(self, index: int) -> list[int]: ...
    def article(self, index: int) -> str: ...
    def reference_token_ids(self, index: int) -> list[int]: ...


class Backend(ABC):
    name: ClassVar[str]
    # What its figures are (shown beside every figure): its registry row's kind, the one place.
    kind: ClassVar[str] = "model"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.kind = BACKENDS[cls.name].kind

    # Command line: the backend's flags (each sets one engine argument) under one --help group, and whether it
    # takes --sampling-arg (the model backends).
    cli_title: ClassVar[str | None] = None
    cli_description: ClassVar[str | None] = None
    cli_flags: ClassVar[tuple[EngineFlag, ...]] = ()
    uses_sampling: ClassVar[bool] = False

    @classmethod
    def flag_dest(cls, flag: EngineFlag) -> str:
        return f"{cls.name}_{flag.key}"

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's flags to the run CLI (``--sampling-arg`` once, for all the backends that take it)."""
        if cls.cli_flags:
            group = parser.add_argument_group(cls.cli_title or f"{cls.name} backend", cls.cli_description)
            for f in cls.cli_flags:
                group.add_argument(*f.flags, dest=cls.flag_dest(f), type=f.type, default=None, metavar=f.metavar,
                                   choices=f.choices, help=f.help)
        if cls.uses_sampling and parser.get_default("sampling_args") is None:
            parser.add_argument("--sampling-arg", dest="sampling_args", action="append", default=[],
                                metavar="KEY=VALUE", help=SAMPLING_ARG_HELP)

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "Backend":
        return cls.from_args(BackendArgs.from_cli_args(ns, cls))

    @classmethod
    @abstractmethod
    def from_args(cls, args: BackendArgs) -> "Backend":
        """Build from the typed arguments; refuse engine arguments the backend does not know (HarnessError)."""

    @abstractmethod
    def start(self, dataset: DatasetView, streaming: bool) -> None:
        """Load the model / connect; called once before LoadGen starts (not timed by LoadGen)."""

    @abstractmethod
    def generate(self, indices: Sequence[int]) -> list[list[int]]:
        """Offline: output token ids for each QSL index, in order. Blocking; called from worker threads."""

    @abstractmethod
    def stream(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        """Server/SingleStream: start one request and return at once."""

    def provenance(self) -> dict[str, Any]:
        """Versions and engine arguments recorded in run_manifest.json."""
        return {"backend": self.name, "kind": self.kind}

    def engine_stats(self) -> Mapping[str, float] | None:
        """The engine's own gauges and counters now, or None where the backend has none. Keys (each optional):
        ``kv_cache_usage_pct`` (0-100), ``requests_running``, ``requests_waiting``, ``prompt_tokens_total`` and
        ``generation_tokens_total`` (counters since start; the telemetry sampler turns them into rates). Called about
        once a second from the telemetry thread: must be cheap and must not block."""
        return None

    def preferred_batch_size(self) -> int:
        """How many QSL indices the Offline SUT hands to one ``generate`` call."""
        return 64

    def stop(self) -> None:
        """Release the engine; called once after LoadGen finishes (also on failure)."""

    # Set by the SUT before ``start``. A backend calls :meth:`report_failure` (from any thread) when a request has
    # failed for good (server gone, retries exhausted): the run then ends as "failed" at once instead of waiting for
    # a completion that will never come. An exception raised by ``generate`` or ``stream`` is reported the same way.
    failure_handler: Callable[[BaseException], None] | None = None

    def report_failure(self, exc: BaseException) -> None:
        handler = self.failure_handler
        if handler is None:
            raise exc
        handler(exc)
