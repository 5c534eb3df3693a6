"""``--backend sim``: a SIMULATED LLM server with a configurable capacity model, streaming on a real clock.

It exists to test the platform under realistic load on CPUs (capacity search, load tests): no model runs, and its
figures are labelled ``simulation`` everywhere (run_manifest.json, ``backend_kind`` in the store, report legends),
like ``replay``'s are labelled ``harness-ceiling``. The output tokens are the dataset's reference tokens (cut or
repeated to the modelled length), so an accuracy run scores the reference, not a model.

The capacity model (:class:`CapacityModel`, engine arguments) is continuous batching as vLLM schedules it: a
scheduler *step* admits waiting requests (FIFO) while fewer than ``max_num_seqs`` run, prefills the admitted prompts
and decodes one token for every running sequence. A step lasts::

    decode_step_ms + decode_ms_per_seq * batch + prompt tokens admitted / prefill_tokens_per_s

An admitted request gets its first token at the end of its admission step and one more token per step after
that; it completes with its last token (``output_tokens``, or the reference summary's length capped at
``max_tokens``). So TTFT = queueing + the admission step, and TPOT = the mean step time over the request's life,
which grows with the batch: the load that keeps p99 TPOT under a limit is what the model's parameters say
(:func:`simulate` replays the same scheduler in virtual time; the capacity search's tests compare with it).

One scheduler thread runs the steps on an absolute timeline (each step ends ``duration`` after the previous one
ended, so a late wake-up is caught up by the following steps instead of slowing the model down); its work per step
is proportional to the requests admitted and finished in it, not to the batch, so 10,000+ tokens/s cost little
CPU. How late the steps ran is recorded in the manifest (``sim_timing``): the evidence the simulator was not the
bottleneck.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import HarnessError
from .base import Backend, BackendArgs, DatasetView, EngineFlag, TokenCallback

# A step more than this late re-anchors the timeline (the process was stopped, or the machine is far too slow):
# catching up a whole second would emit a second's tokens at once.
MAX_CATCH_UP_S = 1.0
# The capacity model's sane ranges: beyond them a run never ends (a step of hours), the clock overflows, or the
# simulator holds absurd batches. A real engine's step takes milliseconds; 10 s is far slower than any. Answers and
# batches are bounded by Llama 3.1's context (128k tokens).
MAX_STEP_MS = 10_000.0
MIN_PREFILL_TOKENS_PER_S, MAX_PREFILL_TOKENS_PER_S = 1.0, 1e12  # 1e12: prefill takes no time
MAX_SEQ_TOKENS = 131_072
MAX_SEQS = 131_072


@dataclass(frozen=True)
class CapacityModel:
    """The simulated server's capacity (the ``--engine-arg`` keys of ``--backend sim``)."""

    max_num_seqs: int = 256  # sequences in one running batch
    prefill_tokens_per_s: float = 400_000.0  # prompt tokens prefilled per second
    decode_step_ms: float = 8.0  # fixed cost of one scheduler step
    decode_ms_per_seq: float = 0.06  # extra step time per sequence in the batch
    output_tokens: int = 0  # tokens per answer; 0: the reference summary's length, capped at max_tokens
    max_tokens: int = 128  # cap on the reference length (the MLPerf reference's max_tokens)

    def __post_init__(self) -> None:
        problems = []

        def in_range(key: str, lo: float, hi: float, unit: str = "", also: str = "") -> bool:
            value = getattr(self, key)
            if isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi:
                return True
            what = "an integer" if _KINDS[key] is int else "a finite number"
            problems.append(f"{key} must be {what} between {lo:g} and {hi:g}{unit}{also} (got {value!r})")
            return False

        in_range("max_num_seqs", 1, MAX_SEQS)
        in_range("prefill_tokens_per_s", MIN_PREFILL_TOKENS_PER_S, MAX_PREFILL_TOKENS_PER_S, " tokens/s")
        steps_ok = in_range("decode_step_ms", 0, MAX_STEP_MS, " ms") & in_range("decode_ms_per_seq", 0, MAX_STEP_MS, " ms")
        if steps_ok and self.decode_step_ms + self.decode_ms_per_seq <= 0:
            problems.append("decode_step_ms and decode_ms_per_seq must not both be 0")
        if self.output_tokens != 0:
            in_range("output_tokens", 2, MAX_SEQ_TOKENS, also=", or 0 for the reference length")
        in_range("max_tokens", 2, MAX_SEQ_TOKENS)
        if problems:
            raise HarnessError("sim backend: " + "; ".join(problems))

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def step_s(self, batch: int, prefill_tokens: int) -> float:
        """Seconds one scheduler step takes with ``batch`` sequences and ``prefill_tokens`` prompt tokens admitted."""
        return (self.decode_step_ms + self.decode_ms_per_seq * batch) / 1000.0 + prefill_tokens / self.prefill_tokens_per_s

    def answer_length(self, reference_length: int) -> int:
        if self.output_tokens:
            return self.output_tokens
        return max(2, min(reference_length, self.max_tokens))

    def offline_samples_per_s(self, output_tokens: float, prompt_tokens: float) -> float:
        """Samples/s with the batch always full (what an Offline run approaches)."""
        b = self.max_num_seqs
        per_step = self.step_s(b, 0) + (b / output_tokens) * prompt_tokens / self.prefill_tokens_per_s
        return b / (output_tokens * per_step)

    def tpot_bound_qps(self, tpot_limit_s: float, output_tokens: float, prompt_tokens: float) -> float:
        """Mean-field arrival rate at which the mean step time reaches ``tpot_limit_s`` (Little's law: the batch is
        rate x answer length x step time; each step also prefills the prompts that arrived during it), capped by
        the full-batch rate. A first estimate: Poisson bursts put the p99 above the mean (see :func:`simulate`)."""
        a = self.decode_step_ms / 1000.0
        if tpot_limit_s <= a:
            return 0.0
        per_request = self.decode_ms_per_seq / 1000.0 * output_tokens + prompt_tokens / self.prefill_tokens_per_s
        rate = (1.0 - a / tpot_limit_s) / per_request
        return min(rate, self.offline_samples_per_s(output_tokens, prompt_tokens))


