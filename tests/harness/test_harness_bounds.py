"""Rates and sizes bounded by what a node can hold (issue 24: G3, G4, G23), at the harness command line, which may be
run directly: a schedule LoadGen could not hold, absurd data-parallel sizes and absurd or non-finite ``sim`` options
are refused with one line and exit 2, before anything is written. Before the fix they ended in ``std::bad_alloc``,
a ``MemoryError`` traceback after gigabytes, a run that never ended, or a manifest holding NaN.

The estimate of a schedule's size is checked against real LoadGen's own ``generated_query_count``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.harness import settings as harness_settings
from mlperf_assets.harness.args import MAX_NODE_GPUS
from mlperf_assets.harness.backends.sim import CapacityModel
from mlperf_assets.harness.errors import HarnessError
from mlperf_assets.harness.settings import MAX_SCHEDULED_QUERIES, node_query_limit, scheduled_queries

PROJECT = Path(__file__).resolve().parents[2]
SERVER = ["--scenario", "Server", "--mode", "performance", "--backend", "sim", "--lg-model-name",
          "llama3_1-8b-interactive", "--sample-concatenate-permutation", "false", "--telemetry-interval-s", "0"]
OFFLINE = ["--scenario", "Offline", "--mode", "performance", "--backend", "sim", "--min-duration-ms", "500",
           "--min-query-count", "20", "--telemetry-interval-s", "0"]


def harness(*args: str, cwd: Path = PROJECT, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "run", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def refused(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, the last stderr line holds every needle (argparse adds its usage line above it)."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in line, (needle, line)
    return line


# ------------------------------------------------------------------------------------------ G3: the schedule


@pytest.mark.parametrize("qps", ["1e9", "1e300", "6e6"])
def test_a_schedule_loadgen_cannot_hold_is_refused_before_anything_is_written(sim_dataset, tmp_path, qps):
    out = tmp_path / "run"
    r = harness(*SERVER, "--dataset", str(sim_dataset), "--output-dir", str(out), "--target-qps", qps,
                "--min-duration-ms", "2000", "--min-query-count", "600")
    line = refused(r, f"target_qps {float(qps):g} x min_duration 2,000 ms", "Server queries",
                   f"more than the {MAX_SCHEDULED_QUERIES:,} a run can hold", "lower target_qps")
    assert line.startswith("error: ")
    assert not out.exists()


def test_an_absent_min_duration_counts_as_mlperf_conf_s_600_s(sim_dataset, tmp_path):
    """20,000 QPS looks harmless with a short run, but mlperf.conf's 600 s makes it 12 million queries."""
    r = harness(*SERVER, "--dataset", str(sim_dataset), "--output-dir", str(tmp_path / "run"), "--target-qps", "20000")
    refused(r, "min_duration 600,000 ms (mlperf.conf)", "12,000,000 Server queries")
    r = harness("--scenario", "SingleStream", "--mode", "performance", "--backend", "sim", "--dataset",
                str(sim_dataset), "--output-dir", str(tmp_path / "ss"), "--target-latency-ms", "1e-9")
    refused(r, "target_latency 1e-09 ms", "SingleStream queries", "raise target_latency_ms")


def test_a_rate_from_a_copied_user_conf_is_checked_once_loadgen_read_it(sim_dataset, tmp_path):
    """The flags are checked before anything is written; a --user-conf's own rate is checked on what LoadGen's
    FromConfig made of it, before the schedule is generated: the run is marked failed, with the reason."""
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_qps = 1e9\n")
    out = tmp_path / "run"
    r = harness(*SERVER, "--dataset", str(sim_dataset), "--output-dir", str(out), "--user-conf", str(conf),
                "--min-duration-ms", "2000")
    refused(r, "target_qps 1e+09 x min_duration 2,000 ms", "Server queries")
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["exit_status"] == "failed" and "Server queries" in manifest["error"]
    assert not (out / "mlperf_log_detail.txt").exists()


