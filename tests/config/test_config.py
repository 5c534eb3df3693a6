"""Config files: the shipped ones load; malformed ones give exactly one line per problem, naming file and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.config import (
    DATASET_ENV,
    ConfigError,
    LocalNode,
    SSHNode,
    detect_dataset_source,
    load_config,
    parse_config,
    runner_resource_key,
)

PROJECT = Path(__file__).resolve().parents[2]
NODE = "nodes: [{name: a, runner: local}]\n"

# (file text, expected problems with "{f}" for the file path). Expected texts are written by hand.
MALFORMED = {
    "port_out_of_range": (
        "nodes:\n  - {name: a, runner: local}\n  - {name: b, runner: ssh, host: h, port: 70000}\n",
        ["{f}: nodes[1].port: must be an integer between 1 and 65535, got 70000"],
    ),
    "port_not_a_number": (
        "nodes:\n  - {name: b, runner: ssh, host: h, port: ssh}\n",
        ["{f}: nodes[0].port: must be an integer between 1 and 65535, got 'ssh'"],
    ),
    "misspelt_top_level_key": (
        "nodez: [{name: a, runner: local}]\n",
        ["{f}: nodez: unknown key; did you mean 'nodes'?"],
    ),
    "misspelt_node_key": (
        "nodes:\n  - {name: a, runner: local, wrokdir: /tmp/x}\n",
        ["{f}: nodes[0].wrokdir: unknown key; did you mean 'workdir'?"],
    ),
    "unknown_runner": (
        "nodes:\n  - {name: a, runner: sshh, host: h}\n",
        ["{f}: nodes[0].runner: must be one of local, ssh, kubernetes, docker, got 'sshh'; did you mean 'ssh'?"],
    ),
    "missing_runner": (
        "nodes:\n  - {name: a}\n",
        ["{f}: nodes[0].runner: is required (one of local, ssh, kubernetes, docker)"],
    ),
    "duplicate_node": (
        "nodes:\n  - {name: gpu1, runner: local}\n  - {name: gpu1, runner: ssh, host: h}\n",
        ["{f}: nodes[1].name: duplicate node name 'gpu1' (also nodes[0])"],
    ),
    "unknown_backend": (
        "benchmark: {backend: vlm}\n" + NODE,
        ["{f}: benchmark.backend: must be one of vllm, openai, extractive, replay, sim, got 'vlm'; did you mean 'vllm'?"],
    ),
    "misspelt_scenario": (
        "benchmark: {backend: extractive, scenarios: {Ofline: {min_duration_ms: 10}}}\n" + NODE,
        ["{f}: benchmark.scenarios.Ofline: unknown key; did you mean 'Offline'?"],
    ),
    "negative_qps": (
        "benchmark: {backend: extractive, scenarios: {Server: {target_qps: -1}}}\n" + NODE,
        ["{f}: benchmark.scenarios.Server.target_qps: must be a number > 0, got -1"],
    ),
    "bad_yaml": (
        "nodes:\n  - {name: a, runner: local\n",
        ["{f}: line 3, column 1: invalid YAML: expected ',' or '}}', but got '<stream end>'"],
    ),
    "empty_file": ("", ["{f}: the file is empty; expected a mapping with nodes, benchmark, dataset, storage"]),
    "top_level_list": ("- a\n- b\n", ["{f}: the top level must be a mapping (nodes:, benchmark:, ...), got a list"]),
    "no_nodes": ("nodes: []\n", ["{f}: nodes: needs at least one node"]),
    "nodes_missing": ("storage: {duckdb_path: x.duckdb}\n", ["{f}: nodes: is required"]),
    "dataset_path_missing": (
        "dataset: {source: stories}\n" + NODE,
        ["{f}: dataset.path: is required when source is 'stories'"],
    ),
    "bad_timezone": (
        "schedule: {cron: '0 2 * * *', timezone: Mars/Olympus}\n" + NODE,
        ["{f}: schedule.timezone: must be an IANA time zone such as UTC or Europe/Paris, got 'Mars/Olympus'"],
    ),
    "bad_cron": (
        "schedule: {cron: every night}\n" + NODE,
        ["{f}: schedule.cron: must be a 5-field cron expression such as '0 2 * * *', got 'every night'"],
    ),
    "cron_dagster_refuses": (  # the shape was fine; Dagster refused it when the code location loaded (F5)
        "schedule: {cron: '99 2 * * *'}\n" + NODE,
        ["{f}: schedule.cron: must be a 5-field cron expression such as '0 2 * * *', got '99 2 * * *': the minute "
         "field '99' is not valid (allowed: 0-59)"],
    ),
    "key_given_twice": (  # YAML kept the last one silently (F15)
        NODE + "benchmark: {backend: extractive, checkpoint: null}\n" + NODE,
        ["{f}: nodes: key given twice (lines 1 and 3); YAML would keep only the last, so remove one"],
    ),
    "scenario_without_value": (  # was read as null = disabled (F15)
        "benchmark:\n  backend: extractive\n  scenarios:\n    Offline:\n    Server: {target_qps: 5}\n" + NODE,
        ["{f}: benchmark.scenarios.Offline: empty; write {{}} to enable it with defaults or false to disable it"],
    ),
    "engine_arg_the_backend_refuses": (  # the harness refused it on the node, after the run had started (F13)
        "benchmark: {backend: replay, checkpoint: null, engine: {max_num_seqs: 8}}\n" + NODE,
        ["{f}: benchmark.engine: replay backend takes no --engine-arg (got ['max_num_seqs'])"],
    ),
    "duckdb_path_is_a_folder": (  # ingest failed after the benchmark had run (F14)
        "storage: {duckdb_path: /}\n" + NODE,
        ["{f}: storage.duckdb_path: / is a folder; give a DuckDB file such as results/mlperf.duckdb"],
    ),
    "k8s_bad_namespace": (
        "nodes: [{name: k, runner: kubernetes, namespace: ML_Perf, image: reg/img:1}]\n",
        ["{f}: nodes[0].namespace: must be a Kubernetes name (lower-case letters, digits, '-'), got 'ML_Perf'"],
    ),
    "k8s_missing_image": ("nodes: [{name: k, runner: kubernetes}]\n", ["{f}: nodes[0].image: is required"]),
    "k8s_bad_memory": (
        "nodes: [{name: k, runner: kubernetes, image: i, memory_request: lots}]\n",
        ["{f}: nodes[0].memory_request: must be a Kubernetes quantity such as 8, 500m or 64Gi, got 'lots'"],
    ),
    "negative_gpus": (
        "nodes: [{name: s, runner: ssh, host: h, gpus: -1}]\n",
        ["{f}: nodes[0].gpus: must be an integer >= 0, got -1"],
    ),
    "passphrase_in_file": (
        "nodes: [{name: s, runner: ssh, host: h, key_passphrase_env: 'hunter2!'}]\n",
        [
            "{f}: nodes[0].key_passphrase_env: must be an environment variable NAME (the secret stays in the "
            "environment), got 'hunter2!'"
        ],
    ),
    "shell_in_host": (
        "nodes: [{name: s, runner: ssh, host: 'h; rm -rf /'}]\n",
        ["{f}: nodes[0].host: must be a host name or IP address, got 'h; rm -rf /'"],
    ),
    "vllm_without_checkpoint": (
        "benchmark: {backend: vllm, checkpoint: null}\n" + NODE,
        ["{f}: benchmark.checkpoint: is required for the vllm backend"],
    ),
    "zero_max_samples": ("dataset: {max_samples: 0}\n" + NODE, ["{f}: dataset.max_samples: must be a positive integer, got 0"]),
    "nodes_not_a_list": ("nodes: {name: a, runner: local}\n", ["{f}: nodes: must be a list, got a mapping"]),
    "accuracy_not_bool": ("benchmark: {accuracy: maybe}\n" + NODE, ["{f}: benchmark.accuracy: must be true or false, got 'maybe'"]),
    "misspelt_toleration_key": (
        "nodes: [{name: k, runner: kubernetes, image: i, tolerations: [{key: a, operatr: Exists}]}]\n",
        ["{f}: nodes[0].tolerations[0].operatr: unknown key; did you mean 'operator'?"],
    ),
    "names_collide_as_resource_keys": (
        "nodes: [{name: gpu-1, runner: local}, {name: gpu_1, runner: local}]\n",
        ["{f}: nodes[1].name: 'gpu_1' and 'gpu-1' differ only in '.'/'-'/'_'; rename one"],
    ),
    "forward_env_with_a_value": (
        "nodes: [{name: s, runner: ssh, host: h, forward_env: [HF_TOKEN, 'WANDB_KEY=wb-s3cret']}]\n",
        [
            "{f}: nodes[0].forward_env[1]: must be an environment variable NAME such as 'WANDB_KEY', not NAME=VALUE: "
            "the value stays in the orchestrator's environment (value not shown)"
        ],
    ),
    "forward_env_bad_name": (
        "nodes: [{name: s, runner: ssh, host: h, forward_env: [hf-token]}]\n",
        [
            "{f}: nodes[0].forward_env[0]: must be an environment variable NAME (letters, digits and '_'), "
            "got 'hf-token'"
        ],
    ),
    "forward_env_not_a_list": (
        "nodes: [{name: s, runner: ssh, host: h, forward_env: HF_TOKEN}]\n",
        ["{f}: nodes[0].forward_env: must be a list, got a string"],
    ),
    "forward_env_number": (
        "nodes: [{name: s, runner: ssh, host: h, forward_env: [42]}]\n",
        ["{f}: nodes[0].forward_env[0]: must be an environment variable name (a string), got a number"],
    ),
    "forward_env_twice": (
        "nodes: [{name: s, runner: ssh, host: h, forward_env: [HF_TOKEN, A, HF_TOKEN]}]\n",
        ["{f}: nodes[0].forward_env[2]: 'HF_TOKEN' is listed twice"],
    ),
    "reconnect_timeout_zero": (
        "nodes: [{name: s, runner: ssh, host: h, reconnect_timeout_s: 0}]\n",
        ["{f}: nodes[0].reconnect_timeout_s: must be a number > 0, got 0"],
    ),
    "backoff_longer_than_timeout": (
        "nodes: [{name: s, runner: ssh, host: h, reconnect_timeout_s: 20, reconnect_backoff_max_s: 90}]\n",
        ["{f}: nodes[0].reconnect_backoff_max_s: 90 s is longer than reconnect_timeout_s (20 s)"],
    ),
    "cancel_grace_not_a_number": (
        "nodes: [{name: s, runner: ssh, host: h, cancel_grace_s: soon}]\n",
        ["{f}: nodes[0].cancel_grace_s: must be a number > 0, got 'soon'"],
    ),
    "misspelt_reconnect_key": (
        "nodes: [{name: s, runner: ssh, host: h, reconect_timeout_s: 60}]\n",
        ["{f}: nodes[0].reconect_timeout_s: unknown key; did you mean 'reconnect_timeout_s'?"],
    ),
    "k8s_exclusive_node_not_bool": (
        "nodes: [{name: k, runner: kubernetes, image: i, exclusive_node: sometimes}]\n",
        ["{f}: nodes[0].exclusive_node: must be true or false, got 'sometimes'"],
    ),
    "k8s_collect_window_zero": (
        "nodes: [{name: k, runner: kubernetes, image: i, collect_window_s: 0}]\n",
        ["{f}: nodes[0].collect_window_s: must be a positive integer, got 0"],
    ),
    "k8s_stage_timeout_fraction": (
        "nodes: [{name: k, runner: kubernetes, image: i, stage_timeout_s: 2.5}]\n",
        ["{f}: nodes[0].stage_timeout_s: must be a positive integer, got 2.5"],
    ),
    "ssh_field_on_a_local_node": (
        "nodes: [{name: a, runner: local, cancel_grace_s: 3}]\n",
        ["{f}: nodes[0].cancel_grace_s: unknown key (allowed: name, gpus, runner, workdir, python)"],
    ),
    "two_problems_two_lines": (
        "dataset: {max_samples: -3}\nnodes:\n  - {name: b, runner: ssh, host: h, port: 0}\n",
        [
            "{f}: dataset.max_samples: must be a positive integer, got -3",
            "{f}: nodes[0].port: must be an integer between 1 and 65535, got 0",
        ],
    ),
}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(DATASET_ENV, raising=False)
    monkeypatch.delenv("MLPERF_DAGSTER_CONFIG", raising=False)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_config_gives_one_line_per_problem(tmp_path, name):
    text, expected = MALFORMED[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [e.format(f=path) for e in expected]
    assert all("\n" not in p for p in info.value.problems)
    assert "s3cret" not in str(info.value)  # a secret typed into the file is never echoed back


def test_at_least_fifteen_malformed_cases():
    assert len(MALFORMED) >= 15


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: no such config file"]


def test_shipped_configs_load():
    default = load_config(PROJECT / "config" / "config.yaml")
    assert default.node_names == ["local"]
    assert default.benchmark.backend == "extractive" and default.benchmark.is_baseline
    assert default.scenario_names == ["Offline", "Server", "SingleStream"]
    assert default.tokenizer == "byte"
    # relative paths resolve against the config file's folder: config/../results
    assert default.storage.duckdb_path == PROJECT / "results" / "mlperf.duckdb"

    fleet = load_config(PROJECT / "config" / "examples" / "ssh-fleet.yaml")
    assert [type(n) for n in fleet.nodes] == [SSHNode, SSHNode]
    assert fleet.nodes[0].port == 22 and fleet.nodes[0].key_passphrase_env == "MLPERF_SSH_KEY_PASSPHRASE"
    assert fleet.benchmark.backend == "vllm" and fleet.tokenizer == "meta-llama/Llama-3.1-8B-Instruct"
    assert fleet.benchmark.scenarios.Offline.min_duration_ms == 600000
    jw2, jw3 = fleet.nodes
    assert jw2.forward_env == ["HF_TOKEN"] and jw3.forward_env == ["HF_TOKEN"]
    assert (jw2.reconnect_timeout_s, jw2.reconnect_backoff_max_s, jw2.cancel_grace_s) == (3600, 60, 30)
    assert (jw3.reconnect_timeout_s, jw3.reconnect_backoff_max_s, jw3.cancel_grace_s) == (1800, 30, 10)  # defaults

    k8s = load_config(PROJECT / "config" / "examples" / "kubernetes.yaml")
    assert {n.runner for n in k8s.nodes} == {"kubernetes"}
    assert k8s.nodes[0].gpus == 2 and k8s.nodes[0].tolerations[0].operator == "Exists"
    a100, h100 = k8s.nodes
    assert (a100.exclusive_node, a100.stage_timeout_s, a100.collect_window_s) == (True, 1800, 3600)
    assert (h100.exclusive_node, h100.stage_timeout_s, h100.collect_window_s) == (False, 3600, 3600)  # defaults


def test_config_chosen_by_environment(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("nodes: [{name: envnode, runner: local, workdir: w}]\n")
    monkeypatch.setenv("MLPERF_DAGSTER_CONFIG", str(path))
    config = load_config()
    assert config.node_names == ["envnode"]
    assert isinstance(config.nodes[0], LocalNode) and config.nodes[0].workdir == tmp_path / "w"


def test_dataset_override_detects_format(tmp_path, stories_dir, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(NODE)
    monkeypatch.setenv(DATASET_ENV, str(stories_dir))
    config = load_config(path)
    assert (config.dataset.source, config.dataset.path) == ("stories", stories_dir.resolve())
    assert config.dataset_overridden_by == f"{DATASET_ENV}={stories_dir}"

    jsonl = tmp_path / "cnn.jsonl"
    jsonl.write_text(json.dumps({"id": "1", "article": "a", "highlights": "h"}) + "\n")
    mlc = tmp_path / "cnn_eval.json"
    mlc.write_text(json.dumps([{"input": "a", "output": "h"}]))
    prepared = tmp_path / "prepared.json"
    prepared.write_text(json.dumps({"format": "mlperf-dagster-cnndm/1", "samples": []}))
    assert detect_dataset_source(jsonl) == ("jsonl", jsonl)
    assert detect_dataset_source(mlc) == ("mlcommons-json", mlc)
    assert detect_dataset_source(tmp_path) == ("mlcommons-json", mlc)  # folder holding cnn_eval.json
    assert detect_dataset_source(prepared) == ("local", prepared)

    monkeypatch.setenv(DATASET_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{DATASET_ENV}={tmp_path / 'missing'}: {tmp_path / 'missing'} does not exist"]


def test_runner_resource_keys_are_identifiers():
    assert runner_resource_key("k8s-a100.eu") == "runner_k8s_a100_eu"
    assert runner_resource_key("local") == "runner_local"


def test_parse_config_keeps_secrets_out(tmp_path):
    config = parse_config(  # a real folder: storage paths must be creatable (a non-root user cannot write in /)
        "nodes: [{name: s, runner: ssh, host: 10.0.0.2, key_passphrase_env: MY_PASS}]\n", tmp_path / "c.yaml"
    )
    dumped = config.model_dump_json()
    assert "MY_PASS" in dumped  # the variable's name is configuration ...
    assert "source_path" not in dumped  # ... and only the file's own fields are dumped


def test_validate_config_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MALFORMED["two_problems_two_lines"][0])
    cli = [sys.executable, "-m", "mlperf_assets.cli", "validate-config"]
    proc = subprocess.run([*cli, str(bad)], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{bad}: dataset.max_samples: must be a positive integer, got -3",
        f"{bad}: nodes[0].port: must be an integer between 1 and 65535, got 0",
    ]
    assert "Traceback" not in proc.stderr
    ok = subprocess.run([*cli, "config/examples/ssh-fleet.yaml"], capture_output=True, text=True, cwd=PROJECT)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == "config/examples/ssh-fleet.yaml: OK"
    assert "jw2 (ssh), jw3 (ssh)" in ok.stdout


# ------------------------------------------------------------------------------------ parallelism (issue 12)
def _parallel_config(tmp_path, parallelism: str | None, *, gpus="2", backend: str = "vllm", engine: str = "{}",
                     model: str = "llama3.1-8b", runner: str = "ssh, host: h"):
    line = f", parallelism: {parallelism}" if parallelism else ""
    return parse_config(
        f"benchmark: {{model: {model}, backend: {backend}, engine: {engine}{line}}}\n"
        f"nodes: [{{name: box, runner: {runner}, gpus: {gpus}}}]\n", tmp_path / "c.yaml")


def _argv_of(config, tmp_path) -> list[str]:
    from mlperf_assets.plan import build_spec

    spec = build_spec(config, run_id="r1", node="box", scenario="Offline", mode="performance", dataset=tmp_path)
    return spec.harness_args("/out")


def test_parallelism_resolution_and_the_harness_argv(tmp_path, monkeypatch):
    from mlperf_assets.plan import Parallelism, resolve_parallelism
    from mlperf_assets.harness import benchmarks

    def engine_args(argv):
        return [argv[i + 1] for i, a in enumerate(argv) if a == "--engine-arg"]

    auto = _parallel_config(tmp_path, None)
    assert auto.benchmark.parallelism == "auto"  # the default
    # auto: llama3.1-8b fits one GPU -> one replica per GPU
    assert resolve_parallelism(auto.benchmark, auto.nodes[0]) == Parallelism("data", 2, 1)
    argv = _argv_of(auto, tmp_path)
    assert argv[argv.index("--data-parallel-size") + 1] == "2" and "tensor_parallel_size=1" in engine_args(argv)
    data = _parallel_config(tmp_path, "data")
    assert _argv_of(data, tmp_path) == argv
    tensor = _parallel_config(tmp_path, "tensor")
    assert resolve_parallelism(tensor.benchmark, tensor.nodes[0]) == Parallelism("tensor", 1, 2)
    argv = _argv_of(tensor, tmp_path)
    assert "--data-parallel-size" not in argv and "tensor_parallel_size=2" in engine_args(argv)
    # auto for a model that does not fit one GPU: tensor parallelism
    monkeypatch.setitem(benchmarks.BENCHMARKS, "llama3.1-8b",
                        benchmarks.BENCHMARKS["llama3.1-8b"].__class__(**{**benchmarks.BENCHMARKS["llama3.1-8b"]
                                                                           .__dict__, "fits_one_gpu": False}))
    assert resolve_parallelism(auto.benchmark, auto.nodes[0]) == Parallelism("tensor", 1, 2)
    monkeypatch.undo()
    # data with the engine's tensor_parallel_size: gpus / tp replicas of tp GPUs
    four = _parallel_config(tmp_path, "data", gpus="4", engine="{tensor_parallel_size: 2}")
    argv = _argv_of(four, tmp_path)
    assert argv[argv.index("--data-parallel-size") + 1] == "2" and "tensor_parallel_size=2" in engine_args(argv)
    same = _parallel_config(tmp_path, "auto", engine="{tensor_parallel_size: 2}")  # tp = gpus: one engine
    assert resolve_parallelism(same.benchmark, same.nodes[0]) == Parallelism("tensor", 1, 2)
    # docker device ids count; docker "all" is not known before the run: nothing added
    ids = _parallel_config(tmp_path, "data", gpus="['0', '1']", runner="docker, image: x")
    assert resolve_parallelism(ids.benchmark, ids.nodes[0]) == Parallelism("data", 2, 1)
    every = _parallel_config(tmp_path, "data", gpus="all", runner="docker, image: x")
    assert "--data-parallel-size" not in _argv_of(every, tmp_path)
    # 0 or 1 GPU: nothing added
    for gpus in ("0", "1"):
        argv = _argv_of(_parallel_config(tmp_path, "tensor", gpus=gpus), tmp_path)
        assert "--data-parallel-size" not in argv and not any("tensor_parallel" in a for a in argv)


def test_parallelism_of_backends_without_gpus(tmp_path):
    from mlperf_assets.plan import Parallelism, resolve_parallelism

    for backend in ("extractive", "replay", "sim"):  # baselines: only an explicit `data` replicates them
        for choice in ("auto", "tensor"):
            c = _parallel_config(tmp_path, choice, backend=backend)
            assert resolve_parallelism(c.benchmark, c.nodes[0]) == Parallelism("none")
            assert "--data-parallel-size" not in _argv_of(c, tmp_path)
        c = _parallel_config(tmp_path, "data", backend=backend)
        argv = _argv_of(c, tmp_path)
        assert argv[argv.index("--data-parallel-size") + 1] == "2" and "--engine-arg" not in argv
    openai = parse_config("benchmark: {backend: openai, checkpoint: m, parallelism: data}\n"
                          "nodes: [{name: box, runner: ssh, host: h, gpus: 2}]\n", tmp_path / "c.yaml")
    assert resolve_parallelism(openai.benchmark, openai.nodes[0]) == Parallelism("none")  # the server's GPUs


def test_parallelism_refusals_name_the_node(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("benchmark: {backend: vllm, engine: {tensor_parallel_size: 2}, parallelism: data}\n"
                    "nodes: [{name: gpu3, runner: ssh, host: h, gpus: 3}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: nodes[0].gpus: node 'gpu3' has 3 GPUs, not a multiple of benchmark.engine "
                                   "tensor_parallel_size 2 (parallelism data: replicas of 2 GPUs each)"]
    path.write_text("benchmark: {backend: vllm, engine: {tensor_parallel_size: 2}, parallelism: tensor}\n"
                    "nodes: [{name: gpu4, runner: ssh, host: h, gpus: 4}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: nodes[0].gpus: node 'gpu4' has 4 GPUs but benchmark.engine sets "
                                   "tensor_parallel_size=2 (parallelism tensor: one engine over all 4); make them "
                                   "equal or remove it"]
    path.write_text("benchmark: {parallelism: pipeline}\nnodes: [{name: a, runner: local}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1 and "benchmark.parallelism" in info.value.problems[0]
    assert "auto, data, tensor" in info.value.problems[0]
