"""The LoadGen QSL and SUT: queue work from LoadGen's issue thread to a backend, complete exactly once.

- Offline: ``issue_queries`` cuts the query into batches on a queue; worker threads call ``backend.generate`` (or the
  optional fast path ``backend.generate_packed``) and complete each batch with one ``QuerySamplesComplete`` call.
- Server / SingleStream: ``backend.stream`` per sample; the first streamed token is reported with
  ``FirstTokenComplete`` and the end with ``QuerySamplesComplete``; a sample is never completed twice.

Response data is the output token ids, little-endian, in the benchmark's token dtype; a completion carries
``n_tokens`` where the benchmark's reference sends it (``harness/benchmarks.py``: gpt-j's does not, and LoadGen
infers its tokens/s from a scaling factor). Buffers
are referenced until ``QuerySamplesComplete`` has returned (LoadGen copies what it logs during that call).

Per-sample timings go to an in-memory deque (appends are thread-safe and cheap); the progress thread drains it
into samples.jsonl, so no file or JSON work happens on LoadGen's or the workers' threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from itertools import chain
from typing import Any, NamedTuple, Sequence

import numpy as np

from .backends.base import Backend, DatasetView
from .benchmarks import BENCHMARKS

log = logging.getLogger("mlperf_assets.harness.sut")


def token_dtype(benchmark: str) -> np.dtype:
    """The benchmark's token dtype, little-endian, as the reference evaluation decodes it."""
    return np.dtype(BENCHMARKS[benchmark].token_dtype).newbyteorder("<")


def sends_n_tokens(benchmark: str) -> bool:
    return BENCHMARKS[benchmark].sends_n_tokens


class PackedOutputs(NamedTuple):
    """Output tokens of a batch packed for LoadGen: ``owner`` keeps the memory alive while the addresses are used."""

    owner: Any
    addresses: Sequence[int]
    sizes: Sequence[int]  # bytes
    n_tokens: Sequence[int]


def pack_token_lists(outputs: Sequence[Sequence[int]], dtype: np.dtype) -> PackedOutputs:
    """One contiguous buffer for a whole batch (one allocation, no per-sample numpy call)."""
    counts = [len(o) for o in outputs]
    flat = np.fromiter(chain.from_iterable(outputs), dtype=dtype, count=sum(counts))
    itemsize = flat.itemsize
    base = flat.ctypes.data
    addresses, sizes = [], []
    offset = 0
    for c in counts:
        addresses.append(base + offset)
        size = c * itemsize
        sizes.append(size)
        offset += size
    return PackedOutputs(flat, addresses, sizes, counts)


def _as_buffer(tokens: Sequence[int], dtype: np.dtype) -> tuple[np.ndarray, int, int]:
    arr = np.ascontiguousarray(tokens, dtype=dtype)
    return arr, (arr.__array_interface__["data"][0] if arr.size else 0), arr.nbytes


class HarnessQSL:
    """All samples live in memory (the prepared dataset), so load/unload have nothing to do."""

    def __init__(self, total: int, performance_sample_count: int) -> None:
        import mlperf_loadgen as lg

        self.total = total
        self.performance_sample_count = performance_sample_count
        self.handle = lg.ConstructQSL(total, performance_sample_count, self._load, self._unload)

    def _load(self, indices) -> None:
        pass

    def _unload(self, indices) -> None:
        pass

    def destroy(self) -> None:
        import mlperf_loadgen as lg

        lg.DestroyQSL(self.handle)


class _Stream:
    """One streamed sample: its LoadGen id, QSL index and times (ns since the run's reference)."""

    __slots__ = ("sut", "id", "index", "issue_ns", "first_ns", "done")

    def __init__(self, sut: "HarnessSUT", sample_id: int, index: int, issue_ns: int) -> None:
        self.sut, self.id, self.index, self.issue_ns = sut, sample_id, index, issue_ns
        self.first_ns: int | None = None
        self.done = False

    def on_first_token(self, tokens: Sequence[int]) -> None:
        self.sut._first_token(self, tokens)

    def on_complete(self, tokens: Sequence[int]) -> None:
        self.sut._complete(self, tokens)


