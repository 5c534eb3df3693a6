"""validate-config refuses rates and sizes no node can hold (issue 24: G3, G4, G23), one line each naming the file and
the field: a scenario whose schedule LoadGen could not hold (as the profile passes its settings on), the capacity
search's rates, factors and durations, a node's absurd GPU count, and non-finite or absurd ``sim`` options. Before
the fix each validated and the run then exhausted the node, never ended, or recorded NaN."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.config import ConfigError, load_config
from mlperf_assets.errors import UserError
from mlperf_assets.harness.args import MAX_NODE_GPUS
from mlperf_assets.search import Bracket

CLI = str(Path(sys.executable).parent / "mlperf-dagster")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MLPERF_DAGSTER_DATASET", raising=False)
    monkeypatch.delenv("MLPERF_DAGSTER_CONFIG", raising=False)


def config_file(tmp_path: Path, benchmark: str = "", node: str = "", search: str = "") -> Path:
    dataset = tmp_path / "prepared.json"
    dataset.write_text("[]")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"dataset: {{source: local, path: {dataset}}}\n"
        f"benchmark: {{model: llama3.1-8b, checkpoint: null, backend: sim, accuracy: false{benchmark}}}\n"
        f"nodes: [{{name: a, runner: local{node}}}]\n" + (f"search: {{{search}}}\n" if search else ""))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


def test_a_scenario_schedule_loadgen_cannot_hold(tmp_path):
    path = config_file(tmp_path, ", scenarios: {Server: {target_qps: 1.0e+9, min_duration_ms: 2000}}")
    assert problems_of(path) == [
        f"{path}: benchmark.scenarios.Server: target_qps 1e+09 x min_duration 2,000 ms schedules about 2,000,000,000 "
        "Server queries, more than the 10,000,000 a run can hold (LoadGen generates the whole schedule up front, "
        "~1 KiB a query); lower target_qps, or lower min_duration_ms or min_query_count"]
    path = config_file(tmp_path, ", scenarios: {SingleStream: {target_latency_ms: 1.0e-9}}")
    assert "benchmark.scenarios.SingleStream: target_latency 1e-09 ms" in problems_of(path)[0]
    path = config_file(tmp_path, ", scenarios: {Offline: {min_query_count: 1000000000000}}")
    assert "min_query_count 1,000,000,000,000 schedules" in problems_of(path)[0]


def test_the_submission_profile_counts_mlperf_conf_s_600_s(tmp_path):
    """20,000 QPS for 1 s is fine as written; the submission profile drops the duration: 600 s, 12 M queries."""
    smoke = ", scenarios: {Server: {target_qps: 20000, min_duration_ms: 1000}}"
    assert load_config(config_file(tmp_path, smoke)).benchmark.scenarios.Server.target_qps == 20000
    path = config_file(tmp_path, smoke + ", profile: submission")
    problems = [p for p in problems_of(path) if "benchmark.scenarios" in p]
    assert len(problems) == 1 and "min_duration 600,000 ms (mlperf.conf)" in problems[0], problems


@pytest.mark.parametrize("search, field, needle", [
    ("start_qps: 1.0e+12", "start_qps", "must be at most 16,666.67 QPS: 1e+12 QPS x the 600 s confirmation"),
    ("min_qps: 1.0e+300", "min_qps", "must be at most 16,666.67 QPS"),
    ("start_qps: 2000, confirm_duration_s: 10000", "start_qps", "must be at most 1,000.00 QPS"),
    ("start_fraction: 1.0e+10", "start_fraction", "must be at most 10"),
    ("growth: 1.0e+300", "growth", "must be at most 10"),
    ("probe_duration_s: 1.0e+9", "probe_duration_s", "must be at most 86,400 s"),
    ("min_queries: 1000000000000", "min_queries", "must be at most 10,000,000"),
])
def test_search_rates_and_factors_are_bounded(tmp_path, search, field, needle):
    path = config_file(tmp_path, search=search)
    problems = problems_of(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: search.{field}: {needle}"), problems


def test_search_qps_flags_are_bounded_the_same_way(tmp_path):
    from mlperf_assets.commands.search import apply_overrides

    config = load_config(config_file(tmp_path))
    ns = argparse.Namespace(start_qps=1e9)
    with pytest.raises(UserError, match=r"^--start-qps: .*must be at most 16,666.67 QPS"):
        apply_overrides(config, ns)
    r = subprocess.run([CLI, "search-qps", "--config", str(config_file(tmp_path)), "--start-qps", "1e9"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        "error: --start-qps: must be at most 16,666.67 QPS: 1e+09 QPS x the 600 s confirmation schedules more than the "
        "10,000,000 queries a run can hold (LoadGen generates the whole schedule up front, ~1 KiB a query)"), r.stderr


def test_the_bracket_never_probes_above_what_a_run_can_hold():
    b = Bracket(start=50.0, growth=10.0, max_probes=8, max_qps=1000.0)
    rates = []
    while (q := b.next_qps()) is not None:
        rates.append(q)
        b.record(q, True)
    assert rates == [50.0, 500.0, 1000.0]  # every probe passed: it stops at the ceiling, not after 8 probes


def test_a_node_with_an_absurd_gpu_count(tmp_path):
    path = config_file(tmp_path, ", parallelism: data", ", gpus: 1000000000")
    assert problems_of(path) == [f"{path}: nodes[0].gpus: node 'a' has 1,000,000,000 GPUs; a node holds at most "
                                 f"{MAX_NODE_GPUS} (data parallelism starts one engine process per GPU group)"]
    assert load_config(config_file(tmp_path, ", parallelism: data", ", gpus: 8")).nodes[0].gpus == 8


@pytest.mark.parametrize("engine, needle", [
    ("decode_ms_per_seq: .nan", "decode_ms_per_seq must be a finite number between 0 and 10000 ms (got nan)"),
    ("decode_step_ms: 1.0e+12", "decode_step_ms must be a finite number between 0 and 10000 ms (got 1000000000000.0)"),
    ("decode_step_ms: .inf", "decode_step_ms must be a finite number between 0 and 10000 ms (got inf)"),
    ("prefill_tokens_per_s: 1.0e-300",
     "prefill_tokens_per_s must be a finite number between 1 and 1e+12 tokens/s (got 1e-300)"),
])
def test_sim_options_nan_infinity_and_absurd_sizes(tmp_path, engine, needle):
    path = config_file(tmp_path, f", engine: {{{engine}}}")
    assert problems_of(path) == [f"{path}: benchmark.engine: sim backend: {needle}"]
