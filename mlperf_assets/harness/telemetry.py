"""telemetry.jsonl: GPU (NVML) and engine gauges sampled about once per ``--telemetry-interval-s`` during a run.

One daemon thread (:class:`TelemetrySampler`) starts before ``backend.start()`` (so the engine's load shows) and stops
after LoadGen has finished (also when the run fails or is interrupted: the file is closed and every line complete).
Each tick it reads, per visible GPU, NVML's utilization, memory, power, total-energy counter, clocks and temperature
(``pynvml``, the ``nvidia-ml-py`` package, imported only here and only when the sampler starts: CPU nodes and tests
have none, and then the file holds engine rows only, saying why in its header and once in harness.log), and the
backend's :meth:`~mlperf_assets.harness.backends.base.Backend.engine_stats` (counters turned into rates).

The file, one JSON object per line (written line-buffered; ``t_s`` is seconds since the sampler started, monotonic):

- first line ``{"event": "header", "t_s": 0.0, "time", "interval_s", "nvml", "reason", "driver", "gpus": [{"index",
  "name", "uuid", "mem_total_mib", "power_limit_w"}]}``;
- a GPU row per GPU per tick ``{"t_s", "time", "source": "gpu", "gpu", "gpu_util_pct", "mem_util_pct",
  "mem_used_mib", "power_w", "energy_j", "sm_clock_mhz", "mem_clock_mhz", "temperature_c"}`` (a field NVML does not
  support on that GPU is null);
- an engine row per tick where the backend reports ``{"t_s", "time", "source": "engine", "kv_cache_usage_pct",
  "requests_running", "requests_waiting", "prompt_tokens_per_s", "generation_tokens_per_s"}`` (a key absent: not
  reported; a rate null: no earlier sample yet);
- markers ``{"event": "test_start" | "test_end", "t_s", "time"}`` around LoadGen's StartTest (its timed window).

:func:`summarize_telemetry` (pure) reduces the records to the run's figures over the test window; the sampler puts
them in run_manifest.json under ``telemetry`` (``energy_j`` there is what J/output-token is computed from).

Telemetry is auxiliary: a write that fails (disk full) logs one warning and stops the sampler; the run goes on and
its manifest says ``"error"`` (with no figures: a partial window would understate the energy). Only the standard
library is imported at module level (the harness imports on a bare GPU node).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .run_folder import TELEMETRY

MIB = 1 << 20
ENGINE_GAUGES = ("kv_cache_usage_pct", "requests_running", "requests_waiting")
ENGINE_COUNTERS = (("prompt_tokens_total", "prompt_tokens_per_s"),
                   ("generation_tokens_total", "generation_tokens_per_s"))
NO_NVML_REASON = "pynvml is not installed (pip install nvidia-ml-py)"
# What the sampler keeps in memory of each line for the summary (rows before the test window are dropped at its start)
_SUMMARY_KEYS = ("event", "t_s", "source", "gpu", "gpu_util_pct", "mem_used_mib", "power_w", "energy_j",
                 "kv_cache_usage_pct")

log = logging.getLogger(__name__)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------------------------- NVML


def select_visible(devices: list[tuple[int, str]], cuda_visible: str | None) -> list[int]:
    """The NVML indices CUDA would use, in CUDA's order, from ``CUDA_VISIBLE_DEVICES`` (None: all of them). Entries
    are indices or UUIDs (``GPU-...``, a unique prefix is enough); as in CUDA, the first invalid or repeated entry
    ends the list. ``devices``: (NVML index, UUID) of every GPU."""
    if cuda_visible is None:
        return [i for i, _ in devices]
    chosen: list[int] = []
    for entry in cuda_visible.split(","):
        entry = entry.strip()
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            i = int(entry)
            match = [d for d, _ in devices if d == i]
        else:
            want = entry if entry.upper().startswith(("GPU-", "MIG-")) else f"GPU-{entry}"
            match = [d for d, uuid in devices if uuid.lower().startswith(want.lower())]
        if len(match) != 1 or match[0] in chosen:
            break
        chosen.append(match[0])
    return chosen


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlReader:
    """The visible GPUs' handles and one row per GPU per :meth:`sample`. A call NVML does not support (or that
    fails) gives null for that field only; a failure other than "not supported" is logged once per field."""

    def __init__(self, nvml: Any, visible: list[tuple[int, Any]], driver: str | None) -> None:
        self.nvml = nvml
        self.visible = visible  # (NVML index, handle)
        self.driver = driver
        self._logged: set[tuple[int, str]] = set()
        self.gpus = [self._describe(i, h) for i, h in visible]

    @classmethod
    def open(cls) -> tuple["NvmlReader | None", str | None]:
        """(reader, None), or (None, why NVML is unavailable)."""
        try:
            import pynvml as nvml
        except ImportError as exc:
            return None, f"{NO_NVML_REASON}: {exc}" if getattr(exc, "name", None) != "pynvml" else NO_NVML_REASON
        except Exception as exc:  # noqa: BLE001 - a broken install must not fail the run
            return None, f"pynvml failed to import: {type(exc).__name__}: {exc}"
        try:
            nvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError (no driver, no GPU), or anything else
            return None, f"nvmlInit failed: {exc or type(exc).__name__}"
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
            visible = select_visible(list(zip(range(count), uuids)), os.environ.get("CUDA_VISIBLE_DEVICES"))
            try:
                driver: str | None = _text(nvml.nvmlSystemGetDriverVersion())
            except Exception:  # noqa: BLE001
                driver = None
            return cls(nvml, [(i, handles[i]) for i in visible], driver), None
        except Exception as exc:  # noqa: BLE001
            try:
                nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            return None, f"NVML could not list the GPUs: {exc or type(exc).__name__}"

    def _call(self, gpu: int, field: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            not_supported = getattr(self.nvml, "NVMLError_NotSupported", None)
            if not (isinstance(not_supported, type) and isinstance(exc, not_supported)) \
                    and (gpu, field) not in self._logged:
                self._logged.add((gpu, field))
                log.warning("telemetry: GPU %d: reading %s failed (%s: %s); recorded as null", gpu, field,
                            type(exc).__name__, exc)
            return None

    def _describe(self, index: int, h: Any) -> dict[str, Any]:
        n = self.nvml
        mem = self._call(index, "memory", lambda: n.nvmlDeviceGetMemoryInfo(h))
        limit = self._call(index, "power_limit", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h))
        name = self._call(index, "name", lambda: n.nvmlDeviceGetName(h))
        uuid = self._call(index, "uuid", lambda: n.nvmlDeviceGetUUID(h))
        return {"index": index, "name": _text(name) if name is not None else None,
                "uuid": _text(uuid) if uuid is not None else None,
                "mem_total_mib": round(mem.total / MIB) if mem is not None else None,
                "power_limit_w": round(limit / 1000.0, 3) if limit is not None else None}

    def sample(self, now: Callable[[], float]) -> list[dict[str, Any]]:
        """One row per visible GPU; ``now()`` gives each row's ``t_s`` (read just before its GPU)."""
        n, rows = self.nvml, []
        for index, h in self.visible:
            t_s = now()
            util = self._call(index, "utilization", lambda: n.nvmlDeviceGetUtilizationRates(h))
            mem = self._call(index, "memory", lambda: n.nvmlDeviceGetMemoryInfo(h))
            power = self._call(index, "power", lambda: n.nvmlDeviceGetPowerUsage(h))
            energy = self._call(index, "energy", lambda: n.nvmlDeviceGetTotalEnergyConsumption(h))
            sm = self._call(index, "sm_clock", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))
            memclk = self._call(index, "mem_clock", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM))
            temp = self._call(index, "temperature", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
            rows.append({
                "t_s": t_s, "time": utc_now(), "source": "gpu", "gpu": index,
                "gpu_util_pct": float(util.gpu) if util is not None else None,
                "mem_util_pct": float(util.memory) if util is not None else None,
                "mem_used_mib": round(mem.used / MIB, 1) if mem is not None else None,
                "power_w": round(power / 1000.0, 3) if power is not None else None,  # mW
                "energy_j": round(energy / 1000.0, 3) if energy is not None else None,  # mJ
                "sm_clock_mhz": int(sm) if sm is not None else None,
                "mem_clock_mhz": int(memclk) if memclk is not None else None,
                "temperature_c": int(temp) if temp is not None else None,
            })
        return rows

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------------------- the sampler


def engine_kv_reader(backend: Any) -> Callable[[], float | None]:
    """``backend.engine_stats()``'s KV-cache use, for progress.jsonl when no sampler runs (a failure: None from then
    on, logged once)."""
    failed = [False]

    def read() -> float | None:
        if failed[0]:
            return None
        try:
            stats = backend.engine_stats()
        except Exception:  # noqa: BLE001
            failed[0] = True
            log.warning("backend.engine_stats() failed; KV-cache use is not shown", exc_info=True)
            return None
        value = (stats or {}).get("kv_cache_usage_pct")
        return float(value) if value is not None else None

    return read


class TelemetrySampler:
    """Writes ``out_dir/telemetry.jsonl``; :meth:`start`, :meth:`mark` (``test_start`` / ``test_end``),
    :meth:`stop` (returns the manifest's ``telemetry`` record). ``kv_cache_usage_pct`` is the latest engine value."""

    def __init__(self, out_dir: Path, backend: Any, interval_s: float, *,
                 clock: Callable[[], float] = time.monotonic, nvml_open: Callable[[], tuple] | None = None) -> None:
        self.path = Path(out_dir) / TELEMETRY
        self.backend = backend
        self.interval = max(0.01, float(interval_s))
        self._clock = clock
        self._nvml_open = nvml_open or NvmlReader.open
        self._t0 = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._fh: Any = None
        self._closed = False
        self._reader: NvmlReader | None = None
        self._records: list[dict[str, Any]] = []
        self._prev_counters: tuple[float, dict[str, float]] | None = None
        self._engine_failed = False
        self._record: dict[str, Any] | None = None
        self.reason: str | None = None
        self.gpus: list[dict[str, Any]] = []
        self.error: str | None = None  # the write that failed, when one did
        self.kv_cache_usage_pct: float | None = None

    @property
    def nvml(self) -> bool:
        return self._reader is not None

    def now(self) -> float:
        return round(self._clock() - self._t0, 3)

    # ---------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._t0 = self._clock()
        self._reader, self.reason = self._nvml_open()
        if self._reader is None:
            log.info("telemetry: no GPU telemetry (NVML unavailable: %s); engine stats only", self.reason)
        else:
            self.gpus = self._reader.gpus
            if not self.gpus:
                log.info("telemetry: NVML sees no visible GPU (CUDA_VISIBLE_DEVICES=%r); engine stats only",
                         os.environ.get("CUDA_VISIBLE_DEVICES"))
            else:
                log.info("telemetry: %d GPU(s) through NVML (driver %s), every %.2f s: %s", len(self.gpus),
                         self._reader.driver, self.interval, ", ".join(f"{g['index']} {g['name']}" for g in self.gpus))
        try:
            self._fh = open(self.path, "w", encoding="utf-8", buffering=1)
        except OSError as exc:
            self._failed(exc)
            return
        header = {"event": "header", "t_s": 0.0, "time": utc_now(), "interval_s": self.interval, "nvml": self.nvml,
                  "reason": self.reason, "driver": self._reader.driver if self._reader else None, "gpus": self.gpus}
        if self._emit([header]):
            self._thread.start()

    def mark(self, event: str) -> None:
        """A marker line now (``test_start`` / ``test_end``), then a sample at once (the window's ends are sampled)."""
        self._emit([{"event": event, "t_s": self.now(), "time": utc_now()}])
        if event == "test_start":
            self._prune()
        self._wake.set()

    def stop(self) -> dict[str, Any]:
        """Stop sampling, close the file (idempotent); the manifest's ``telemetry`` record, its summary logged."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 2 * self.interval))
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._fh is not None:
                    try:
                        self._fh.close()
                    except OSError as exc:
                        self._failed_locked(exc)
                if self._reader is not None and not self._thread.is_alive():
                    self._reader.close()
            if self._record is None:
                self._record = self._make_record()
                if self.error is None:
                    log.info("%s", describe_summary(self._record))
            return self._record

    def _make_record(self) -> dict[str, Any]:
        summary = summarize_telemetry([] if self.error else self._records)
        return {"enabled": True, "nvml": self.nvml, "reason": self.reason, "interval_s": self.interval,
                "gpus": self.gpus, "file": None if self.error else TELEMETRY, "error": self.error, **summary}

    # ---------------------------------------------------------------------------------------------- sampling
    def _run(self) -> None:
        """A tick now, then every interval (restarting at a marker's wake-up), and a last one once stopped."""
        next_t = self._clock()
        while True:
            try:
                if not self._tick() or self._stop.is_set():
                    return
            except Exception:  # noqa: BLE001 - telemetry never fails a run
                log.warning("telemetry: sampling failed; telemetry stopped", exc_info=True)
                return
            next_t += self.interval
            now = self._clock()
            next_t = max(next_t, now)
            if self._wake.wait(next_t - now):
                self._wake.clear()
                next_t = self._clock()

    def _tick(self) -> bool:
        rows = self._reader.sample(self.now) if self._reader is not None else []
        engine = self._engine_row()
        if engine is not None:
            rows.append(engine)
        return self._emit(rows) if rows else True

    def _engine_row(self) -> dict[str, Any] | None:
        if self._engine_failed:
            return None
        t_s = self.now()
        try:
            stats: Mapping[str, Any] | None = self.backend.engine_stats()
        except Exception:  # noqa: BLE001
            self._engine_failed = True
            log.warning("telemetry: backend.engine_stats() failed; engine stats are not recorded", exc_info=True)
            return None
        if not stats:
            return None
        row: dict[str, Any] = {"t_s": t_s, "time": utc_now(), "source": "engine"}
        for key in ENGINE_GAUGES:
            value = stats.get(key)
            if value is not None:
                row[key] = round(float(value), 3) if key == "kv_cache_usage_pct" else int(value)
        prev = self._prev_counters
        counters: dict[str, float] = {}
        for key, rate_key in ENGINE_COUNTERS:
            value = stats.get(key)
            if value is None:
                continue
            counters[key] = float(value)
            rate = None
            if prev is not None and key in prev[1] and t_s > prev[0] and value >= prev[1][key]:
                rate = round((float(value) - prev[1][key]) / (t_s - prev[0]), 3)
            row[rate_key] = rate
        self._prev_counters = (t_s, counters)
        self.kv_cache_usage_pct = row.get("kv_cache_usage_pct")
        return row

    # ---------------------------------------------------------------------------------------------- the file
    def _emit(self, records: list[dict[str, Any]]) -> bool:
        """Write ``records`` (and keep them for the summary); False once writing has failed or the file is closed."""
        with self._lock:
            if self._closed or self.error is not None or self._fh is None:
                return False
            try:
                for rec in records:
                    self._fh.write(json.dumps(rec) + "\n")
            except OSError as exc:
                self._failed_locked(exc)
                return False
            self._records.extend({k: r[k] for k in _SUMMARY_KEYS if k in r} for r in records)
            return True

    def _prune(self) -> None:
        """At test_start: drop the rows before the window, except each GPU's last (the window's first neighbour)."""
        with self._lock:
            last_gpu: dict[Any, dict[str, Any]] = {}
            kept = []
            for rec in self._records:
                if rec.get("source") == "gpu":
                    last_gpu[rec.get("gpu")] = rec
                elif rec.get("event") is not None:
                    kept.append(rec)
            self._records = sorted([*kept, *last_gpu.values()], key=lambda r: r.get("t_s", 0.0))

    def _failed(self, exc: OSError) -> None:
        with self._lock:
            self._failed_locked(exc)

    def _failed_locked(self, exc: OSError) -> None:
        if self.error is not None:
            return
        from .errors import output_error_text

        self.error = output_error_text(self.path, exc)
        self._stop.set()
        log.warning("telemetry stopped (the run goes on): %s", self.error)
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None


# --------------------------------------------------------------------------------------------------- the summary


def _window(records: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    starts = [r["t_s"] for r in records if r.get("event") == "test_start"]
    times = [r["t_s"] for r in records if r.get("source") in ("gpu", "engine") or r.get("event") in
             ("test_start", "test_end")]
    if not times:
        return None, None
    start = starts[0] if starts else min(times)
    ends = [r["t_s"] for r in records if r.get("event") == "test_end" and r["t_s"] >= start]
    return start, ends[-1] if ends else max(times)


def _value_at(points: list[tuple[float, float]], t: float) -> float:
    """The piecewise-linear curve through ``points`` (sorted by time) at ``t``, held flat beyond its ends."""
    if t <= points[0][0]:
        return points[0][1]
    if t >= points[-1][0]:
        return points[-1][1]
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


def power_integral(points: list[tuple[float, float]], start: float, end: float) -> float:
    """Joules over [start, end] of the power samples ``points`` ((t_s, W), sorted): the trapezoid rule on the samples
    inside the window plus the curve's values at the window's ends (interpolated, or the nearest sample held)."""
    ts = [start, *(t for t, _ in points if start < t < end), end]
    return sum((b - a) * (_value_at(points, a) + _value_at(points, b)) / 2 for a, b in zip(ts, ts[1:]))


def _nearest(points: list[tuple[float, float]], t: float) -> int:
    return min(range(len(points)), key=lambda i: (abs(points[i][0] - t), points[i][0]))


def summarize_telemetry(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's figures over the test window [test_start, test_end] (the whole record set where a marker is
    missing). ``energy_j`` sums the GPUs: the energy counters' difference between each GPU's samples nearest the
    window's ends when every GPU has the counter (``nvml_energy_counter``), else :func:`power_integral` of each GPU's
    ``power_w`` (``power_integral``); ``mean_power_w`` sums the GPUs' mean power; None where a figure cannot be
    computed (no GPU rows, a GPU without power readings)."""
    recs = [dict(r) for r in records if isinstance(r.get("t_s"), (int, float))]
    start, end = _window(recs)
    out: dict[str, Any] = {"window_s": None, "energy_j": None, "energy_source": None, "mean_gpu_util_pct": None,
                           "mean_power_w": None, "peak_mem_used_mib": None, "mean_kv_cache_usage_pct": None,
                           "peak_kv_cache_usage_pct": None, "gpu_rows": 0, "engine_rows": 0}
    if start is None or end is None:
        return out
    out["window_s"] = round(end - start, 3)

    def inside(r: Mapping[str, Any]) -> bool:
        return start <= r["t_s"] <= end

    gpu_rows = [r for r in recs if r.get("source") == "gpu"]
    engine_rows = [r for r in recs if r.get("source") == "engine" and inside(r)]
    out["gpu_rows"] = sum(1 for r in gpu_rows if inside(r))
    out["engine_rows"] = len(engine_rows)

    def series(rows: Iterable[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
        return sorted((float(r["t_s"]), float(r[key])) for r in rows if r.get(key) is not None)

    by_gpu: dict[Any, list[dict[str, Any]]] = {}
    for r in gpu_rows:
        by_gpu.setdefault(r.get("gpu"), []).append(r)
    window_rows = [r for r in gpu_rows if inside(r)]
    # each GPU's mean, then their mean: a window end can fall between the rows of one tick (each GPU's row takes its
    # own t_s), which would otherwise weigh one GPU a row more than another
    utils = {g: [float(r["gpu_util_pct"]) for r in rows if inside(r) and r.get("gpu_util_pct") is not None]
             for g, rows in by_gpu.items()}
    util_means = [sum(v) / len(v) for v in utils.values() if v]
    mems = [float(r["mem_used_mib"]) for r in window_rows if r.get("mem_used_mib") is not None]
    out["mean_gpu_util_pct"] = round(sum(util_means) / len(util_means), 3) if util_means else None
    out["peak_mem_used_mib"] = max(mems) if mems else None
    if by_gpu:
        powers = {g: series(rows, "power_w") for g, rows in by_gpu.items()}
        in_window = {g: [p for t, p in pts if start <= t <= end] for g, pts in powers.items()}
        if all(in_window.values()):
            out["mean_power_w"] = round(sum(sum(v) / len(v) for v in in_window.values()), 3)
        energy = _counter_energy({g: series(rows, "energy_j") for g, rows in by_gpu.items()}, start, end)
        if energy is not None:
            out["energy_j"], out["energy_source"] = round(energy, 3), "nvml_energy_counter"
        elif all(powers.values()):
            out["energy_j"] = round(sum(power_integral(p, start, end) for p in powers.values()), 3)
            out["energy_source"] = "power_integral"
    kvs = [float(r["kv_cache_usage_pct"]) for r in engine_rows if r.get("kv_cache_usage_pct") is not None]
    if kvs:
        out["mean_kv_cache_usage_pct"] = round(sum(kvs) / len(kvs), 3)
        out["peak_kv_cache_usage_pct"] = max(kvs)
    return out


def _counter_energy(counters: dict[Any, list[tuple[float, float]]], start: float, end: float) -> float | None:
    """Sum over GPUs of counter(sample nearest end) - counter(sample nearest start); None unless every GPU has two
    distinct such samples and no counter went backwards."""
    total = 0.0
    for pts in counters.values():
        if not pts:
            return None
        i, j = _nearest(pts, start), _nearest(pts, end)
        if (i == j and end > start) or pts[j][1] < pts[i][1]:
            return None
        total += pts[j][1] - pts[i][1]
    return total


def describe_summary(record: Mapping[str, Any]) -> str:
    """``telemetry: 2 GPUs, 61.2 s window, 41.3 kJ, mean util 97.1%, peak KV 88%`` (what is known of it)."""
    n = len(record.get("gpus") or [])
    parts = [f"{n} GPU{'s' if n != 1 else ''}" if n else "no GPU"]
    if record.get("window_s") is not None:
        parts.append(f"{record['window_s']:.1f} s window")
    if record.get("energy_j") is not None:
        parts.append(f"{record['energy_j'] / 1000:.1f} kJ")
    if record.get("mean_gpu_util_pct") is not None:
        parts.append(f"mean util {record['mean_gpu_util_pct']:.1f}%")
    if record.get("peak_kv_cache_usage_pct") is not None:
        parts.append(f"peak KV {record['peak_kv_cache_usage_pct']:.0f}%")
    return "telemetry: " + ", ".join(parts)
