"""progress.jsonl and samples.jsonl, written by one background thread (never by LoadGen's or the workers' threads).

Every ``interval_s`` the thread appends one progress line and drains the SUT's buffered per-sample timings into
samples.jsonl; ``stop`` writes the last of both, with ``"final": true`` on the progress line. A tqdm bar on stderr is
shown only when stderr is a terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from .sut import HarnessSUT, drain_sample_lines

PROGRESS_FILE = "progress.jsonl"
SAMPLES_FILE = "samples.jsonl"
DRAIN_SLICE = 64  # timing records (an Offline record is a whole batch) formatted per GIL slice


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProgressWriter:
    def __init__(self, out_dir: Path, sut: HarnessSUT, *, t0_ns: int, interval_s: float = 2.0,
                 show_bar: bool | None = None, label: str = "") -> None:
        self.sut = sut
        self.t0 = t0_ns
        self.interval = max(0.05, float(interval_s))
        self._progress: TextIO = open(out_dir / PROGRESS_FILE, "a", encoding="utf-8")
        self._samples: TextIO = open(out_dir / SAMPLES_FILE, "a", encoding="utf-8", buffering=1 << 20)
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
            self.write(final=False)

    def snapshot(self, final: bool) -> dict:
        issued, completed, tokens = self.sut.counters()
        elapsed = (time.monotonic_ns() - self.t0) / 1e9
        return {
            "time": utc_now(),
            "elapsed_s": round(elapsed, 3),
            "issued": issued,
            "completed": completed,
            "total": self.sut.total,
            "output_tokens": tokens,
            "tokens_per_s": round(tokens / elapsed, 3) if elapsed > 0 else 0.0,
            "final": final,
        }

    def write(self, final: bool) -> dict | None:
        with self._write_lock:
            if self._closed:
                return None
            self._drain_samples(final)
            snap = self.snapshot(final)
            self._progress.write(json.dumps(snap) + "\n")
            self._progress.flush()
            if self._bar is not None:
                if snap["total"] is not None and self._bar.total != snap["total"]:
                    self._bar.total = snap["total"]
                self._bar.n = snap["completed"]
                self._bar.set_postfix(tok_s=f"{snap['tokens_per_s']:.0f}", refresh=False)
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
        """Stop the thread and write the final lines (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        snap = self.write(final=True)
        with self._write_lock:
            if not self._closed:
                self._closed = True
                self._progress.close()
                self._samples.close()
                if self._bar is not None:
                    self._bar.close()
        return snap
