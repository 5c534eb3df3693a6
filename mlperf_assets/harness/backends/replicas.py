"""``--data-parallel-size N``: N replicas of any registered backend behind one SUT, one worker process and GPU group each.

:class:`ReplicatedBackend` is a :class:`~.base.Backend` like any other (the SUT does not know it is there). It starts
N worker processes (multiprocessing, spawn: no CUDA state is ever forked); each builds the inner backend from the same
:class:`~.base.BackendArgs` and ``start``\\ s it on its own GPU group: replica r gets ``CUDA_VISIBLE_DEVICES`` = the
r-th group of ``tensor_parallel_size`` devices (the engine argument, default 1) taken in order from the harness's own
``CUDA_VISIBLE_DEVICES`` (indices or UUIDs), or 0..N*tp-1 when it is unset. Too few devices listed: one-line
:class:`HarnessError` before anything starts.

- The dataset: each worker loads the prepared file itself (its path and the number of samples the run uses), so
  messages carry only QSL indices one way and output token ids the other.
- Offline ``generate``: the batch is cut into contiguous chunks that even out the replicas' outstanding samples
  (water-filling: the least loaded replicas get more), sent at once, and the outputs merged in order.
- Server/SingleStream ``stream``: each request goes to the replica with the fewest requests in flight
  (join-shortest-queue; ties rotate). A worker sends exactly one "first" and one "done" message per request; one
  receiver thread per replica in the harness calls the SUT's callbacks.
- ``start`` starts all replicas at once (engine loads overlap) and waits for all of them; one that fails is reported
  in one line naming the replica and its error, and the others are stopped. ``stop`` asks every replica to stop,
  waits (bounded), then kills what is left, with its child processes (an engine's own workers).
- A replica that dies mid-run ends the run as failed at once (``report_failure``, naming the replica, its pid and
  devices, and how it ended).
- Signals belong to the harness: workers ignore SIGINT and SIGTERM (the harness calls ``stop``). Workers never
  outlive the harness: each asks the kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``) and also
  watches its pipe to the harness; either way it kills its own child processes and exits.
- ``engine_stats`` sums the replicas' gauges and counters (mean of ``kv_cache_usage_pct``) from the latest values
  the workers push every :data:`STATS_INTERVAL_S`: it never waits on a worker.
- ``provenance``: replica 0's (``backend``/``kind`` stay the inner backend's), plus ``data_parallel_size``,
  ``replica_devices``, ``replica_samples`` (samples each replica completed) and ``replicas`` (each worker's pid,
  the ``CUDA_VISIBLE_DEVICES`` it saw, and the provenance entries that differ between replicas).
"""

from __future__ import annotations

import ctypes
import importlib
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping, Sequence

from ..errors import HarnessError
from .base import Backend, BackendArgs, DatasetView, TokenCallback

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 0.5  # how often a worker pushes its engine_stats()
STOP_TIMEOUT_S = 20.0  # stop(): how long the replicas get to stop their engines before they are killed
PROVENANCE_TIMEOUT_S = 10.0
POLL_S = 0.5  # a receiver checks that its worker is alive at least this often
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------------------------------------------- pure helpers
def tensor_parallel_size(args: BackendArgs) -> int:
    """GPUs per replica: the engine argument ``tensor_parallel_size`` (1 when absent)."""
    value = args.engine_args.get("tensor_parallel_size")
    if value is None:
        return 1
    try:
        tp = int(value)
        if isinstance(value, bool) or tp != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise HarnessError(f"tensor_parallel_size must be a positive integer, got {value!r}") from None
    if tp < 1:
        raise HarnessError(f"tensor_parallel_size must be a positive integer, got {value!r}")
    return tp


def replica_devices(replicas: int, tp: int, visible: str | None) -> list[list[str]]:
    """The devices of each replica: consecutive groups of ``tp`` from ``visible`` (the harness's
    ``CUDA_VISIBLE_DEVICES``), or from 0..replicas*tp-1 when it is unset."""
    need = replicas * tp
    if visible is None:
        devices = [str(i) for i in range(need)]
    else:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        if len(devices) < need:
            raise HarnessError(
                f"--data-parallel-size {replicas} x tensor_parallel_size {tp} needs {need} GPUs, but "
                f"CUDA_VISIBLE_DEVICES={visible!r} lists {len(devices)}"
            )
    return [devices[r * tp:(r + 1) * tp] for r in range(replicas)]


