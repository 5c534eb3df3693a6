"""Replay: answers every sample at once with the dataset's reference summary tokens (``tok_output``).

It measures the harness's own ceiling and feeds pipeline tests; its figures are labelled ``harness-ceiling`` and
are never a model's. All outputs are packed once, at start, into one buffer of the LoadGen token dtype, so the
Offline fast path (``generate_packed``) hands LoadGen addresses into it without per-sample numpy work.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import HarnessError
from ..sut import PackedOutputs, token_dtype
from .base import Backend, BackendArgs, DatasetView, TokenCallback


class ReplayBackend(Backend):
    name = "replay"

    def __init__(self) -> None:
        self._flat: np.ndarray | None = None

    @classmethod
    def from_args(cls, args: BackendArgs) -> "ReplayBackend":
        if args.engine_args:
            raise HarnessError(f"replay backend takes no --engine-arg (got {sorted(args.engine_args)})")
        if args.sampling_overrides:
            raise HarnessError("replay backend takes no --sampling-arg (it answers with the reference tokens)")
        return cls()

    def start(self, dataset: DatasetView, streaming: bool) -> None:
        outputs = [dataset.reference_token_ids(i) for i in range(len(dataset))]
        counts = [len(o) for o in outputs]
        flat = np.fromiter((t for o in outputs for t in o), dtype=token_dtype(dataset.benchmark), count=sum(counts))
        self._flat = flat
        base, item = flat.ctypes.data, flat.itemsize
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64) if counts else np.zeros(0, np.int64)
        self._address = [base + int(o) * item for o in offsets]
        self._size = [c * item for c in counts]
        self._count = counts
        self._views = [flat[int(o): int(o) + c] for o, c in zip(offsets, counts)]

    def generate(self, indices: Sequence[int]) -> list[list[int]]:
        return [self._views[i].tolist() for i in indices]

    def generate_packed(self, indices: Sequence[int]) -> PackedOutputs:
        a, s, c = self._address, self._size, self._count
        return PackedOutputs(self._flat, [a[i] for i in indices], [s[i] for i in indices], [c[i] for i in indices])

    def stream(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        view = self._views[index]
        on_first_token(view[:1])
        on_complete(view)

    def preferred_batch_size(self) -> int:
        return 2048

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, "kind": self.kind, "versions": {}, "engine_args": {}, "token_ids": "exact"}
