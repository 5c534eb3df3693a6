"""The planner (``mlperf_assets/plan.py``): what each harness process gets, decided in one place.

Parallelism as a table (node GPUs x ``benchmark.parallelism`` x backend -> data and tensor parallel sizes, or the
one-line refusal), the runner's check agreeing with every layout the plan makes, a partition's planned runs (keys,
folders, compliance run ids) and a capacity-search probe's plan (its ledger key, its folder outside every
``<node>/<scenario>/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlperf_assets.config import parse_config
from mlperf_assets.harness.args import RunSpec
from mlperf_assets.plan import (
    PartitionPlan,
    Parallelism,
    check_node_gpus,
    parallelism,
    probe_folder,
    run_folder,
)

# (gpus, parallelism, backend, engine tensor_parallel_size) -> (mode, data_parallel_size, tensor_parallel_size)
LAYOUTS = [
    (0, "auto", "vllm", None, ("none", 1, None)),
    (1, "tensor", "vllm", None, ("none", 1, None)),  # one GPU: the engine as configured
    (None, "data", "vllm", None, ("none", 1, None)),  # docker's "all": not known before the run
    (2, "auto", "vllm", None, ("data", 2, 1)),  # the model fits one GPU: a replica per GPU
    (2, "data", "vllm", None, ("data", 2, 1)),
    (2, "tensor", "vllm", None, ("tensor", 1, 2)),
    (8, "data", "vllm", 2, ("data", 4, 2)),
    (4, "auto", "vllm", 4, ("tensor", 1, 4)),  # tp = gpus: one engine over all of them
    (2, "data", "openai", None, ("none", 1, None)),  # the server owns its GPUs
    (2, "auto", "extractive", None, ("none", 1, None)),  # baselines use no GPU ...
    (2, "tensor", "sim", None, ("none", 1, None)),
    (3, "data", "replay", None, ("data", 3, None)),  # ... but an explicit data replicates them
]


@pytest.mark.parametrize(("gpus", "choice", "backend", "tp", "want"), LAYOUTS)
def test_parallelism_table(gpus, choice, backend, tp, want):
    engine = {} if tp is None else {"tensor_parallel_size": tp}
    assert parallelism("box", gpus, backend, engine, choice, fits_one_gpu=True) == Parallelism(*want)


def test_auto_is_tensor_for_a_model_that_does_not_fit_one_gpu():
    assert parallelism("box", 4, "vllm", {}, "auto", fits_one_gpu=False) == Parallelism("tensor", 1, 4)


@pytest.mark.parametrize(("gpus", "choice", "tp", "message"), [
    (3, "data", 2, "node 'box' has 3 GPUs, not a multiple of benchmark.engine tensor_parallel_size 2"),
    (4, "tensor", 2, "node 'box' has 4 GPUs but benchmark.engine sets tensor_parallel_size=2 (parallelism tensor"),
    (2, "data", 0, "node 'box': benchmark.engine tensor_parallel_size must be a positive integer, got 0"),
    (2, "data", True, "must be a positive integer, got True"),
])  # fmt: skip
def test_impossible_layouts_are_refused_naming_the_node(gpus, choice, tp, message):
    with pytest.raises(ValueError) as info:
        parallelism("box", gpus, "vllm", {"tensor_parallel_size": tp}, choice, fits_one_gpu=True)
    assert message in str(info.value) and "\n" not in str(info.value)


def _spec(backend: str, engine: dict, dp: int = 1) -> RunSpec:
    return RunSpec(run_id="r1", node="box", scenario="Offline", mode="performance", benchmark="llama3.1-8b",
                   backend=backend, dataset_path="/d.json", engine_args=engine, data_parallel_size=dp)


@pytest.mark.parametrize("gpus", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("choice", ["auto", "data", "tensor"])
def test_every_layout_the_plan_makes_passes_the_runners_gpu_check(gpus, choice):
    """A runner that hands the node's GPUs to a pod or container only checks the spec: every vLLM layout the plan
    makes uses them all (before, the runners derived tensor_parallel_size themselves)."""
    layout = parallelism("box", gpus, "vllm", {}, choice, fits_one_gpu=True)
    spec = _spec("vllm", layout.engine_args({"model": "m"}), layout.data_parallel_size)
    check_node_gpus(spec, gpus)
    used = int(spec.engine_args.get("tensor_parallel_size", 1)) * spec.data_parallel_size
    assert used == gpus


def test_the_runners_gpu_check_refuses_what_the_plan_would_not_make():
    with pytest.raises(ValueError, match="tensor_parallel_size=4 but node box requests 2 GPU"):
        check_node_gpus(_spec("vllm", {"tensor_parallel_size": 4}), 2)
    with pytest.raises(ValueError, match="tensor_parallel_size unset .* but node box requests 2 GPU"):
        check_node_gpus(_spec("vllm", {}), 2)
    check_node_gpus(_spec("vllm", {"tensor_parallel_size": 4}), None)  # docker's "all": nothing to check against
    check_node_gpus(_spec("extractive", {}, dp=3), 2)  # a baseline uses no GPU


# ---------------------------------------------------------------------------------------------- planned runs
def _config(tmp_path: Path, benchmark: str):
    checkout = tmp_path / "inference"
    (checkout / "compliance/TEST06").mkdir(parents=True)
    (checkout / "compliance/TEST06/audit.config").write_text("*.*.accuracy_log_sampling_target = 100\n")
    (checkout / "tools/submission/submission_checker").mkdir(parents=True)
    (checkout / "tools/submission/submission_checker/main.py").write_text("")
    text = (f"benchmark: {{backend: extractive, checkpoint: null, scenarios: {{Server: {{target_qps: 5}}}}, "
            f"{benchmark}}}\n"
            "nodes: [{name: box, runner: local}]\n"
            "dataset: {source: huggingface}\n"
            f"mlcommons_inference: {checkout}\n")
    return parse_config(text, tmp_path / "c.yaml")


@pytest.mark.parametrize(("benchmark", "keys", "folders"), [
    ("accuracy: false", ["performance"], ["performance"]),
    ("accuracy: true", ["performance", "accuracy"], ["performance", "accuracy"]),
    ("accuracy: false, compliance: [TEST06]", ["performance", "TEST06"], ["performance", "compliance/TEST06"]),
    ("accuracy: true, compliance: [TEST06]", ["performance", "accuracy", "TEST06"],
     ["performance", "accuracy", "compliance/TEST06"]),
])  # fmt: skip
def test_partition_plan_runs(tmp_path, benchmark, keys, folders):
    config = _config(tmp_path, benchmark)
    plan = PartitionPlan(config, "box", "Server", tmp_path / "d.json")
    runs = plan.runs("r1")
    assert [r.key for r in runs] == keys and [r.folder for r in runs] == folders
    assert plan.ledger_key == "Server"
    for run in runs:
        if run.key == "TEST06":  # its own run id (its folder on the node), a performance run with the audit.config
            assert (run.spec.run_id, run.spec.mode, run.spec.compliance) == ("r1.TEST06", "performance", "TEST06")
            assert "accuracy_log_sampling_target = 100" in run.spec.audit_config
        else:
            assert (run.spec.run_id, run.spec.mode, run.spec.compliance) == ("r1", run.key, None)
        assert run.spec.scenario == "Server" and run.spec.settings["target_qps"] == 5


def test_probe_plan_lives_outside_every_scenario_folder(tmp_path):
    from mlperf_assets.search import ProbePlan

    config = _config(tmp_path, "accuracy: true, compliance: [TEST06]")
    plan = ProbePlan(config, "box", "Interactive", tmp_path / "d.json", run_id="p1", scenario="Server",
                     settings={"target_qps": 7.5}, lg_model_name="llama3_1-8b-interactive")
    root = config.storage.artifact_root
    assert plan.ledger_key == "Interactive-search" and plan.scenario == "Interactive"
    assert plan.new_run_id("dagster-run") == "p1"
    folder = plan.run_folder("p1")
    assert folder == probe_folder(config, "box", "Interactive", "p1") == root / ".search/box/Interactive/p1"
    for scenario in ("Server", "Interactive", "Offline"):
        assert run_folder(config, "box", scenario, "x").parent not in folder.parents
    assert plan.staging_folder("p1").parent == folder.parent
    [run] = plan.runs("p1")  # one performance run, none of the partition's accuracy or compliance runs
    assert (run.key, run.folder) == ("performance", "performance")
    spec = run.spec
    assert (spec.scenario, spec.mode, spec.lg_model_name, dict(spec.settings)) == (
        "Server", "performance", "llama3_1-8b-interactive", {"target_qps": 7.5})


def test_a_record_from_before_the_typed_keys_is_still_read():
    from resources.runners.ledger import ActiveRecord

    spec = json.loads(_spec("extractive", {}).to_json())
    old = {"schema": 2, "node": "box", "scenario": "Server", "run_id": "r1", "dagster_run_id": "d", "started_at": "t",
           "dataset": {}, "runs": {"performance": {"spec": spec}, "compliance/TEST06": {"spec": spec}}}
    assert list(ActiveRecord.from_json(json.dumps(old)).runs) == ["performance", "TEST06"]