def split_by_load(loads: Sequence[int], n: int) -> list[int]:
    """How many of ``n`` new samples each replica gets so that the outstanding loads end up as even as possible
    (water-filling: replicas above the final level get none). Sums to ``n``; every share >= 0."""
    if n <= 0 or not loads:
        return [0] * len(loads)
    order = sorted(range(len(loads)), key=lambda r: (loads[r], r))
    low = [loads[r] for r in order]
    k = len(low)
    while k > 1 and (n + sum(low[:k])) / k < low[k - 1]:
        k -= 1
    base, extra = divmod(n + sum(low[:k]), k)
    shares = [0] * len(loads)
    for i, r in enumerate(order[:k]):
        shares[r] = base + (1 if i < extra else 0) - loads[r]
    return shares


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, HarnessError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; [] elsewhere), deepest last."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (an engine's own worker processes)."""
    for p in [pid, *_descendants(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class ReplicaDied(HarnessError):
    """A replica's process died (killed from outside, out of memory) before it was ready: the run failed, the input
    was fine (exit code 1, not 2)."""

    exit_code = 1


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


# ------------------------------------------------------------------------------------------------------ the worker
def _load_dataset(spec: tuple) -> DatasetView:
    kind = spec[0]
    if kind == "object":
        return spec[1]
    from ..dataset import load_prepared

    _, path, samples, benchmark = spec
    dataset = load_prepared(path).head(samples)
    if len(dataset) != samples:
        raise HarnessError(f"{path} holds {len(dataset)} samples now; the run uses {samples} (was it replaced?)")
    dataset.benchmark = benchmark
    return dataset


def _tokens(tokens: Any) -> Any:
    """Token ids as sent back: lists, tuples and numpy arrays pickle compactly as they are."""
    if isinstance(tokens, (list, tuple)):
        return tokens
    try:
        import numpy as np

        if isinstance(tokens, np.ndarray):
            return tokens
    except ImportError:  # pragma: no cover - numpy is a harness dependency
        pass
    return list(tokens)


class _Worker:
    """One replica, in its own process: builds and starts the inner backend, serves the harness's messages."""

    def __init__(self, replica: int, conn, parent_pid: int) -> None:
        self.replica = replica
        self.conn = conn
        self.parent_pid = parent_pid
        self.send_lock = threading.Lock()
        self.stopping = threading.Event()
        self.backend: Backend | None = None

    def die(self) -> None:
        """The harness is gone: take the engine's processes along, leave at once."""
        for p in _descendants(os.getpid()):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        os._exit(1)

    def send(self, msg: tuple) -> None:
        try:
            with self.send_lock:
                self.conn.send(msg)
        except (OSError, ValueError):
            if not self.stopping.is_set():
                self.die()

    def watch_parent(self) -> None:
        """PR_SET_PDEATHSIG: SIGUSR2 when the parent dies (checked against getppid: the signal also comes when only
        the thread that started us ends); the pipe's EOF (in :meth:`serve`) is the other way to notice."""
        def on_signal(signum, frame) -> None:
            if os.getppid() != self.parent_pid:
                self.die()

        if sys.platform.startswith("linux"):
            try:
                signal.signal(signal.SIGUSR2, on_signal)
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGUSR2), 0, 0, 0)
            except (OSError, AttributeError, ValueError):
                pass
        if os.getppid() != self.parent_pid:
            self.die()

    def run(self, target: str, args: BackendArgs, dataset_spec: tuple, streaming: bool) -> None:
        backend = None
        try:
            module_name, _, class_name = target.partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            backend = cls.from_args(args)
            backend.failure_handler = lambda exc: self.send(("failure", _one_line(exc)))
            dataset = _load_dataset(dataset_spec)
            backend.start(dataset, streaming)
        except BaseException as exc:  # noqa: BLE001 - reported to the harness, which names this replica
            self.send(("error", _one_line(exc)))
            if backend is not None:
                try:
                    backend.stop()
                except Exception:  # noqa: BLE001
                    pass
            return
        self.backend = backend
        self.send(("ready", {
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "preferred_batch_size": int(backend.preferred_batch_size()),
            "provenance": self.provenance(),
        }))
        threading.Thread(target=self.push_stats, name="replica-stats", daemon=True).start()
        try:
            self.serve()
        finally:
            self.stopping.set()
            try:
                backend.stop()
            finally:
                self.send(("stopped",))

    def provenance(self) -> dict:
        try:
            return dict(self.backend.provenance() or {}) if self.backend is not None else {}
        except Exception as exc:  # noqa: BLE001 - provenance must never fail a run
            return {"provenance_error": _one_line(exc)}

    def serve(self) -> None:
        pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="replica-generate")
        try:
            while True:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    self.die()  # the harness is gone
                kind = msg[0]
                if kind == "gen":
                    pool.submit(self.generate, msg[1], msg[2])
                elif kind == "stream":
                    self.stream(msg[1], msg[2])
                elif kind == "prov":
                    self.send(("prov", msg[1], self.provenance()))
                elif kind == "stop":
                    return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def generate(self, batch_id: int, indices: list[int]) -> None:
        try:
            outputs = self.backend.generate(indices)
            if len(outputs) != len(indices):
                raise RuntimeError(f"returned {len(outputs)} outputs for {len(indices)} prompts")
            self.send(("gen_done", batch_id, [_tokens(o) for o in outputs]))
        except BaseException as exc:  # noqa: BLE001
            self.send(("gen_err", batch_id, _one_line(exc)))

    def stream(self, request_id: int, index: int) -> None:
        sent = {"first": False, "done": False}

        def on_first(tokens) -> None:
            if not sent["first"] and not sent["done"]:
                sent["first"] = True
                self.send(("first", request_id, _tokens(tokens)))

        def on_complete(tokens) -> None:
            if not sent["done"]:
                sent["done"] = True
                self.send(("done", request_id, _tokens(tokens)))

        try:
            self.backend.stream(index, on_first, on_complete)
        except BaseException as exc:  # noqa: BLE001
            self.send(("req_err", request_id, _one_line(exc)))

    def push_stats(self) -> None:
        last: Any = None
        while not self.stopping.wait(STATS_INTERVAL_S):
            try:
                stats = self.backend.engine_stats()
                stats = dict(stats) if stats is not None else None
            except Exception:  # noqa: BLE001 - telemetry must never fail a run
                stats = None
            if stats is not None or last is not None:
                self.send(("stats", stats))
            last = stats


