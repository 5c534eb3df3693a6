"""The schedule LoadGen generated for a test, read from its detail log while the test runs.

LoadGen generates every query before it issues the first and logs how many (``generated_query_count``,
``generated_samples_per_query``, ``generated_query_duration``). Server issues every one of them, so that count is
its run's total, known in advance: it is not ``target_qps x min_duration`` where ``sample_concatenate_permutation``
is on (mlperf.conf sets it for llama3.1-8b and gpt-j), because LoadGen then pads the schedule to a whole multiple of
the loaded samples, which can double a run's length. :class:`ScheduleReader` gives a Server run's progress line its
``total`` and the log one line saying so. (SingleStream generates up to twice what it issues and ends once
min_query_count and min_duration are met: its count is no total.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MLLOG_PREFIX = ":::MLLOG"
KEYS = (
    "effective_sample_concatenate_permutation",
    "effective_performance_sample_count",
    "generated_query_count",
    "generated_samples_per_query",
    "generated_query_duration",
)
READ_LIMIT = 1 << 22  # the keys come in the log's first kilobytes; past this, stop looking


@dataclass(frozen=True)
class Schedule:
    queries: int
    samples_per_query: int
    duration_s: float  # the last query's scheduled issue time
    equal_issue: bool  # sample_concatenate_permutation
    loaded_samples: int | None

    @property
    def samples(self) -> int:
        return self.queries * self.samples_per_query

    def describe(self) -> str:
        count = f"{self.queries:,} quer{'y' if self.queries == 1 else 'ies'}"
        if self.samples_per_query != 1:
            count += f" of {self.samples_per_query:,} samples"
        text = f"LoadGen scheduled {count}"
        if self.queries > 1:
            text += f" over {self.duration_s:,.1f} s"
        if self.equal_issue and self.loaded_samples and self.samples_per_query == 1 and self.queries % self.loaded_samples == 0:
            text += (f" ({self.queries // self.loaded_samples} x the {self.loaded_samples:,} loaded samples: "
                     "sample_concatenate_permutation pads the schedule to whole multiples of them)")
        return text


def schedule_from_values(values: dict) -> Schedule | None:
    """The schedule once the detail log holds the three ``generated_*`` values (LoadGen logs them together, the
    duration last)."""
    queries, per_query = values.get("generated_query_count"), values.get("generated_samples_per_query")
    duration = values.get("generated_query_duration")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (queries, per_query, duration)):
        return None
    loaded = values.get("effective_performance_sample_count")
    return Schedule(
        queries=queries,
        samples_per_query=per_query,
        duration_s=duration / 1e9,
        equal_issue=values.get("effective_sample_concatenate_permutation") is True,
        loaded_samples=loaded if isinstance(loaded, int) and not isinstance(loaded, bool) else None,
    )


def mllog_values(lines: list[str], keys: tuple[str, ...] = KEYS) -> dict:
    """The first value of each of ``keys`` among complete ``:::MLLOG`` lines (others, and malformed lines, skipped)."""
    found: dict = {}
    for line in lines:
        pos = line.find(MLLOG_PREFIX)
        if pos < 0 or not any(f'"{key}"' in line for key in keys):
            continue
        try:
            record = json.loads(line[pos + len(MLLOG_PREFIX):])
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("key") in keys and record["key"] not in found:
            found[record["key"]] = record.get("value")
    return found


class ScheduleReader:
    """Reads ``mlperf_log_detail.txt`` as LoadGen writes it (LoadGen flushes it as it goes), a new slice per
    :meth:`poll`, until the schedule is known; never raises (a missing or unreadable log just means "not yet")."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._values: dict = {}
        self.schedule: Schedule | None = None

    def poll(self) -> Schedule | None:
        if self.schedule is not None or self._offset >= READ_LIMIT:
            return self.schedule
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read(READ_LIMIT - self._offset)
        except OSError:
            return None
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # the line LoadGen is writing now
        for key, value in mllog_values([raw.decode("utf-8", "replace") for raw in lines]).items():
            self._values.setdefault(key, value)
        self.schedule = schedule_from_values(self._values)
        return self.schedule