class _Request:
    __slots__ = ("index", "prompt_tokens", "n_tokens", "arrival", "first", "done", "on_first", "on_complete")

    def __init__(self, index: int, prompt_tokens: int, n_tokens: int, arrival: float,
                 on_first: Callable | None = None, on_complete: Callable | None = None) -> None:
        self.index, self.prompt_tokens, self.n_tokens, self.arrival = index, prompt_tokens, n_tokens, arrival
        self.first = self.done = math.nan
        self.on_first, self.on_complete = on_first, on_complete


class Scheduler:
    """The model's continuous batching, clock-free: :meth:`begin_step` admits and says how long the step lasts,
    :meth:`end_step` says which requests finished with it. Both clocks (real and virtual) drive this one class."""

    def __init__(self, model: CapacityModel) -> None:
        self.model = model
        self.waiting: deque[_Request] = deque()
        self.running = 0
        self.step_no = 0
        self._finishing: dict[int, list[_Request]] = {}

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def add(self, request: _Request) -> None:
        self.waiting.append(request)

    def begin_step(self) -> tuple[float, list[_Request]]:
        """Admit what fits; returns (step duration in s, the requests admitted: their first token ends this step)."""
        free = self.model.max_num_seqs - self.running
        admitted: list[_Request] = []
        prefill = 0
        waiting = self.waiting
        while free > 0 and waiting:
            r = waiting.popleft()
            admitted.append(r)
            prefill += r.prompt_tokens
            free -= 1
            self._finishing.setdefault(self.step_no + r.n_tokens - 1, []).append(r)
        self.running += len(admitted)
        return self.model.step_s(self.running, prefill), admitted

    def end_step(self) -> list[_Request]:
        done = self._finishing.pop(self.step_no, [])
        self.running -= len(done)
        self.step_no += 1
        return done


# ------------------------------------------------------------------------------------------- virtual time


@dataclass(frozen=True)
class SimulatedRun:
    """Per-request times (s) of :func:`simulate`, and LoadGen's per-sample TTFT/TPOT derived from them."""

    arrival: np.ndarray
    first: np.ndarray
    done: np.ndarray
    n_tokens: np.ndarray

    @property
    def ttft(self) -> np.ndarray:
        return self.first - self.arrival

    @property
    def tpot(self) -> np.ndarray:
        """LoadGen's per-sample TPOT: (latency - TTFT) / (n_tokens - 1)."""
        return (self.done - self.first) / (self.n_tokens - 1)

    @staticmethod
    def percentile(values: np.ndarray, p: float) -> float:
        """LoadGen's percentile: sorted[floor(n * p)]."""
        ordered = np.sort(values)
        return float(ordered[min(len(ordered) - 1, int(len(ordered) * p))])


