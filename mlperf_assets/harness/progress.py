"""progress.jsonl and samples.jsonl, written by one background thread (never by LoadGen's or the workers' threads).

Every ``interval_s`` the thread appends one progress line and drains the SUT's buffered per-sample timings into
samples.jsonl; ``stop`` writes the last of both, with ``"final": true`` on the progress line. A tqdm bar on stderr is
shown only when stderr is a terminal.

A write that fails (disk full, I/O error) stops the thread without a traceback: the first failure is kept as
``error`` (an :class:`OutputError` naming the file), nothing more is written, and the run loop ends the run as
``failed`` (a run whose timings cannot be recorded must not claim success; on a full disk LoadGen's own logs are
being lost too). ``stop`` raises that error after closing both files.

A progress line carries ``kv_cache_usage_pct`` (the engine's KV-cache use, from ``kv_source``: the telemetry
sampler's latest reading) when the backend reports it; the bar shows it as ``kv=43%``.

Its ``total`` is the SUT's when the SUT knows it (accuracy mode; Offline once its one query arrives); in Server,
the schedule LoadGen generated (:mod:`.schedule`, read from the detail log: Server issues every generated query), so
its bar has an end too. A SingleStream run's stays unknown: LoadGen ends it once min_query_count and min_duration are
met, before its generated schedule runs out.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from .errors import OutputError
from .run_folder import DETAIL_LOG, PROGRESS, SAMPLES, progress_record
from .schedule import ScheduleReader
from .sut import HarnessSUT, drain_sample_lines

log = logging.getLogger("mlperf_assets.harness")

DRAIN_SLICE = 64  # timing records (an Offline record is a whole batch) formatted per GIL slice


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProgressWriter:
    def __init__(self, out_dir: Path, sut: HarnessSUT, *, t0_ns: int, interval_s: float = 2.0,
                 show_bar: bool | None = None, label: str = "",
                 kv_source: Callable[[], float | None] | None = None) -> None:
        self.sut = sut
        self.kv_source = kv_source  # the engine's KV-cache use now (telemetry's latest), or None
        self.t0 = t0_ns
        self.interval = max(0.05, float(interval_s))
        self.schedule = ScheduleReader(out_dir / DETAIL_LOG) if sut.scenario == "Server" else None
        self.progress_path = out_dir / PROGRESS
        self.samples_path = out_dir / SAMPLES
        self.error: OutputError | None = None  # the first write that failed
        try:
            self._progress: TextIO = open(self.progress_path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(self.progress_path, exc) from None
        try:
            self._samples: TextIO = open(self.samples_path, "a", encoding="utf-8", buffering=1 << 20)
        except OSError as exc:
            self._progress.close()
            raise OutputError(self.samples_path, exc) from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._write_lock = threading.Lock()
        self._closed = False
        self._bar = None
        if show_bar if show_bar is not None else sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=None, desc=label or "samples", unit="sample", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write(final=False)
            except OutputError:
                return  # kept in self.error; the run loop ends the run

    def snapshot(self, final: bool) -> dict:
        issued, completed, tokens = self.sut.counters()
        elapsed = (time.monotonic_ns() - self.t0) / 1e9
        total = self.sut.total if self.sut.total is not None else self._scheduled_total()
        return progress_record(time=utc_now(), elapsed_s=elapsed, issued=issued, completed=completed, total=total,
                               output_tokens=tokens, final=final, kv_cache_usage_pct=self._kv())

    def _scheduled_total(self) -> int | None:
        if self.schedule is None:
            return None
        known = self.schedule.schedule
        found = self.schedule.poll()
        if found is not None and known is None:
            log.info("%s", found.describe())
        return found.samples if found is not None else None

    def _kv(self) -> float | None:
        if self.kv_source is None:
            return None
        try:
            value = self.kv_source()
            return float(value) if value is not None else None
        except Exception:  # noqa: BLE001 - a gauge must never stop the progress lines
            return None

    def _failed(self, path: Path, exc: OSError) -> OutputError:
        if self.error is None:
            self.error = OutputError(path, exc)
        return self.error

    def write(self, final: bool) -> dict | None:
        """One progress line (and the samples drained so far); :class:`OutputError` if a file cannot be written,
        and after that nothing is written any more."""
        with self._write_lock:
            if self._closed:
                return None
            if self.error is not None:
                raise self.error
            try:
                self._drain_samples(final)
            except OSError as exc:
                raise self._failed(self.samples_path, exc) from None
            snap = self.snapshot(final)
            try:
                self._progress.write(json.dumps(snap) + "\n")
                self._progress.flush()
            except OSError as exc:
                raise self._failed(self.progress_path, exc) from None
            if self._bar is not None:
                if snap["total"] is not None and self._bar.total != snap["total"]:
                    self._bar.total = snap["total"]
                self._bar.n = snap["completed"]
                postfix = {"tok_s": f"{snap['tokens_per_s']:.0f}"}
                if snap.get("kv_cache_usage_pct") is not None:
                    postfix["kv"] = f"{snap['kv_cache_usage_pct']:.0f}%"
                self._bar.set_postfix(postfix, refresh=False)
                self._bar.refresh()
            return snap

    def _drain_samples(self, final: bool) -> None:
        # In slices, yielding the GIL between them, so LoadGen's threads never wait behind a long burst of writes.
        records = self.sut.records
        while records:
            self._samples.writelines(drain_sample_lines(records, DRAIN_SLICE))
            if not final:
                time.sleep(0.0002)  # a real sleep hands the GIL over (sleep(0) may take it straight back)
        self._samples.flush()

    def stop(self) -> dict | None:
        """Stop the thread and write the final lines (idempotent); the files are closed even if that fails, then
        :class:`OutputError` is raised."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            snap = self.write(final=True)
        except OutputError:
            snap = None
        with self._write_lock:
            if not self._closed:
                self._closed = True
                for fh, path in ((self._progress, self.progress_path), (self._samples, self.samples_path)):
                    try:
                        fh.close()  # flushes what is buffered: may fail too
                    except OSError as exc:
                        self._failed(path, exc)
                if self._bar is not None:
                    self._bar.close()
        if self.error is not None:
            raise self.error
        return snap
