"""The one interface every backend implements.

LoadGen owns timing; the SUT (``harness/sut.py``) only queues work and hands it to a backend:
- Offline calls :meth:`Backend.generate` from worker threads with batches of QSL indices;
- Server and SingleStream call :meth:`Backend.stream`, which returns at once and later calls
  ``on_first_token`` (exactly once, before) ``on_complete`` (exactly once), from any thread.
Token ids are plain Python ints; the SUT packs them into int32 (llama) or int64 (gpt-j) buffers.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Protocol, Sequence

TokenCallback = Callable[[Sequence[int]], None]


class DatasetView(Protocol):
    """What a backend may read of the prepared dataset (implemented by ``harness.dataset.PreparedDataset``)."""

    benchmark: str  # "llama3.1-8b" | "llama3.1-8b-edge" | "gptj"
    tokenizer_name: str  # "byte" or a Hugging Face name/path

    def __len__(self) -> int: ...
    def prompt_token_ids(self, index: int) -> list[int]: ...
    def article(self, index: int) -> str: ...
    def reference_token_ids(self, index: int) -> list[int]: ...


class Backend(ABC):
    name: ClassVar[str]
    # "model" (a real LLM), "baseline" (extractive), "harness-ceiling" (replay): shown beside every figure.
    kind: ClassVar[str] = "model"

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's engine options (prefixed, e.g. ``--vllm-dtype``) to the run CLI."""

    @classmethod
    @abstractmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "Backend":
        """Build from the parsed run CLI. ``args.engine_args`` is the ``--engine-arg KEY=VALUE`` mapping (values
        JSON-decoded where they parse), the generic way the orchestrator passes a config's ``engine:`` mapping."""

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