def _worker_main(replica: int, target: str, args: BackendArgs, devices: list[str], dataset_spec: tuple,
                 streaming: bool, conn, parent_pid: int) -> None:
    """A replica's process (spawned). The harness started it with SIGINT/SIGTERM blocked: ignore them, then unblock."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)  # before the inner backend imports any CUDA library
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s %(levelname)s replica-{replica} %(name)s: "
                        "%(message)s")
    worker = _Worker(replica, conn, parent_pid)
    worker.watch_parent()
    try:
        worker.run(target, args, dataset_spec, streaming)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110
                pass
        os._exit(0)  # no interpreter shutdown: an engine's atexit hooks must not hang a finished replica


# ------------------------------------------------------------------------------------------------------ the harness
class _Replica:
    def __init__(self, index: int, devices: list[str]) -> None:
        self.index = index
        self.devices = devices
        self.process: Any = None
        self.conn: Any = None
        self.send_lock = threading.Lock()
        self.receiver: threading.Thread | None = None
        self.settled = False  # ready, or failed to start
        self.error: str | None = None
        self.info: dict[str, Any] = {}
        self.outstanding = 0  # Offline samples sent, not yet returned
        self.in_flight = 0  # streamed requests sent, not yet complete
        self.samples = 0  # samples completed
        self.stats: Mapping[str, float] | None = None
        self.dead = False
        self.died_starting = False  # its process ended before it was ready
        self.stopped = False

    @property
    def ready(self) -> bool:
        return self.settled and self.error is None

    def describe(self) -> str:
        pid = self.info.get("pid") or (self.process.pid if self.process is not None else None)
        return f"replica {self.index} (pid {pid}, CUDA_VISIBLE_DEVICES={','.join(self.devices)})"


class ReplicatedBackend(Backend):
    """N replicas of the backend ``backend_name`` (see the module docstring). ``name`` and ``kind`` are the inner
    backend's, so the run is recorded as that backend's."""

    def __init__(self, backend_name: str, args: BackendArgs, replicas: int) -> None:
        from . import BACKENDS, backend_class

        if replicas < 1:
            raise HarnessError(f"--data-parallel-size must be >= 1 (got {replicas})")
        self.inner_class = backend_class(backend_name)
        self.name = self.inner_class.name
        self.kind = self.inner_class.kind
        self.target = BACKENDS[backend_name].target
        self.args = args
        self._probe = self.inner_class.from_args(args)  # refuses bad engine arguments here, before anything starts
        self.tensor_parallel_size = tensor_parallel_size(args)
        self.replicas = [_Replica(r, devs) for r, devs in enumerate(
            replica_devices(replicas, self.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES")))]
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count()
        self._rotation = 0
        self._batches: dict[int, tuple[_Replica, Future, int]] = {}
        self._streams: dict[int, tuple[_Replica, TokenCallback, TokenCallback]] = {}
        self._provenance_waiters: dict[int, Future] = {}
        self._stopping = False
        self._started = False

    @classmethod
    def from_args(cls, args: BackendArgs) -> "ReplicatedBackend":
        raise HarnessError("ReplicatedBackend is built by build_backend(name, args, data_parallel_size)")

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self, dataset: DatasetView, streaming: bool) -> None:
        """Start every replica at once and wait until all are ready. Call it from a thread that lives as long as the
        replicas (the harness's main thread)."""
        from ..dataset import PreparedDataset

        if isinstance(dataset, PreparedDataset):
            spec: tuple = ("file", str(dataset.path), len(dataset), dataset.benchmark)
        else:  # any other DatasetView: pickled once, to each worker
            spec = ("object", dataset)
        ctx = multiprocessing.get_context("spawn")
        self._started = True
        try:
            for rep in self.replicas:
                parent_conn, child_conn = ctx.Pipe(duplex=True)
                rep.conn = parent_conn
                rep.process = ctx.Process(
                    target=_worker_main, name=f"{self.name}-replica-{rep.index}",
                    args=(rep.index, self.target, self.args, rep.devices, spec, streaming, child_conn, os.getpid()))
                # The worker inherits the signal mask: SIGINT/SIGTERM stay blocked until it ignores them.
                old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
                try:
                    rep.process.start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
                child_conn.close()
                rep.receiver = threading.Thread(target=self._receive, args=(rep,), name=f"replica-{rep.index}-recv",
                                                daemon=True)
                rep.receiver.start()
            with self._changed:
                while True:
                    failed = next((r for r in self.replicas if r.settled and r.error is not None), None)
                    if failed is not None:
                        # a worker's own error (engine arguments, model, dataset) is the input's; its death is not
                        error = ReplicaDied if failed.died_starting else HarnessError
                        raise error(f"{self.name} {failed.describe()} failed to start: {failed.error}")
                    if all(r.ready for r in self.replicas):
                        break
                    self._changed.wait(0.1)  # short waits: a signal interrupts start() at once
        except BaseException:
            self.stop()
            raise
        log.info("%d replicas of %s ready: %s", len(self.replicas), self.name,
                 "; ".join(r.describe() for r in self.replicas))

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        started = [r for r in self.replicas if r.process is not None]
        for rep in started:
            if rep.ready and not rep.dead:
                try:
                    self._send(rep, ("stop",))
                except RuntimeError:
                    pass
            elif rep.process.is_alive():  # still loading (or failed): nothing to stop gracefully
                _kill_tree(rep.process.pid)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for rep in started:
            rep.process.join(max(0.0, deadline - time.monotonic()))
            if rep.process.is_alive():
                log.warning("%s did not stop within %.0f s: killed", rep.describe(), STOP_TIMEOUT_S)
                _kill_tree(rep.process.pid)
                rep.process.join(5)
        for rep in started:
            if rep.receiver is not None and rep.receiver is not threading.current_thread():
                rep.receiver.join(2)
            try:
                rep.conn.close()
            except OSError:
                pass

    # ------------------------------------------------------------------------------------------------ messages
    def _send(self, rep: _Replica, msg: tuple) -> None:
        try:
            with rep.send_lock:
                rep.conn.send(msg)
        except (OSError, ValueError, AttributeError) as exc:
            raise RuntimeError(f"{rep.describe()} is gone ({type(exc).__name__})") from None

    def _receive(self, rep: _Replica) -> None:
        """One replica's messages, in order; then, if it ended without being asked to, the failure."""
        conn, proc = rep.conn, rep.process
        while True:
            try:
                if not conn.poll(POLL_S):
                    if proc.is_alive():
                        continue
                    break
                msg = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._dispatch(rep, msg)
            except Exception:  # noqa: BLE001 - a callback's error must not stop the replica's other answers
                log.exception("%s: handling %r failed", rep.describe(), msg[0])
        self._gone(rep)

    def _dispatch(self, rep: _Replica, msg: tuple) -> None:
        kind = msg[0]
        if kind == "done":
            with self._lock:
                entry = self._streams.pop(msg[1], None)
                if entry is not None:
                    rep.in_flight -= 1
                    rep.samples += 1
            if entry is not None:
                entry[2](msg[2])
        elif kind == "first":
            entry = self._streams.get(msg[1])
            if entry is not None:
                entry[1](msg[2])
        elif kind == "gen_done":
            with self._lock:
                _, future, n = self._batches.pop(msg[1])
                rep.outstanding -= n
                rep.samples += n
            future.set_result(msg[2])
        elif kind == "gen_err":
            with self._lock:
                _, future, n = self._batches.pop(msg[1])
                rep.outstanding -= n
            future.set_exception(RuntimeError(f"{rep.describe()}: {msg[2]}"))
        elif kind == "stats":
            rep.stats = msg[1]
        elif kind == "req_err":
            with self._lock:
                if self._streams.pop(msg[1], None) is not None:
                    rep.in_flight -= 1
            self._fail(RuntimeError(f"{rep.describe()}: {msg[2]}"))
        elif kind == "failure":
            self._fail(RuntimeError(f"{rep.describe()}: {msg[1]}"))
        elif kind == "prov":
            future = self._provenance_waiters.pop(msg[1], None)
            if future is not None:
                future.set_result(msg[2])
        elif kind in ("ready", "error"):
            with self._changed:
                if kind == "ready":
                    rep.info = msg[1]
                else:
                    rep.error = msg[1]
                rep.settled = True
                self._changed.notify_all()
        elif kind == "stopped":
            rep.stopped = True

    def _gone(self, rep: _Replica) -> None:
        """The worker's pipe closed (or the process ended)."""
        rep.process.join(2)
        how = _how_it_ended(rep.process.exitcode)
        with self._changed:
            rep.dead = True
            expected = self._stopping or rep.stopped
            if not rep.settled:
                rep.error = rep.error or f"the process {'was ' if how.startswith('killed') else ''}{how} while starting"
                rep.died_starting = True
                rep.settled = True
            lost = [(bid, fut) for bid, (owner, fut, _) in self._batches.items() if owner is rep]
            for bid, _ in lost:
                del self._batches[bid]
            self._changed.notify_all()
        if expected or not self._ready_once(rep):
            for _, fut in lost:
                fut.set_exception(RuntimeError(f"{rep.describe()} stopped"))
            return
        error = RuntimeError(f"{rep.describe()} died mid-run: {how}")
        for _, fut in lost:
            fut.set_exception(error)
        self._fail(error)

    @staticmethod
    def _ready_once(rep: _Replica) -> bool:
        return bool(rep.info)

    def _fail(self, exc: BaseException) -> None:
        try:
            self.report_failure(exc)
        except BaseException:  # noqa: BLE001 - no failure handler (not under a SUT): the log has it
            log.error("%s", exc)

    # ------------------------------------------------------------------------------------------------ requests
    def _live(self) -> list[_Replica]:
        live = [r for r in self.replicas if r.ready and not r.dead]
        if not live:
            raise RuntimeError(f"no replica of {self.name} is running")
        return live

    def generate(self, indices: Sequence[int]) -> list[list[int]]:
        if not indices:
            return []
        parts: list[tuple[_Replica, int, list[int], Future]] = []
        with self._lock:
            live = self._live()
            pos = 0
            for rep, share in zip(live, split_by_load([r.outstanding for r in live], len(indices))):
                if share <= 0:
                    continue
                batch_id, future = next(self._ids), Future()
                self._batches[batch_id] = (rep, future, share)
                rep.outstanding += share
                parts.append((rep, batch_id, list(indices[pos:pos + share]), future))
                pos += share
        for rep, batch_id, chunk, future in parts:
            try:
                self._send(rep, ("gen", batch_id, chunk))
            except RuntimeError as exc:
                with self._lock:
                    if self._batches.pop(batch_id, None) is not None:
                        rep.outstanding -= len(chunk)
                        future.set_exception(exc)
        out: list[Any] = []
        for _, _, _, future in parts:
            out.extend(future.result())
        return out

    def stream(self, index: int, on_first_token: TokenCallback, on_complete: TokenCallback) -> None:
        with self._lock:
            live = self._live()
            n = len(self.replicas)
            rotation = self._rotation
            self._rotation += 1
            rep = min(live, key=lambda r: (r.in_flight, (r.index - rotation) % n))
            request_id = next(self._ids)
            self._streams[request_id] = (rep, on_first_token, on_complete)
            rep.in_flight += 1
        try:
            self._send(rep, ("stream", request_id, index))
        except RuntimeError:
            with self._lock:
                if self._streams.pop(request_id, None) is not None:
                    rep.in_flight -= 1
            raise

    def preferred_batch_size(self) -> int:
        first = next((r for r in self.replicas if r.ready), None)
        inner = first.info.get("preferred_batch_size") if first is not None else None
        return len(self.replicas) * int(inner or self._probe.preferred_batch_size())

    # ------------------------------------------------------------------------------------------------ reporting
    def engine_stats(self) -> Mapping[str, float] | None:
        reported = [dict(r.stats) for r in self.replicas if r.stats and not r.dead]
        if not reported:
            return None
        out: dict[str, float] = {}
        for key in dict.fromkeys(k for s in reported for k in s):
            values = [s[key] for s in reported if isinstance(s.get(key), (int, float))]
            if not values:
                continue
            out[key] = sum(values) / len(values) if key == "kv_cache_usage_pct" else sum(values)
        return out

    def _replica_provenance(self) -> list[dict]:
        """Each replica's own provenance now (asked of the live ones at once; the one sent at start otherwise)."""
        waiting: list[tuple[_Replica, Future | None]] = []
        for rep in self.replicas:
            future: Future | None = None
            if rep.ready and not rep.dead and not self._stopping:
                seq, future = next(self._ids), Future()
                self._provenance_waiters[seq] = future
                try:
                    self._send(rep, ("prov", seq))
                except RuntimeError:
                    self._provenance_waiters.pop(seq, None)
                    future = None
            waiting.append((rep, future))
        deadline = time.monotonic() + PROVENANCE_TIMEOUT_S
        out = []
        for rep, future in waiting:
            prov = rep.info.get("provenance") or {}
            if future is not None:
                try:
                    prov = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - a slow replica: its provenance from start
                    pass
            out.append(dict(prov))
        return out

    def provenance(self) -> dict[str, Any]:
        provs = self._replica_provenance() if self._started else []
        base = next((p for p in provs if p), None) or dict(self._probe.provenance() or {})
        keys = dict.fromkeys(k for p in provs for k in p)
        varying = [k for k in keys if len({repr(p.get(k)) for p in provs}) > 1]
        out = dict(base)
        out.update({
            "backend": self.name, "kind": self.kind,
            "data_parallel_size": len(self.replicas),
            "replica_devices": [list(r.devices) for r in self.replicas],
            "replica_samples": [r.samples for r in self.replicas],
            "replicas": [
                {"replica": r.index, "pid": r.info.get("pid"), "cuda_visible_devices": r.info.get("cuda_visible_devices"),
                 "samples": r.samples, **({k: provs[r.index].get(k) for k in varying} if provs else {})}
                for r in self.replicas
            ],
        })
        return out


__all__ = ["ReplicatedBackend", "replica_devices", "split_by_load", "tensor_parallel_size"]