def simulate(model: CapacityModel, arrivals: Sequence[float], prompt_tokens: Sequence[int],
             n_tokens: Sequence[int]) -> SimulatedRun:
    """Run the scheduler in virtual time on requests arriving at ``arrivals`` (s, ascending)."""
    sched = Scheduler(model)
    requests = [_Request(i, int(p), int(n), float(a)) for i, (a, p, n) in enumerate(zip(arrivals, prompt_tokens, n_tokens))]
    t, i, total = 0.0, 0, len(requests)
    while i < total or not sched.idle:
        if sched.idle:
            t = max(t, requests[i].arrival)
        while i < total and requests[i].arrival <= t:
            sched.add(requests[i])
            i += 1
        duration, admitted = sched.begin_step()
        t += duration
        for r in admitted:
            r.first = t
        for r in sched.end_step():
            r.done = t
    return SimulatedRun(np.array([r.arrival for r in requests]), np.array([r.first for r in requests]),
                        np.array([r.done for r in requests]), np.array([r.n_tokens for r in requests], dtype=float))


def poisson_arrivals(rate: float, count: int, seed: int = 0) -> np.ndarray:
    """``count`` Poisson arrival times at ``rate`` per second (LoadGen's Server schedule is Poisson too)."""
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, count))


def modelled_max_qps(
    model: CapacityModel,
    *,
    ttft_limit_s: float | None,
    tpot_limit_s: float | None,
    duration_s: float,
    min_queries: int = 0,
    prompt_tokens: Sequence[int],
    reference_tokens: Sequence[int],
    schedules: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    seeds: Sequence[int] = tuple(range(8)),
    iterations: int = 20,
) -> float:
    """The highest arrival rate whose p99 TTFT and TPOT stay within the limits in a run of ``duration_s`` (at least
    ``min_queries`` queries), according to the model, by bisection in virtual time.

    ``schedules``: arrival schedules as (gaps at rate 1, dataset indices), e.g. LoadGen's own (its Server schedule
    is drawn from fixed seeds and scales as 1/rate, so one run's issue times give it: :func:`unit_schedule`); the
    median over them is returned. Without them, Poisson schedules of ``seeds`` with uniformly drawn samples."""
    answers = [model.answer_length(r) for r in reference_tokens]
    prompts = list(prompt_tokens)
    ceiling = 2.0 * model.offline_samples_per_s(float(np.mean(answers)), float(np.mean(prompts)))
    if schedules is None:
        size = max(int(ceiling * duration_s), min_queries, 1) + 1
        schedules = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            schedules.append((rng.exponential(1.0, size), rng.integers(0, len(prompts), size)))

    def passes(rate: float, gaps: np.ndarray, picks: np.ndarray) -> bool:
        times = np.cumsum(gaps) / rate
        n = max(int(np.searchsorted(times, duration_s, side="right")), min_queries, 1)
        if n > len(times):
            raise ValueError(f"the schedule holds {len(times)} arrivals; {n} are needed at {rate:.1f}/s")
        idx = picks[:n]
        run = simulate(model, times[:n], [prompts[i] for i in idx], [answers[i] for i in idx])
        if ttft_limit_s is not None and SimulatedRun.percentile(run.ttft, 0.99) > ttft_limit_s:
            return False
        return tpot_limit_s is None or SimulatedRun.percentile(run.tpot, 0.99) <= tpot_limit_s

    results = []
    for gaps, picks in schedules:
        usable = min(ceiling, (np.sum(gaps) / duration_s) if len(gaps) else ceiling)
        lo, hi = 0.0, usable
        for _ in range(iterations):
            mid = (lo + hi) / 2
            if passes(mid, gaps, picks):
                lo = mid
            else:
                hi = mid
        results.append(lo)
    return float(np.median(results))


def unit_schedule(issue_ns: Sequence[int], indices: Sequence[int], rate: float) -> tuple[np.ndarray, np.ndarray]:
    """A run's arrival schedule at rate 1: (gaps x rate, the dataset indices in issue order), from its issue times."""
    order = np.argsort(np.asarray(issue_ns, dtype=np.int64), kind="stable")
    times = np.asarray(issue_ns, dtype=np.float64)[order] / 1e9
    gaps = np.diff(times, prepend=times[0]) * rate
    return gaps, np.asarray(indices)[order]


# --------------------------------------------------------------------------------------------- the backend