def test_the_estimate_is_loadgen_s_own_count(sim_dataset, tmp_path):
    """Real LoadGen (replay backend) logs the schedule it generated: the estimate is that count, within 5 %."""
    cases = [("Server", {"target_qps": 3000.0, "min_duration": 1000, "min_query_count": 1}),
             ("Offline", {"target_qps": 4000.0, "min_duration": 1000, "min_query_count": 1})]
    for scenario, given in cases:
        out = tmp_path / scenario
        r = harness("--scenario", scenario, "--mode", "performance", "--backend", "replay", "--dataset",
                    str(sim_dataset), "--output-dir", str(out), "--target-qps", str(given["target_qps"]),
                    "--min-duration-ms", str(given["min_duration"]), "--min-query-count", "1",
                    "--sample-concatenate-permutation", "false", "--telemetry-interval-s", "0", timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        logged = {}
        for line in (out / "mlperf_log_detail.txt").read_text().splitlines():
            if '"generated_' in line:
                record = json.loads(line.split(":::MLLOG", 1)[1])
                logged[record["key"]] = record["value"]
        generated = logged["generated_query_count"] * logged["generated_samples_per_query"]
        assert scheduled_queries(scenario, given) == pytest.approx(generated, rel=0.05), (scenario, logged)


def test_the_node_s_memory_lowers_the_bound(monkeypatch):
    monkeypatch.setattr(harness_settings, "_memory_bytes", lambda: 2 * 2**30)
    limit, why = node_query_limit()
    assert limit == 2**30 // 1024 and "half of this node's 2.0 GiB memory" in why
    monkeypatch.setattr(harness_settings, "_memory_bytes", lambda: None)
    assert node_query_limit()[0] == MAX_SCHEDULED_QUERIES
    monkeypatch.setattr(harness_settings, "_memory_bytes", lambda: 2**50)
    assert node_query_limit()[0] == MAX_SCHEDULED_QUERIES


# ------------------------------------------------------------------------------------------ G4: replicas


@pytest.mark.parametrize("size", ["1000000000", "99999999999999999999", str(MAX_NODE_GPUS + 1)])
def test_an_absurd_data_parallel_size_is_one_line_not_a_memory_error(sim_dataset, tmp_path, size):
    out = tmp_path / "big"
    r = harness(*OFFLINE, "--dataset", str(sim_dataset), "--output-dir", str(out), "--data-parallel-size", size)
    refused(r, "--data-parallel-size", f"must be at most {MAX_NODE_GPUS}", size)
    assert not out.exists()


def test_replicas_times_tensor_parallel_size_is_bounded_too(sim_dataset, tmp_path):
    out = tmp_path / "big"
    r = harness(*OFFLINE, "--dataset", str(sim_dataset), "--output-dir", str(out), "--data-parallel-size", "8",
                "--engine-arg", "tensor_parallel_size=1000000000")
    refused(r, "--data-parallel-size 8 x tensor_parallel_size 1000000000 needs 8000000000 GPUs",
            f"a node holds at most {MAX_NODE_GPUS}")
    assert not out.exists()


# ------------------------------------------------------------------------------------------ G23: sim options


@pytest.mark.parametrize("values, needle", [
    ({"decode_ms_per_seq": float("nan")}, "decode_ms_per_seq must be a finite number between 0 and 10000 ms (got nan)"),
    ({"decode_step_ms": 1e12}, "decode_step_ms must be a finite number between 0 and 10000 ms"),
    ({"decode_step_ms": float("inf")}, "decode_step_ms must be a finite number between 0 and 10000 ms (got inf)"),
    ({"prefill_tokens_per_s": float("inf")}, "prefill_tokens_per_s must be a finite number"),
    ({"prefill_tokens_per_s": 1e-300}, "prefill_tokens_per_s must be a finite number between 1 and"),
    ({"max_num_seqs": 10**9}, "max_num_seqs must be an integer between 1 and 131072"),
    ({"output_tokens": 10**12}, "output_tokens must be an integer between 2 and 131072, or 0"),
    ({"max_tokens": 10**12}, "max_tokens must be an integer between 2 and 131072"),
])
def test_sim_capacity_model_refuses_non_finite_and_absurd_values(values, needle):
    with pytest.raises(HarnessError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        CapacityModel(**values)


@pytest.mark.parametrize("flag, value", [("--sim-decode-ms-per-seq", "nan"), ("--sim-decode-step-ms", "1e12"),
                                         ("--sim-decode-step-ms", "inf"), ("--sim-prefill-tokens-per-s", "inf")])
def test_sim_flags_nan_infinity_and_absurd_sizes_exit_2(sim_dataset, tmp_path, flag, value):
    out = tmp_path / "run"
    r = harness(*OFFLINE, "--dataset", str(sim_dataset), "--output-dir", str(out), flag, value)
    refused(r, "sim backend:", flag.removeprefix("--sim-").replace("-", "_"))
    assert not (out / "mlperf_log_summary.txt").exists()
