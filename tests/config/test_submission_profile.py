"""``profile: submission`` keeps MLPerf's rules (issue 22 item 4, faithfulness_3 section 6c): a scenario setting that
would change what a submission run measures or how it is judged (equal issue off, token latencies off, TTFT/TPOT or
latency limits and percentiles looser than the benchmark's, mlperf.conf-only switches) is refused at load, one line
naming the file and the field; the same config under ``profile: smoke`` loads as written. Limits come from the
registry (harness/benchmarks.py), not from the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.config import ConfigError, parse_config
from mlperf_assets.harness.benchmarks import LOADGEN_MODELS
from mlperf_assets.plan import PartitionPlan

MLC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mlcommons_inference"
pytestmark = pytest.mark.skipif(not (MLC / "compliance" / "TEST06" / "audit.config").is_file(),
                                reason=f"no MLCommons checkout at {MLC} (TEST06's audit.config)")
LLAMA, INTERACTIVE, GPTJ = (LOADGEN_MODELS[n] for n in ("llama3_1-8b", "llama3_1-8b-interactive", "gptj"))


def _text(tmp_path: Path, server: str, *, profile: str = "submission", extra: str = "") -> str:
    return ("nodes: [{name: box, runner: local}]\n"
            "dataset: {source: huggingface}\n"
            f"storage: {{artifact_root: '{tmp_path}/art', duckdb_path: '{tmp_path}/r.duckdb'}}\n"
            f"mlcommons_inference: '{MLC}'\n"
            "benchmark:\n  backend: extractive\n  checkpoint: null\n"
            f"  profile: {profile}\n{extra}"
            "  scenarios:\n    Offline: {min_duration_ms: 1000}\n"
            f"    Server: {{target_qps: 22, min_duration_ms: 1000, {server}}}\n")


@pytest.mark.parametrize("server, extra, field, says", [
    ("sample_concatenate_permutation: false", "", "sample_concatenate_permutation",
     "false turns equal issue off (mlperf.conf sets sample_concatenate_permutation = 1)"),
    ("use_token_latencies: false", "", "use_token_latencies",
     "false differs from mlperf.conf's use_token_latencies = 1 for llama3_1-8b"),
    (f"ttft_latency_ms: {LLAMA.ttft_latency_ms * 5:g}", "", "ttft_latency_ms",
     f"{LLAMA.ttft_latency_ms * 5:g} is looser than llama3_1-8b's ttft_latency limit, {LLAMA.ttft_latency_ms:g} ms"),
    (f"tpot_latency_ms: {LLAMA.tpot_latency_ms + 1:g}", "", "tpot_latency_ms",
     f"is looser than llama3_1-8b's tpot_latency limit, {LLAMA.tpot_latency_ms:g} ms"),
    (f"ttft_latency_ms: {INTERACTIVE.ttft_latency_ms + 100:g}", "  lg_model_name: llama3_1-8b-interactive\n",
     "ttft_latency_ms", f"looser than llama3_1-8b-interactive's ttft_latency limit, {INTERACTIVE.ttft_latency_ms:g}"),
    ("target_latency_percentile: 90", "", "target_latency_percentile",
     "90 is looser than mlperf.conf's Server percentile, 99"),
    ("infer_token_latencies: true", "", "infer_token_latencies", "is mlperf.conf's (or a compliance audit's) to set"),
    ("performance_issue_same: true", "", "performance_issue_same", "is mlperf.conf's (or a compliance audit's)"),
    (f"target_latency_ms: {GPTJ.server_target_latency_ms * 2:g}", "  model: gptj\n", "target_latency_ms",
     f"looser than gptj's target_latency limit, {GPTJ.server_target_latency_ms:g} ms"),
    ("use_token_latencies: true", "  model: gptj\n", "use_token_latencies",
     "true differs from mlperf.conf's use_token_latencies = 0 for gptj"),
], ids=["equal-issue", "token-latencies", "ttft", "tpot", "interactive-ttft", "percentile", "infer", "issue-same",
        "gptj-latency", "gptj-token-latencies"])
def test_a_rule_breaking_override_is_refused_in_one_line(tmp_path, server, extra, field, says):
    with pytest.raises(ConfigError) as err:
        parse_config(_text(tmp_path, server, extra=extra), tmp_path / "c.yaml")
    (line,) = err.value.problems
    assert line.startswith(f"{tmp_path / 'c.yaml'}: benchmark.scenarios.Server.{field}: ")
    assert says in line and "profile: submission keeps MLPerf's rules" in line and "\n" not in line
    # the same file as a smoke run: loaded, and the harness gets the setting as written
    smoke = parse_config(_text(tmp_path, server, extra=extra, profile="smoke"), tmp_path / "c.yaml")
    key = field.removesuffix("_ms")
    assert key in PartitionPlan(smoke, "box", "Server", tmp_path / "d.json").spec("r1", "performance").settings


def test_every_rule_break_is_its_own_line(tmp_path):
    server = ("sample_concatenate_permutation: false, use_token_latencies: false, ttft_latency_ms: 10000, "
              "tpot_latency_ms: 1000")  # the peer check's reproduction (faithfulness_3 section 6c)
    with pytest.raises(ConfigError) as err:
        parse_config(_text(tmp_path, server), tmp_path / "c.yaml")
    fields = sorted(line.split(": ")[1] for line in err.value.problems)
    assert fields == [f"benchmark.scenarios.Server.{f}" for f in (
        "sample_concatenate_permutation", "tpot_latency_ms", "ttft_latency_ms", "use_token_latencies")]


def test_what_keeps_the_rules_stays_and_the_durations_are_dropped(tmp_path):
    server = (f"ttft_latency_ms: {LLAMA.ttft_latency_ms / 2:g}, tpot_latency_ms: {LLAMA.tpot_latency_ms:g}, "
              "sample_concatenate_permutation: true, use_token_latencies: true, target_latency_percentile: 99.9, "
              "coalesce_queries: true, min_query_count: 600")
    config = parse_config(_text(tmp_path, server), tmp_path / "c.yaml")
    settings = PartitionPlan(config, "box", "Server", tmp_path / "d.json").spec("r1", "performance").settings
    assert settings == {"target_qps": 22.0, "ttft_latency": LLAMA.ttft_latency_ms / 2,
                        "tpot_latency": LLAMA.tpot_latency_ms, "target_latency_percentile": 99.9,
                        "coalesce_queries": True, "sample_concatenate_permutation": True, "use_token_latencies": True}


def test_validate_config_says_it_in_one_line_and_exits_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(_text(tmp_path, "sample_concatenate_permutation: false"))
    proc = subprocess.run([sys.executable, "-m", "mlperf_assets.cli", "validate-config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"{path}: benchmark.scenarios.Server.sample_concatenate_permutation: false turns equal")