class HarnessSUT:
    def __init__(
        self,
        backend: Backend,
        dataset: DatasetView,
        scenario: str,
        *,
        t0_ns: int,
        batch_size: int | None = None,
        workers: int = 1,
        total: int | None = None,
    ) -> None:
        import mlperf_loadgen as lg

        self._lg = lg
        self.backend = backend
        self.scenario = scenario
        self.streaming = scenario != "Offline"
        self.dtype = token_dtype(dataset.benchmark)
        self.n_tokens = sends_n_tokens(dataset.benchmark)
        self.t0 = t0_ns
        self.batch_size = max(1, batch_size or backend.preferred_batch_size())
        self.workers = max(1, workers)
        self.total = total  # samples LoadGen will issue, when known
        self.issued = 0
        self.completed = 0
        self.output_tokens = 0
        self.duplicates = 0
        self.records: deque = deque()  # drained by the progress writer
        self.error: BaseException | None = None
        self.failed = threading.Event()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._generate_packed = getattr(backend, "generate_packed", None)
        backend.failure_handler = self.fail
        self.handle = None

    # ---------------------------------------------------------------- lifecycle
    def construct(self):
        # The "fast" SUT hands over plain lists of response ids and QSL indices: no QuerySample objects to build
        # and read per sample.
        self.handle = self._lg.ConstructFastSUT(self.issue_queries, self.flush_queries)
        if not self.streaming:
            for n in range(self.workers):
                t = threading.Thread(target=self._worker, name=f"offline-worker-{n}", daemon=True)
                t.start()
                self._threads.append(t)
        return self.handle

    def destroy(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()
        if self.handle is not None:
            self._lg.DestroySUT(self.handle)
            self.handle = None

    def fail(self, exc: BaseException) -> None:
        """A backend failed for good: remember the first error; the run loop ends the run as failed."""
        with self._lock:
            if self.error is None:
                self.error = exc
        self.failed.set()

    def counters(self) -> tuple[int, int, int]:
        return self.issued, self.completed, self.output_tokens

    # ---------------------------------------------------------------- LoadGen callbacks (GIL held; return fast)
    def issue_queries(self, ids: list[int], indices: list[int]) -> None:
        now = time.monotonic_ns() - self.t0
        if self.streaming:
            for sample_id, index in zip(ids, indices):
                self._start_stream(_Stream(self, sample_id, index, now))
            return
        n = len(ids)
        with self._lock:
            self.issued += n
            if self.total is None:  # Offline sends everything in one query: now the total is known
                self.total = n
        bs = self.batch_size
        for i in range(0, n, bs):
            self._queue.put((ids[i : i + bs], indices[i : i + bs], now))

    def flush_queries(self) -> None:
        pass

    # ---------------------------------------------------------------- Offline
    def _worker(self) -> None:
        lg = self._lg
        QSR = lg.QuerySampleResponse
        while True:
            item = self._queue.get()
            if item is None:
                return
            ids, indices, issue_ns = item
            if self.failed.is_set():
                continue  # the run is ending as failed; nothing more to compute
            try:
                if self._generate_packed is not None:
                    packed = self._generate_packed(indices)
                else:
                    outputs = self.backend.generate(indices)
                    if len(outputs) != len(indices):
                        raise RuntimeError(
                            f"backend {self.backend.name!r} returned {len(outputs)} outputs for {len(indices)} prompts"
                        )
                    packed = pack_token_lists(outputs, self.dtype)
            except BaseException as exc:  # noqa: BLE001 - any backend failure ends the run as failed
                log.exception("backend failed on a batch of %d samples", len(indices))
                self.fail(exc)
                continue
            if self.n_tokens:
                responses = [QSR(*r) for r in zip(ids, packed.addresses, packed.sizes, packed.n_tokens)]
            else:
                responses = [QSR(*r) for r in zip(ids, packed.addresses, packed.sizes)]
            lg.QuerySamplesComplete(responses)
            done = time.monotonic_ns() - self.t0
            del responses
            self.records.append((indices, issue_ns, None, done, packed.n_tokens))
            ntok = sum(packed.n_tokens)
            with self._lock:
                self.completed += len(ids)
                self.output_tokens += ntok

    # ---------------------------------------------------------------- Server / SingleStream
    def _start_stream(self, req: _Stream) -> None:
        with self._lock:
            self.issued += 1
        if self.failed.is_set():
            return
        try:
            self.backend.stream(req.index, req.on_first_token, req.on_complete)
        except BaseException as exc:  # noqa: BLE001
            log.exception("backend failed to start sample %d", req.index)
            self.fail(exc)

    def _first_token(self, req: _Stream, tokens: Sequence[int]) -> None:
        with self._lock:
            if req.first_ns is not None or req.done:
                self.duplicates += 1
                return
            req.first_ns = time.monotonic_ns() - self.t0
        arr, ptr, size = _as_buffer(tokens, self.dtype)
        self._lg.FirstTokenComplete([self._lg.QuerySampleResponse(req.id, ptr, size)])
        del arr  # referenced until FirstTokenComplete returned

    def _complete(self, req: _Stream, tokens: Sequence[int]) -> None:
        with self._lock:
            if req.done:
                self.duplicates += 1
                return
            req.done = True
            missing_first = req.first_ns is None
            if missing_first:
                req.first_ns = time.monotonic_ns() - self.t0
        if missing_first:  # LoadGen needs a first token before the completion in these scenarios
            arr, ptr, size = _as_buffer(tokens[:1], self.dtype)
            self._lg.FirstTokenComplete([self._lg.QuerySampleResponse(req.id, ptr, size)])
        arr, ptr, size = _as_buffer(tokens, self.dtype)
        n = int(arr.size)
        if self.n_tokens:
            response = self._lg.QuerySampleResponse(req.id, ptr, size, n)
        else:
            response = self._lg.QuerySampleResponse(req.id, ptr, size)
        self._lg.QuerySamplesComplete([response])
        done = time.monotonic_ns() - self.t0
        del arr
        self.records.append((req.index, req.issue_ns, req.first_ns, done, n))
        with self._lock:
            self.completed += 1
            self.output_tokens += n


def drain_sample_lines(records: deque, max_records: int) -> list[str]:
    """Pop up to ``max_records`` timing records and format them as samples.jsonl lines (progress thread)."""
    lines: list[str] = []
    for _ in range(max_records):
        try:
            index, issue_ns, first_ns, done, n = records.popleft()
        except IndexError:
            break
        if isinstance(index, list):  # an Offline batch
            head = f', "issue_ns": {issue_ns}, "first_token_ns": null, "complete_ns": {done}, "output_tokens": '
            lines.extend(f'{{"qsl_idx": {i}{head}{k}}}\n' for i, k in zip(index, n))
        else:
            first = "null" if first_ns is None else first_ns
            lines.append(f'{{"qsl_idx": {index}, "issue_ns": {issue_ns}, "first_token_ns": {first}, '
                         f'"complete_ns": {done}, "output_tokens": {n}}}\n')
    return lines
