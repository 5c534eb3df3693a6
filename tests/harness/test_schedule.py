"""Reading the schedule LoadGen generated from its detail log while it is being written (real submission logs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlperf_assets.harness.schedule import ScheduleReader, mllog_values
from mlperf_assets.loadgen_logs import parse_detail_log

SERVER = "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server"
OFFLINE = "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline"


def _fed_in_slices(source: Path, dest: Path, size: int) -> tuple[int, object]:
    """Append the log to ``dest`` ``size`` bytes at a time, polling after each; the byte count when the schedule
    first appears and the schedule."""
    data = source.read_bytes()
    reader = ScheduleReader(dest)
    assert reader.poll() is None  # no file yet: "not yet", no error
    with dest.open("wb") as fh:
        for end in range(size, len(data) + size, size):
            fh.write(data[end - size:end])
            fh.flush()
            if (found := reader.poll()) is not None:
                return min(end, len(data)), found
    return len(data), None


@pytest.mark.parametrize("run", [SERVER, OFFLINE])
def test_schedule_is_read_as_the_log_grows_and_matches_the_full_parse(run, mlperf_logs_dir: Path, tmp_path: Path):
    source = mlperf_logs_dir / run / "performance" / "run_1" / "mlperf_log_detail.txt"
    detail = parse_detail_log(source)
    read_at, schedule = _fed_in_slices(source, tmp_path / "mlperf_log_detail.txt", 997)  # lines cut mid-way
    assert schedule is not None
    assert (schedule.queries, schedule.samples_per_query) == (
        detail.get("generated_query_count"), detail.get("generated_samples_per_query"))
    assert schedule.duration_s == pytest.approx(detail.get("generated_query_duration") / 1e9)
    assert schedule.equal_issue is detail.get("effective_sample_concatenate_permutation")
    assert schedule.loaded_samples == detail.get("effective_performance_sample_count")
    # found once the last of the three lines (the duration) is complete, not before and not at the end of the log
    text = source.read_bytes()
    line_end = text.index(b"\n", text.index(b'"generated_query_duration"'))
    assert line_end < read_at <= line_end + 997 < len(text)


def test_server_schedule_says_why_it_is_longer_than_qps_times_duration(mlperf_logs_dir: Path, tmp_path: Path):
    source = mlperf_logs_dir / SERVER / "performance" / "run_1" / "mlperf_log_detail.txt"
    _, schedule = _fed_in_slices(source, tmp_path / "mlperf_log_detail.txt", 1 << 16)
    assert schedule.samples == 13368
    assert schedule.describe() == (
        "LoadGen scheduled 13,368 queries over 3,790.3 s (1 x the 13,368 loaded samples: "
        "sample_concatenate_permutation pads the schedule to whole multiples of them)")


def test_offline_schedule_names_the_samples_of_its_one_query(mlperf_logs_dir: Path, tmp_path: Path):
    source = mlperf_logs_dir / OFFLINE / "performance" / "run_1" / "mlperf_log_detail.txt"
    _, schedule = _fed_in_slices(source, tmp_path / "mlperf_log_detail.txt", 1 << 16)
    detail = parse_detail_log(source)
    assert schedule.queries == 1 and schedule.samples == detail.get("generated_samples_per_query") > 1
    assert schedule.describe().startswith(f"LoadGen scheduled 1 query of {schedule.samples:,} samples")


def test_foreign_and_malformed_lines_are_skipped():
    lines = [
        "some other output",
        ':::MLLOG {"key": "generated_query_count", "value": 12',  # cut short
        ':::MLLOG {"key": "generated_query_count", "value": 40, "time_ms": 1.0}',
        ':::MLLOG {"key": "generated_query_count", "value": 99, "time_ms": 2.0}',  # a re-log: the first counts
        ':::MLLOG {"key": "unrelated", "value": 1}',
    ]
    assert mllog_values(lines) == {"generated_query_count": 40}
