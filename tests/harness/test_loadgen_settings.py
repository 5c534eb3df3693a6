"""LoadGen scenario settings: one table (harness/settings.py), one validation, one mapping from the config file through
the RunSpec's argv and the harness CLI into user.conf and LoadGen itself."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.config import ConfigError, parse_config
from mlperf_assets.harness.args import RunArgs
from mlperf_assets.harness.cli import build_parser
from mlperf_assets.harness.settings import (
    LOADGEN_SETTINGS,
    RunSettings,
    SettingsError,
    generated_lines,
    settings_argv,
    validate_settings,
)
from mlperf_assets.harness.args import RunSpec

PROJECT = Path(__file__).resolve().parents[2]
NODE = "nodes: [{name: a, runner: local}]\n"
# One value per kind of setting, as a user would write it (hand-written, not taken from the table's code).
SAMPLE = {"QPS": 12.5, "ms": 0.5, "": 7, "percent": 99.0}


def _sample(row) -> object:
    if row.kind.python_type is bool:
        return True
    if row.kind.python_type is int:
        return 1500 if row.kind.unit == "ms" else 7
    return SAMPLE[row.kind.unit]


def test_both_spellings_give_loadgen_keys_in_table_order():
    got = validate_settings({"ttft_latency_ms": 500, "min_duration": 1000, "target_qps": 4, "tpot_latency_ms": None})
    assert got == {"target_qps": 4.0, "min_duration": 1000, "ttft_latency": 500.0}
    assert list(got) == ["target_qps", "min_duration", "ttft_latency"]
    assert isinstance(got["target_qps"], float) and isinstance(got["min_duration"], int)
    assert validate_settings(got) == got  # idempotent: a validated mapping passes through unchanged


@pytest.mark.parametrize("settings, message", [
    ({"target_qps": float("nan")}, "target_qps: must be a number > 0, got nan"),
    ({"ttft_latency_ms": float("inf")}, "ttft_latency_ms: must be a number > 0, got inf"),
    ({"target_latency": 0}, "target_latency: must be a number > 0, got 0"),
    ({"tpot_latency_ms": -3}, "tpot_latency_ms: must be a number > 0, got -3"),
    ({"target_qps": True}, "target_qps: must be a number > 0, got True"),
    ({"target_qps": "5"}, "target_qps: must be a number > 0, got '5'"),
    ({"min_duration_ms": -1}, "min_duration_ms: must be an integer >= 0, got -1"),
    ({"min_query_count": 2.5}, "min_query_count: must be an integer >= 0, got 2.5"),
    ({"coalesce_queries": 2}, "coalesce_queries: must be true or false"),
    ({"target_latency_percentile": 101}, "target_latency_percentile: must be a percentage between 0 and 100"),
    ({"min_durration_ms": 1}, "unknown scenario setting(s) 'min_durration_ms' (did you mean 'min_duration_ms'?)"),
    ({"min_duration": 1, "min_duration_ms": 2}, "min_duration and min_duration_ms are the same LoadGen key"),
])
def test_bad_settings_are_refused_with_one_line(settings, message):
    with pytest.raises(SettingsError) as info:
        validate_settings(settings)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="setting"):  # what RunSpec raises for the same mapping
        RunSpec(run_id="r", node="n", scenario="Server", mode="performance", benchmark="llama3.1-8b",
                backend="replay", dataset_path="/d.json", settings=settings)


@pytest.mark.parametrize("text, field, message", [
    ("Server: {target_qps: .nan}", "Server.target_qps", "must be a number > 0, got nan"),
    ("Server: {ttft_latency_ms: .inf}", "Server.ttft_latency_ms", "must be a number > 0, got inf"),
    ("Server: {target_latency_ms: 0}", "Server.target_latency_ms", "must be a number > 0, got 0"),
    ("Offline: {min_duration: 5}", "Offline.min_duration", "unknown key; did you mean 'min_duration_ms'?"),
    ("Server: {coalesce_queries: maybe}", "Server.coalesce_queries", "must be true or false (1 or 0), got 'maybe'"),
])
def test_config_errors_name_file_and_field(tmp_path: Path, text: str, field: str, message: str):
    path = tmp_path / "c.yaml"
    with pytest.raises(ConfigError) as info:
        parse_config(f"benchmark: {{backend: extractive, scenarios: {{{text}}}}}\n" + NODE, path)
    assert info.value.problems == [f"{path}: benchmark.scenarios.{field}: {message}"]


def test_every_table_row_is_a_config_field_and_a_harness_flag_that_round_trip():
    rows = list(LOADGEN_SETTINGS.values())
    assert len(rows) >= 20 and {"target_qps", "target_latency", "min_duration", "max_duration", "min_query_count",
                                "max_query_count", "ttft_latency", "tpot_latency"} <= set(LOADGEN_SETTINGS)
    wanted = {row.key: _sample(row) for row in rows}
    # config file (config spelling) -> ScenarioSettings -> RunSpec -> argv -> harness parser -> RunArgs
    yaml_map = ", ".join(f"{row.name}: {json.dumps(_sample(row))}" for row in rows)
    config = parse_config(f"benchmark: {{backend: extractive, scenarios: {{Server: {{{yaml_map}}}}}}}\n" + NODE,
                          Path("/tmp/c.yaml"))
    settings = config.benchmark.scenarios.Server.as_settings()
    assert settings == validate_settings(wanted)
    spec = RunSpec(run_id="r", node="n", scenario="Server", mode="performance", benchmark="llama3.1-8b",
                   backend="extractive", dataset_path="/d.json", settings=settings)
    assert RunSpec.from_json(spec.to_json()) == spec
    argv = spec.harness_args("/out")
    ns = build_parser().parse_args(argv)
    assert RunArgs.from_cli_args(ns).settings == spec.settings
    # the user-facing spellings of the eight common settings are the flags, as README and configs use them
    for flag in ("--target-qps", "--target-latency-ms", "--min-duration-ms", "--max-duration-ms",
                 "--min-query-count", "--max-query-count", "--ttft-latency-ms", "--tpot-latency-ms"):
        assert flag in argv, flag


def test_settings_argv_and_user_conf_lines():
    assert settings_argv({"min_query_count": 5, "target_qps": 4.5, "coalesce_queries": True,
                          "min_duration_ms": 200.0}) == [
        "--target-qps", "4.5", "--min-duration-ms", "200", "--min-query-count", "5", "--coalesce-queries", "1"]
    s = RunSettings("llama3_1-8b", "Server", loadgen={"accuracy_log_rng_seed": 9}, target_latency_ms=0.05,
                    use_token_latencies=False)
    assert generated_lines(s) == ["llama3_1-8b.Server.target_latency = 0.05",
                                  "llama3_1-8b.Server.use_token_latencies = 0",
                                  "llama3_1-8b.Server.accuracy_log_rng_seed = 9"]
    assert s.requested() == {"lg_model_name": "llama3_1-8b", "scenario": "Server", "mode": "performance",
                             "target_latency": 0.05, "use_token_latencies": False, "accuracy_log_rng_seed": 9}


@pytest.mark.parametrize("flag, value, why", [
    ("--target-qps", "nan", "must be a number > 0, got nan"),
    ("--target-qps", "0", "must be a number > 0, got 0.0"),
    ("--min-duration-ms", "-5", "must be an integer >= 0, got -5"),
    ("--min-query-count", "ten", "must be an integer, got 'ten'"),
    ("--coalesce-queries", "maybe", "must be true or false (1 or 0), got 'maybe'"),
])
def test_harness_cli_refuses_bad_values(flag: str, value: str, why: str, capsys):
    base = ["run", "--scenario", "Server", "--mode", "performance", "--backend", "replay", "--dataset", "d",
            "--output-dir", "o"]
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*base, flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: {why}" in capsys.readouterr().err


def test_a_rare_setting_travels_from_the_config_file_into_loadgen(tmp_path: Path, stories_dir: Path):
    """max_async_queries and coalesce_queries have no code of their own anywhere: only their table rows."""
    from mlperf_assets.harness.dataset import prepare_dataset

    dataset = prepare_dataset("stories", stories_dir, tmp_path / "ds.json", max_samples=8)
    config = parse_config("benchmark: {backend: replay, checkpoint: null, scenarios: {Server: {target_qps: 200, "
                          "min_duration_ms: 100, min_query_count: 16, max_async_queries: 4321, "
                          "coalesce_queries: true}}}\n" + NODE, tmp_path / "c.yaml")
    spec = RunSpec(run_id="rare-1", node="n", scenario="Server", mode="performance", benchmark="llama3.1-8b",
                   backend="replay", dataset_path=str(dataset),
                   settings=config.benchmark.scenarios.Server.as_settings())
    out = tmp_path / "run"
    r = subprocess.run(spec.harness_argv(sys.executable, str(out)), capture_output=True, text=True, cwd=PROJECT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    conf = (out / "user.conf").read_text()
    assert "llama3_1-8b.Server.max_async_queries = 4321" in conf
    assert "llama3_1-8b.Server.coalesce_queries = 1" in conf
    detail = {}
    for line in (out / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG "):
            rec = json.loads(line[len(":::MLLOG "):])
            detail.setdefault(rec["key"], rec["value"])
    assert detail["requested_server_max_async_queries"] == 4321
    assert detail["requested_server_coalesce_queries"] is True
    assert math.isclose(detail["effective_target_qps"], 200)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["requested_settings"]["max_async_queries"] == 4321
    assert manifest["settings"]["server_max_async_queries"] == 4321  # TestSettings after FromConfig


# Loads a user.conf per table row into a fresh TestSettings and prints the rows that changed nothing. The first
# FromConfig of a process also applies mlperf.conf (later ones do not), so it is spent on a throwaway; every
# comparison then is "user.conf lines alone". use_token_latencies and infer_token_latencies are on in every file, as
# mlperf.conf has them for the LLMs: LoadGen reads ttft/tpot_latency and token_latency_scaling_factor only then.
HONOURED = """\
import json, os, sys
import mlperf_loadgen as lg
from mlperf_assets.harness.settings import LOADGEN_SETTINGS, format_value

def load(lines):
    with open("u.conf", "w") as fh:
        fh.write("\\n".join(["*.*.infer_token_latencies = 1", "*.*.use_token_latencies = 1", *lines]) + "\\n")
    ts = lg.TestSettings()
    assert ts.FromConfig("u.conf", "llama3_1-8b", "Server") == 0
    return {n: str(getattr(ts, n)) for n in dir(ts) if not n.startswith("_") and not callable(getattr(ts, n))}

load([])
base = load([])
ignored = []
for key, row in LOADGEN_SETTINGS.items():
    values = [True, False] if row.kind.python_type is bool else [row.kind.python_type(37)]
    if not any(load([f"llama3_1-8b.Server.{key} = {format_value(v)}"]) != base for v in values):
        ignored.append(key)
print(json.dumps(ignored))
"""


def test_loadgen_honours_every_table_row_from_a_user_conf(tmp_path: Path):
    r = subprocess.run([sys.executable, "-c", HONOURED], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(PROJECT)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
