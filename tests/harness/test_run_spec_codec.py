"""RunSpec.harness_args and RunArgs.from_cli_args are the two halves of one codec (harness/args.py): what the
orchestrator plans must be what the harness on the node receives, field by field, for every kind of run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mlperf_assets.harness.args import HARNESS_MODULE, RunArgs, RunSpec
from mlperf_assets.harness.cli import build_parser
from mlperf_assets.harness.settings import validate_settings

AUDIT = "# TEST06\n*.*.accuracy_log_rng_seed = 720381539243781796\n*.*.accuracy_log_sampling_target = 100\n"
BASE = dict(run_id="r-1", node="gpu-a", scenario="Offline", mode="performance", benchmark="llama3.1-8b",
            backend="extractive", dataset_path="/data/cnn.json")

SPECS = {
    "offline-defaults": RunSpec(**BASE),
    "server-settings": RunSpec(**{**BASE, "scenario": "Server"}, settings={
        "target_qps": 4.5, "min_duration_ms": 1200, "min_query_count": 7, "ttft_latency_ms": 2000,
        "tpot_latency_ms": 100, "coalesce_queries": True, "max_async_queries": 0}),
    "singlestream": RunSpec(**{**BASE, "scenario": "SingleStream"}, settings={"target_latency_ms": 15.5},
                            max_samples=64, progress_interval_s=0.25),
    "accuracy": RunSpec(**{**BASE, "mode": "accuracy"}, max_samples=13, settings={"min_query_count": 1}),
    "interactive": RunSpec(**{**BASE, "scenario": "Server"}, lg_model_name="llama3_1-8b-interactive",
                           settings={"target_qps": 1.25}),
    "compliance-test06": RunSpec(**{**BASE, "scenario": "Server", "mode": "accuracy", "run_id": "r-1.c"},
                                 compliance="TEST06", audit_config=AUDIT, settings={"target_qps": 2}),
    "data-parallel-engine-args": RunSpec(
        **{**BASE, "backend": "replay", "node": "box-2"}, data_parallel_size=4,
        engine_args={"gpu_memory_utilization": 0.85, "enforce_eager": True, "max_model_len": 4096,
                     "quantization": "1", "served_name": "null", "limits": {"a": [1, 2]}, "note": "a=b c"},
        progress_interval_s=5.0, max_samples=100),
    "gptj": RunSpec(**{**BASE, "benchmark": "gptj", "scenario": "Server"}, settings={"target_latency_ms": 20000}),
}

# RunSpec fields the harness receives, and how RunArgs holds each one
RECEIVED = {
    "run_id": lambda a: a.run_id,
    "node": lambda a: a.node,
    "scenario": lambda a: a.scenario,
    "mode": lambda a: a.mode,
    "benchmark": lambda a: a.benchmark,
    "backend": lambda a: a.backend,
    "dataset_path": lambda a: a.dataset,
    "engine_args": lambda a: dict(a.backend_args.engine_args),
    "settings": lambda a: dict(a.settings),
    "max_samples": lambda a: a.max_samples,
    "lg_model_name": lambda a: a.lg_model_name,
    "progress_interval_s": lambda a: a.progress_interval_s,
    "data_parallel_size": lambda a: a.data_parallel_size,
    "compliance": lambda a: a.compliance,
    "audit_config": lambda a: a.audit_config_text,
}
NOT_RECEIVED_AS_A_FIELD = {
    "extra_args",  # raw argv elements: checked by what they set (test_extra_args_pass_verbatim)
    "endpoint_point",  # an Endpoints point's job: another harness command (endpoint-point), tests/endpoints/
}


def _decode(argv: list[str]) -> RunArgs:
    return RunArgs.from_cli_args(build_parser().parse_args(argv))


def _expected(spec: RunSpec, field_name: str) -> Any:
    value = getattr(spec, field_name)
    return dict(value) if field_name in ("engine_args", "settings") else value


def test_every_run_spec_field_is_checked():
    """A field added to RunSpec needs a flag, a RunArgs field and a line in RECEIVED."""
    assert {f.name for f in dataclasses.fields(RunSpec)} == set(RECEIVED) | NOT_RECEIVED_AS_A_FIELD


@pytest.mark.parametrize("name", list(SPECS))
def test_the_harness_receives_the_spec(name: str):
    spec = SPECS[name]
    args = _decode(spec.harness_args("/runs/r-1/performance"))
    assert args.output_dir == "/runs/r-1/performance"
    for field_name, received in RECEIVED.items():
        assert received(args) == _expected(spec, field_name), field_name


def test_non_default_values_survive_so_a_dropped_flag_shows():
    """Each checked field differs from RunArgs' default in some spec, so a flag missing from harness_args (the
    harness would then take its default) fails test_the_harness_receives_the_spec."""
    defaults = _decode(["run", "--scenario", "Offline", "--mode", "performance", "--backend", "extractive",
                        "--dataset", "/d", "--output-dir", "/o"])
    for field_name, received in RECEIVED.items():
        if field_name in ("scenario", "mode", "backend", "dataset_path"):
            continue  # required flags: argparse refuses an argv without them
        assert any(_expected(s, field_name) != received(defaults) for s in SPECS.values()), field_name


def test_settings_arrive_in_loadgen_keys_with_config_units():
    args = _decode(SPECS["server-settings"].harness_args("/o"))
    assert dict(args.settings) == validate_settings({"target_qps": 4.5, "min_duration": 1200, "min_query_count": 7,
                                                     "ttft_latency": 2000, "tpot_latency": 100,
                                                     "coalesce_queries": True, "max_async_queries": 0})


def test_a_remote_dataset_path_replaces_the_orchestrators():
    spec = SPECS["accuracy"]
    argv = spec.harness_args("/w/r-1/accuracy", dataset_path="/node/_datasets/abc.json")
    assert _decode(argv).dataset == "/node/_datasets/abc.json"


def test_extra_args_pass_verbatim():
    spec = RunSpec(**BASE, extra_args=("--batch-size", "8", "--offline-workers", "3", "--telemetry-interval-s", "0"))
    argv = spec.harness_args("/o")
    assert argv[-6:] == list(spec.extra_args)
    args = _decode(argv)
    assert (args.batch_size, args.offline_workers, args.telemetry_interval_s) == (8, 3, 0.0)


def test_harness_argv_runs_the_harness_module():
    spec = SPECS["offline-defaults"]
    argv = spec.harness_argv("/usr/bin/python3", "/o")
    assert argv[:4] == ["/usr/bin/python3", "-m", HARNESS_MODULE, "run"] and argv[3:] == spec.harness_args("/o")


@pytest.mark.parametrize("name", list(SPECS))
def test_json_round_trip(name: str):
    spec = SPECS[name]
    assert RunSpec.from_json(spec.to_json()) == spec