def _number(key: str, kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            if isinstance(value, bool):
                raise ValueError
            out = kind(value)
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return out
        except (TypeError, ValueError):
            raise HarnessError(f"sim backend: {key} must be {'an integer' if kind is int else 'a number'}, "
                               f"got {value!r}") from None
    return convert


_KINDS = {f.name: (int if f.type in (int, "int") else float) for f in fields(CapacityModel)}


class SimBackend(Backend):
    name = "sim"
    cli_title = "sim backend (a SIMULATED server: no model; figures labelled simulation)"
    cli_description = ("Capacity model of a continuous-batching LLM server on a real clock: a step lasts "
                       "decode_step_ms + decode_ms_per_seq x batch + admitted prompt tokens / prefill_tokens_per_s. "
                       "Also as --engine-arg KEY=VALUE.")
    cli_flags = (
        EngineFlag(("--sim-max-num-seqs",), "max_num_seqs", int, "sequences in one running batch (default 256)", "N"),
        EngineFlag(("--sim-prefill-tokens-per-s",), "prefill_tokens_per_s", float,
                   "prompt tokens prefilled per second (default 400000)", "TOK_S"),
        EngineFlag(("--sim-decode-step-ms",), "decode_step_ms", float, "fixed time of one step (default 8)", "MS"),
        EngineFlag(("--sim-decode-ms-per-seq",), "decode_ms_per_seq", float,
                   "extra step time per running sequence (default 0.06)", "MS"),
        EngineFlag(("--sim-output-tokens",), "output_tokens", int,
                   "tokens per answer (default 0: the reference summary's length, capped at max_tokens)", "N"),
        EngineFlag(("--sim-max-tokens",), "max_tokens", int, "cap on the reference length (default 128)", "N"),
    )

    def __init__(self, model: CapacityModel | None = None) -> None:
        self.model = model or CapacityModel()
        self._sched = Scheduler(self.model)
        self._cond = threading.Condition()
        self._incoming: deque[_Request] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._prompt_len: list[int] = []
        self._answer_len: list[int] = []
        self._answers: list[np.ndarray] = []
        # timing evidence (scheduler thread only)
        self._steps = 0
        self._late_steps = 0
        self._lag_sum = 0.0
        self._lag_max = 0.0
        self._reanchors = 0
        self._tokens = 0
        self._busy_s = 0.0
        # engine_stats (written by the scheduler thread only, read from the telemetry thread)
        self._kv_capacity = 0  # tokens: a full batch of the dataset's longest prompt and answer
        self._kv_prompt = 0  # prompt tokens of the running sequences
        self._kv_admit_steps = 0  # sum of the running sequences' admission steps
        self._kv_tokens = 0  # tokens held by the running sequences after the last step
        self._prompt_total = 0  # prompt tokens prefilled since start

    @classmethod
    def from_args(cls, args: BackendArgs) -> "SimBackend":
        engine = dict(args.engine_args)
        unknown = sorted(set(engine) - set(_KINDS))
        if unknown:
            raise HarnessError(f"sim backend: unknown --engine-arg key(s) {unknown} (known: {', '.join(_KINDS)})")
        if args.sampling_overrides:
            raise HarnessError("sim backend takes no --sampling-arg (it simulates timing; it does not sample)")
        values = {k: _number(k, _KINDS[k])(v) for k, v in engine.items()}
        return cls(CapacityModel(**values))

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, dataset: DatasetView, streaming: bool) -> None:
        from ..sut import token_dtype

        dtype = token_dtype(dataset.benchmark)
        self._prompt_len = [len(dataset.prompt_token_ids(i)) for i in range(len(dataset))]
        self._answers = []
        for i in range(len(dataset)):
            ref = dataset.reference_token_ids(i) or [0]
            n = self.model.answer_length(len(ref))
            reps = -(-n // len(ref))
            self._answers.append(np.array((ref * reps)[:n], dtype=dtype))
        self._answer_len = [len(a) for a in self._answers]
        if self._answer_len:
            self._kv_capacity = self.model.max_num_seqs * (max(self._prompt_len) + max(self._answer_len))
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="sim-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # ------------------------------------------------------------------------------------------ requests
    def _submit(self, index: int, on_first: Callable | None, on_complete: Callable) -> None:
        req = _Request(index, self._prompt_len[index], self._answer_len[index], time.monotonic(), on_first,
                       on_complete)
        with self._cond:
            self._incoming.append(req)
            self._cond.notify()

    def stream(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        if self._thread is None:
            raise RuntimeError("SimBackend.stream: start() first")
        self._submit(index, on_first_token, on_complete)

    def generate(self, indices: Sequence[int]) -> list[list[int]]:
        """Offline: every index goes to the scheduler at once; returns when the last one has finished."""
        if self._thread is None:
            raise RuntimeError("SimBackend.generate: start() first")
        out: list[Any] = [None] * len(indices)
        left = [len(indices)]
        done = threading.Event()
        lock = threading.Lock()

        def finisher(slot: int) -> Callable:
            def on_complete(tokens: Any) -> None:
                out[slot] = tokens
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()
            return on_complete

        if not indices:
            return []
        for slot, index in enumerate(indices):
            self._submit(index, None, finisher(slot))
        while not done.wait(0.5):
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("sim backend: the scheduler stopped before the batch finished")
        return out

    def preferred_batch_size(self) -> int:
        # Several full batches per generate call: the scheduler only sees what one call hands it.
        return max(1024, 8 * self.model.max_num_seqs)

    # ------------------------------------------------------------------------------------------ scheduler
    def _loop(self) -> None:
        try:
            self._run_steps()
        except BaseException as exc:  # noqa: BLE001 - the run must end as failed, not hang
            self.report_failure(exc)

    def _take_incoming(self) -> None:
        incoming, add = self._incoming, self._sched.add
        while incoming:
            add(incoming.popleft())

    def _run_steps(self) -> None:
        sched, cond = self._sched, self._cond
        end = time.monotonic()
        while True:
            with cond:
                self._take_incoming()
                while sched.idle and not self._stopping:
                    cond.wait(0.5)
                    self._take_incoming()
                if self._stopping:
                    return
            now = time.monotonic()
            if end < now - MAX_CATCH_UP_S or end < now and sched.running == 0:
                if sched.running:
                    self._reanchors += 1
                end = now  # idle until this arrival, or too far behind: a new timeline starts now
            step = sched.step_no
            duration, admitted = sched.begin_step()
            end += duration
            wait = end - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            woke = time.monotonic()
            lag = woke - end
            work_started = woke
            for r in admitted:
                self._kv_prompt += r.prompt_tokens
                self._prompt_total += r.prompt_tokens
                self._kv_admit_steps += step
                if r.on_first is not None:
                    r.on_first(self._answers[r.index][:1])
            finished = sched.end_step()
            for r in finished:
                self._kv_prompt -= r.prompt_tokens
                self._kv_admit_steps -= step - r.n_tokens + 1  # its admission step: it finishes n_tokens - 1 later
                r.on_complete(self._answers[r.index])
            # each running sequence holds its prompt and the (step_no - admission step) tokens generated so far
            self._kv_tokens = self._kv_prompt + sched.running * sched.step_no - self._kv_admit_steps
            self._steps += 1
            self._tokens += sched.running + len(finished)
            if lag > 0.001:
                self._late_steps += 1
            self._lag_sum += max(lag, 0.0)
            self._lag_max = max(self._lag_max, lag)
            self._busy_s += time.monotonic() - work_started

    # ------------------------------------------------------------------------------------------ telemetry
    def engine_stats(self) -> dict[str, float]:
        """The scheduler's queues, and the KV cache the running sequences would hold (prompt + tokens generated so
        far) as a share of a modelled cache sized for ``max_num_seqs`` of the dataset's longest prompt and answer."""
        stats: dict[str, float] = {
            "requests_running": self._sched.running,
            "requests_waiting": len(self._sched.waiting) + len(self._incoming),
            "prompt_tokens_total": self._prompt_total,
            "generation_tokens_total": self._tokens,
        }
        if self._kv_capacity:
            stats["kv_cache_usage_pct"] = round(min(100.0, max(0.0, 100.0 * self._kv_tokens / self._kv_capacity)), 3)
        return stats

    # ------------------------------------------------------------------------------------------ provenance
    def provenance(self) -> dict[str, Any]:
        steps = self._steps
        return {
            "backend": self.name, "kind": self.kind, "versions": {}, "engine_args": asdict(self.model),
            "token_ids": "simulated (reference tokens, cut or repeated to the modelled length)",
            "simulation": True,
            "sim_timing": {
                "steps": steps, "tokens": self._tokens, "late_steps": self._late_steps,
                "mean_lag_ms": round(1000 * self._lag_sum / steps, 3) if steps else None,
                "max_lag_ms": round(1000 * self._lag_max, 3) if steps else None,
                "reanchors": self._reanchors, "callback_busy_s": round(self._busy_s, 3),
            },
        }
