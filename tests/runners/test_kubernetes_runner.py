"""KubernetesRunner: Job manifests validated against the ``kubernetes`` client's models, and the runner's whole
call path (dagster-k8s client → API → exec) driven offline.

No API server can run here (platform facts), so the second part stands in for exactly that: a fake BatchV1Api /
CoreV1Api pair plays the API server and kubelet, running each container's *real* rendered command on this machine
(the pod's volume is a temporary folder), and ``exec`` runs ``sh -c`` locally. Everything else is real: the
manifest, dagster-k8s's client, dataset staging through the init container, the harness, polling, tar collection.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes.client import ApiClient, V1Job

from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.run_folder import SUCCEEDED
from mlperf_assets.plan import parallelism
from resources.runners.kubernetes import (
    GPU_RESOURCE,
    HARNESS_CONTAINER,
    STAGE_CONTAINER,
    KubernetesRunner,
    KubernetesRunnerError,
    PodSettings,
    build_job_manifest,
    job_name,
    label_value,
    manifest_to_model,
    manifest_yaml,
)

PROJECT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "mlperf-dagster")  # the installed console script
LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SHA = "ab" * 32


def spec_for(node: str = "k8s-a100", run_id: str = "run-1", scenario: str = "Offline", **kw) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        node=node,
        scenario=scenario,
        mode=kw.pop("mode", "performance"),
        benchmark="llama3.1-8b",
        backend=kw.pop("backend", "vllm"),
        dataset_path=kw.pop("dataset_path", "/data/cnn_eval_prepared.json"),
        engine_args=kw.pop("engine_args", {"model": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bfloat16"}),
        settings=kw.pop("settings", {"min_duration_ms": 600000, "target_qps": 50}),
        **kw,
    )


NODE_CONFIGS = {
    "a100-pvc-secret": PodSettings(
        node="k8s-a100", namespace="mlperf", image="registry.example.com/mlperf:0.1", gpus=2,
        node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        tolerations=({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},),
        pvc="mlperf-results", service_account="mlperf-runner", hf_token_secret="hf-token", cpu_request="16",
        memory_request="128Gi", active_deadline_seconds=43200,
    ),
    "h100-8gpu-emptydir": PodSettings(node="k8s-h100", namespace="bench", image="img:1", gpus=8, hf_token_secret="hf",
                                      hf_token_secret_key="token"),
    "cpu-only-baseline": PodSettings(node="cpu.pool_1", namespace="default", image="img:1", gpus=0,
                                     exclusive_node=False, ttl_seconds_after_finished=None),
}  # fmt: skip


def planned(spec: RunSpec, gpus: int) -> RunSpec:
    """``spec`` with the layout the plan gives it on a node of ``gpus`` GPUs (parallelism tensor: one engine)."""
    layout = parallelism(spec.node, gpus, spec.backend, spec.engine_args, "tensor", fits_one_gpu=True)
    return replace(spec, engine_args=layout.engine_args(spec.engine_args), data_parallel_size=layout.data_parallel_size)


def build(settings: PodSettings, spec: RunSpec | None = None) -> dict:
    spec = spec or planned(spec_for(node=settings.node, backend="vllm" if settings.gpus else "extractive",
                                    engine_args={"dtype": "bfloat16"} if settings.gpus else {}), settings.gpus)  # fmt: skip
    return build_job_manifest(spec, settings, dataset_name="cnn_eval_prepared.json", dataset_sha256=SHA)


# -------------------------------------------------------------------------------------- manifest checks
@pytest.mark.parametrize("name", sorted(NODE_CONFIGS))
def test_manifest_round_trips_through_the_kubernetes_models(name):
    manifest = build(NODE_CONFIGS[name])
    job = manifest_to_model(manifest)
    assert isinstance(job, V1Job)
    # the client's models drop unknown fields: an identical round trip means every field is a real, typed one
    assert ApiClient().sanitize_for_serialization(job) == manifest
    # the YAML that `render` prints is the same object
    assert yaml.safe_load(manifest_yaml(manifest)) == manifest
    pod = job.spec.template.spec
    assert job.kind == "Job" and job.api_version == "batch/v1"
    assert job.spec.backoff_limit == 0 and pod.restart_policy == "Never"
    assert DNS_LABEL_RE.fullmatch(job.metadata.name) and len(job.metadata.name) <= 63
    assert [c.name for c in pod.init_containers] == [STAGE_CONTAINER]
    assert [c.name for c in pod.containers] == [HARNESS_CONTAINER]


@pytest.mark.parametrize("name", sorted(NODE_CONFIGS))
def test_gpu_requests_equal_limits_and_tensor_parallelism_matches(name):
    settings = NODE_CONFIGS[name]
    manifest = build(settings)
    job = manifest_to_model(manifest)
    container = job.spec.template.spec.containers[0]
    argv = container.command
    if settings.gpus:
        assert container.resources.limits[GPU_RESOURCE] == str(settings.gpus)
        assert container.resources.requests[GPU_RESOURCE] == str(settings.gpus)
        assert f"tensor_parallel_size={settings.gpus}" in argv
        tolerations = [t.key for t in job.spec.template.spec.tolerations]
        assert GPU_RESOURCE in tolerations
    else:
        assert GPU_RESOURCE not in (container.resources.limits or {}) and GPU_RESOURCE not in (container.resources.requests or {})
        assert not [a for a in argv if a.startswith("tensor_parallel_size")]
    if settings.cpu_request:
        assert container.resources.requests["cpu"] == settings.cpu_request
        assert container.resources.requests["memory"] == settings.memory_request
    assert job.spec.active_deadline_seconds == settings.active_deadline_seconds


def test_conflicting_tensor_parallel_size_is_refused():
    settings = NODE_CONFIGS["a100-pvc-secret"]
    with pytest.raises(ValueError, match="tensor_parallel_size=4 but node k8s-a100 requests 2 GPU"):
        build(settings, spec_for(engine_args={"tensor_parallel_size": 4}))
    ok = build(settings, spec_for(engine_args={"tensor_parallel_size": 2}))
    assert ok["spec"]["template"]["spec"]["containers"][0]["command"].count("tensor_parallel_size=2") == 1


def test_anti_affinity_spreads_benchmark_pods_across_machines():
    for name, settings in NODE_CONFIGS.items():
        job = manifest_to_model(build(settings))
        anti = job.spec.template.spec.affinity.pod_anti_affinity
        pod_labels = job.spec.template.metadata.labels
        if settings.exclusive_node:
            (term,) = anti.required_during_scheduling_ignored_during_execution
        else:
            (weighted,) = anti.preferred_during_scheduling_ignored_during_execution
            term = weighted.pod_affinity_term
        assert term.topology_key == "kubernetes.io/hostname"
        # the selector matches every benchmark pod, this one included (so two never share a node)
        assert term.label_selector.match_labels.items() <= pod_labels.items()


def test_node_selector_tolerations_volumes_and_service_account():
    job = manifest_to_model(build(NODE_CONFIGS["a100-pvc-secret"]))
    pod = job.spec.template.spec
    assert pod.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {(t.key, t.operator, t.value, t.effect) for t in pod.tolerations} >= {("dedicated", "Equal", "gpu", "NoSchedule")}
    assert pod.service_account_name == "mlperf-runner"
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["runs"].persistent_volume_claim.claim_name == "mlperf-results"
    assert volumes["dshm"].empty_dir.medium == "Memory"
    mounts = {m.name: m.mount_path for m in pod.containers[0].volume_mounts}
    assert mounts == {"runs": "/results", "dshm": "/dev/shm"}
    empty = manifest_to_model(build(NODE_CONFIGS["h100-8gpu-emptydir"]))
    runs = next(v for v in empty.spec.template.spec.volumes if v.name == "runs")
    assert runs.persistent_volume_claim is None and runs.empty_dir is not None


def test_hf_token_is_a_secret_reference_only(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_THIS_MUST_NOT_LEAK")
    for name, settings in NODE_CONFIGS.items():
        manifest = build(settings)
        text = manifest_yaml(manifest)
        assert "hf_THIS_MUST_NOT_LEAK" not in text
        env = {e.name: e for e in manifest_to_model(manifest).spec.template.spec.containers[0].env}
        if settings.hf_token_secret:
            ref = env["HF_TOKEN"].value_from.secret_key_ref
            assert (ref.name, ref.key) == (settings.hf_token_secret, settings.hf_token_secret_key)
            assert env["HF_TOKEN"].value is None
        else:
            assert "HF_TOKEN" not in env


def test_labels_are_valid_and_distinct_for_awkward_values():
    awkward = [
        ("Run_2026-11-28T02:00:00+00:00/partition|Offline", "gpu node #1"),
        ("x" * 120, "k8s-a100"),
        ("-leading-and-trailing-", "n"),
    ]
    seen = set()
    for run_id_raw, node in awkward:
        run_id = re.sub(r"[^A-Za-z0-9._-]", "-", run_id_raw).lstrip("-.") or "r"  # RunSpec's own rule for run ids
        settings = NODE_CONFIGS["a100-pvc-secret"]
        manifest = build(settings, planned(spec_for(run_id=run_id, node=node), settings.gpus))
        labels = manifest["metadata"]["labels"]
        for key, value in labels.items():
            assert len(value) <= 63 and LABEL_VALUE_RE.fullmatch(value), (key, value)
        assert manifest["metadata"]["annotations"]["mlperf-dagster/run-id"] == run_id  # raw value kept
        assert manifest["metadata"]["annotations"]["mlperf-dagster/node"] == node
        assert labels["mlperf-dagster/scenario"] == "Offline"
        seen.add(labels["mlperf-dagster/run-id"])
        name = manifest["metadata"]["name"]
        assert DNS_LABEL_RE.fullmatch(name) and len(name) <= 63
    assert len(seen) == len(awkward)
    assert label_value("a" * 70) != label_value("a" * 71)
    assert label_value("Offline") == "Offline"
    assert job_name("r1", "performance") != job_name("r1", "accuracy")


# ----------------------------------------------------------------------------------------------- render
def test_render_k8s_prints_the_example_nodes_job():
    example = PROJECT / "config" / "examples" / "kubernetes.yaml"
    from mlperf_assets.config import load_config

    config = load_config(example, use_env_dataset=False)
    node = next(n for n in config.nodes if n.runner == "kubernetes")
    out = subprocess.run(
        [CLI, "render", "--config", str(example), "--node", node.name,
         "--scenario", config.scenario_names[0], "--mode", "accuracy", "--run-id", "nightly-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    manifest = yaml.safe_load(out.stdout)
    job = manifest_to_model(manifest)
    assert ApiClient().sanitize_for_serialization(job) == manifest
    container = job.spec.template.spec.containers[0]
    assert container.image == node.image
    assert container.resources.limits[GPU_RESOURCE] == str(node.gpus)
    assert job.metadata.namespace == node.namespace
    assert job.metadata.labels["mlperf-dagster/mode"] == "accuracy"
    assert "--mode" in container.command and container.command[container.command.index("--mode") + 1] == "accuracy"
    assert job.metadata.annotations["mlperf-dagster/run-id"] == "nightly-1"


def test_render_k8s_refuses_non_kubernetes_and_unknown_nodes(tmp_path):
    from mlperf_assets.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("nodes: [{name: local, runner: local}]\nbenchmark: {backend: extractive, checkpoint: null}\n")
    err = subprocess.run([CLI, "render", "--runner", "kubernetes", "--config", str(config),
                          "--node", "local", "--scenario", "Offline"], capture_output=True, text=True)  # fmt: skip
    assert err.returncode == 2 and "has runner: local, not kubernetes" in err.stderr
    assert "Traceback" not in err.stderr
    assert main(["render", "--config", str(config), "--node", "nope", "--scenario", "Offline"]) == 2


# ------------------------------------------------------- the runner's call path, against a stand-in API server
class FakeCluster:
    """Plays the API server and the kubelet for BatchV1Api/CoreV1Api calls, running containers locally."""

    def __init__(self, python: str) -> None:
        self.jobs: dict[str, V1Job] = {}
        self.pods: dict[str, dict] = {}
        self.created: list[str] = []
        self.python = python
        self._lock = threading.Lock()

    # BatchV1Api
    def create_namespaced_job(self, body: V1Job, namespace: str, **_):
        from kubernetes.client.rest import ApiException

        if body.metadata.name in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.jobs[body.metadata.name] = body
        self.created.append(body.metadata.name)
        threading.Thread(target=self._kubelet, args=(body,), daemon=True).start()

    def read_namespaced_job_status(self, name: str, namespace: str, **_):
        from kubernetes.client import V1JobStatus
        from kubernetes.client.rest import ApiException

        if name not in self.jobs:
            raise ApiException(status=404, reason="NotFound")
        pod = self.pods.get(name)
        phase = pod["phase"] if pod else None
        status = V1JobStatus(succeeded=1 if phase == "Succeeded" else None, failed=1 if phase == "Failed" else None)
        return V1Job(metadata=self.jobs[name].metadata, status=status)

    def list_namespaced_job(self, namespace: str, label_selector: str = "", **_):
        return SimpleNamespace(items=[j for j in self.jobs.values() if j.metadata.namespace == namespace])

    def delete_namespaced_job(self, name: str, namespace: str, **_):
        self.jobs.pop(name, None)
        pod = self.pods.get(name)
        if pod and pod.get("proc") and pod["proc"].poll() is None:
            os.killpg(pod["proc"].pid, 9)

    # CoreV1Api
    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **_):
        from kubernetes.client import (V1ContainerState, V1ContainerStateRunning, V1ContainerStateTerminated,
                                       V1ContainerStatus, V1ObjectMeta, V1Pod, V1PodStatus)  # fmt: skip

        job = label_selector.removeprefix("job-name=")
        pod = self.pods.get(job)
        if pod is None:
            return SimpleNamespace(items=[])

        def status(name: str, state: str, code: int | None) -> V1ContainerStatus:
            s = V1ContainerState(
                running=V1ContainerStateRunning() if state == "running" else None,
                terminated=V1ContainerStateTerminated(exit_code=code, reason="Completed") if state == "done" else None,
            )
            return V1ContainerStatus(name=name, state=s, image="img", image_id="", ready=state == "running", restart_count=0)

        v1 = V1Pod(
            metadata=V1ObjectMeta(name=f"{job}-abcde", creation_timestamp=pod["created"]),
            status=V1PodStatus(
                phase=pod["phase"],
                init_container_statuses=[status(STAGE_CONTAINER, pod["init"], pod.get("init_code"))],
                container_statuses=[status(HARNESS_CONTAINER, pod["main"], pod.get("main_code"))] if pod["main"] != "none" else [],
            ),
        )
        return SimpleNamespace(items=[v1])

    def delete_namespaced_pod(self, name: str, namespace: str, **_):
        pass

    def _kubelet(self, job: V1Job) -> None:
        name = job.metadata.name
        pod = {"phase": "Pending", "init": "running", "main": "none", "created": datetime.now(timezone.utc)}
        self.pods[name] = pod
        spec = job.spec.template.spec
        init = subprocess.run(spec.init_containers[0].command, capture_output=True)
        pod.update(init="done", init_code=init.returncode)
        if init.returncode:
            pod["phase"] = "Failed"
            return
        proc = subprocess.Popen(spec.containers[0].command, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        pod.update(phase="Running", main="running", proc=proc)
        code = proc.wait()
        pod.update(main="done", main_code=code, phase="Succeeded" if code == 0 else "Failed")


class LocalExecRunner(KubernetesRunner):
    """The real runner, with ``exec`` into a container replaced by running ``sh -c`` on this machine."""

    def exec(self, pod, container, command, *, stdin=None, timeout_s=300):
        self.__dict__.setdefault("_exec_log", []).append((container, command, len(stdin or b"")))
        out = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=timeout_s)
        return out.returncode, out.stdout, out.stderr.decode(errors="replace")


@pytest.fixture
def dataset(tmp_path_factory: pytest.TempPathFactory, stories_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("data") / "cnn_stories.json"
    subprocess.run(
        [sys.executable, "-m", "mlperf_assets.harness", "prepare-dataset", "--source", "stories", "--path",
         str(stories_dir), "--out", str(out), "--tokenizer", "byte"],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def _runner(tmp_path: Path) -> tuple[LocalExecRunner, FakeCluster]:
    from dagster_k8s.client import DagsterKubernetesClient

    cluster = FakeCluster(sys.executable)
    runner = LocalExecRunner(node="k8s-cpu", namespace="mlperf", image="img:1", gpus=0, workdir=str(tmp_path / "pod"),
                             python=sys.executable, collect_window_s=60, poll_interval_s=0.2, stage_timeout_s=30)  # fmt: skip
    runner._client = DagsterKubernetesClient.production_client(batch_api_override=cluster, core_api_override=cluster)
    return runner, cluster


@pytest.mark.timeout(180)
def test_runner_stages_runs_polls_and_collects_through_the_dagster_k8s_client(tmp_path, dataset):
    runner, cluster = _runner(tmp_path)
    spec = RunSpec(run_id="k8s-1", node="k8s-cpu", scenario="Offline", mode="performance", benchmark="llama3.1-8b",
                   backend="extractive", dataset_path=str(dataset), settings={"min_duration_ms": 300, "min_query_count": 20},
                   progress_interval_s=0.2)  # fmt: skip
    handle = runner.start(spec)
    assert cluster.created == [handle.extra["job"]]
    states = []
    progress = runner.wait(handle, lambda p: states.append((p.state, p.message)))
    assert progress.state == SUCCEEDED, (states[-3:], runner.log_tail(handle))
    assert any("pending" in (m or "") for _, m in states)  # it waited for the pod while staging
    staged = tmp_path / "pod" / "_datasets" / dataset.name
    assert staged.read_bytes() == dataset.read_bytes()  # streamed in through the init container
    assert [c for c, _, n in runner._exec_log if n] == [STAGE_CONTAINER]

    again = runner.start(spec)  # an orchestrator restart: the Job exists, so no second Job
    assert again.extra.get("reattached") is True and cluster.created == [handle.extra["job"]]

    dest = runner.collect(handle, tmp_path / "artifacts" / "k8s-1")
    manifest = json.loads((dest / "run_manifest.json").read_text())
    assert manifest["node"] == "k8s-cpu" and manifest["exit_status"] == "completed"
    assert (dest / "mlperf_log_summary.txt").exists() and (dest / "exit_code").read_text().strip() == "0"
    # after collection the pod's container exits with the harness's code, so the Job succeeds
    deadline = time.monotonic() + 20
    while cluster.pods[handle.extra["job"]]["phase"] == "Running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.pods[handle.extra["job"]]["phase"] == "Succeeded"
    assert runner.poll(handle).state == SUCCEEDED

    # a second run on the same volume does not stream the dataset again (same sha256 already there)
    runner._exec_log.clear()
    h2 = runner.start(RunSpec(**{**json.loads(spec.to_json()), "run_id": "k8s-2", "extra_args": ()}))
    assert runner.wait(h2).state == SUCCEEDED
    assert not [n for _, _, n in runner._exec_log if n]
    runner.collect(h2, tmp_path / "artifacts" / "k8s-2")


def test_api_errors_become_one_line_messages(tmp_path):
    from kubernetes.client.rest import ApiException

    runner, cluster = _runner(tmp_path)

    def forbidden(*a, **k):
        raise ApiException(status=403, reason="Forbidden")

    cluster.read_namespaced_job_status = forbidden
    data = tmp_path / "d.json"
    data.write_text("[]")
    with pytest.raises(KubernetesRunnerError, match=r"node k8s-cpu: reading Job .* failed: 403 Forbidden .*pods/exec"):
        runner.start(spec_for(node="k8s-cpu", backend="extractive", engine_args={}, dataset_path=str(data)))
    missing = KubernetesRunner(node="k", image="i", kubeconfig=str(tmp_path / "no-such-kubeconfig"))
    with pytest.raises(KubernetesRunnerError, match="no Kubernetes credentials"):
        missing.client()


def test_from_node_config_reads_the_config_model(tmp_path):
    from mlperf_assets.config import parse_config
    from mlperf_assets.plan import build_spec
    from resources.runners import build_runner

    text = """
nodes:
  - name: k8s-a100
    runner: kubernetes
    namespace: mlperf
    image: registry/mlperf:0.1
    gpus: 4
    node_selector: {pool: a100}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    pvc: results
    hf_token_secret: hf-token
    cpu_request: "16"
    memory_request: 128Gi
    active_deadline_seconds: 3600
    exclusive_node: false
    stage_timeout_s: 120
    collect_window_s: 300
benchmark: {backend: vllm, checkpoint: meta-llama/Llama-3.1-8B-Instruct}
dataset: {source: huggingface}
"""
    config = parse_config(text, tmp_path / "c.yaml")
    runner = build_runner(config.node("k8s-a100"), config)
    assert isinstance(runner, KubernetesRunner)
    s = runner.pod_settings
    assert (s.namespace, s.image, s.gpus, s.pvc, s.hf_token_secret) == ("mlperf", "registry/mlperf:0.1", 4, "results", "hf-token")
    assert s.tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "value": None, "effect": "NoSchedule",
                              "toleration_seconds": None},)  # fmt: skip
    planned_spec = build_spec(config, run_id="run-1", node="k8s-a100", scenario="Offline", mode="performance",
                              dataset=tmp_path / "absent.json")
    job = manifest_to_model(runner.manifest(planned_spec))
    assert job.spec.template.spec.tolerations[0].key == "nvidia.com/gpu" and len(job.spec.template.spec.tolerations) == 1
    assert job.spec.template.spec.containers[0].resources.limits[GPU_RESOURCE] == "4"
    assert (s.exclusive_node, s.stage_timeout_s, s.collect_window_s) == (False, 120, 300)
    affinity = job.spec.template.spec.affinity.pod_anti_affinity
    assert affinity.required_during_scheduling_ignored_during_execution is None  # preferred only when not exclusive
    assert affinity.preferred_during_scheduling_ignored_during_execution


# ---------------------------------------------------------------------------- the seams (issue 9)
def test_kubernetes_runner_imports_without_paramiko():
    """The Kubernetes runner shares the remote shell helpers through remote_shell.py, not through ssh.py: a machine
    without paramiko can still drive Kubernetes nodes."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'paramiko' or name.startswith('paramiko.'):\n"
        "            raise ImportError('paramiko is blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import resources.runners.kubernetes as k\n"
        "from mlperf_assets.config import KubernetesNode\n"
        "k.KubernetesRunner(KubernetesNode(name='n', runner='kubernetes', image='i'))\n"
        "assert 'paramiko' not in sys.modules and 'resources.runners.ssh' not in sys.modules\n"
        "try:\n"
        "    import resources.runners.ssh\n"
        "except ImportError as exc:\n"
        "    print('ssh blocked:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ssh blocked: paramiko is blocked for this test" in out.stdout  # the block really bit


def test_pod_spec_overrides_merge_into_a_valid_pod_spec(tmp_path):
    from mlperf_assets.config import ConfigError, parse_config
    from mlperf_assets.plan import build_spec

    text = """
nodes:
  - name: k8s-a100
    runner: kubernetes
    image: img:1
    gpus: 2
    tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
    pod_spec_overrides:
      priority_class_name: benchmark-high        # snake_case, as dagster-k8s takes it
      hostIPC: true                              # camelCase, as kubectl takes it
      security_context: {run_as_user: 1000, fs_group: 1000}
      image_pull_secrets: [{name: regcred}]
      tolerations: [{key: spot, operator: Exists, effect: NoExecute, toleration_seconds: 30}]
      node_selector: {zone: eu-1}
benchmark: {backend: vllm, checkpoint: meta-llama/Llama-3.1-8B-Instruct}
"""
    config = parse_config(text, tmp_path / "c.yaml")
    runner = KubernetesRunner(config.node("k8s-a100"))
    manifest = runner.manifest(build_spec(config, run_id="run-1", node="k8s-a100", scenario="Offline",
                                          mode="performance", dataset=tmp_path / "absent.json"))
    job = manifest_to_model(manifest)
    assert ApiClient().sanitize_for_serialization(job) == manifest  # every field is a real V1 field
    pod = job.spec.template.spec
    assert pod.priority_class_name == "benchmark-high" and pod.host_ipc is True
    assert (pod.security_context.run_as_user, pod.security_context.fs_group) == (1000, 1000)
    assert [s.name for s in pod.image_pull_secrets] == ["regcred"]
    # lists are appended to, mappings merged: the generated parts stay
    assert [(t.key, t.toleration_seconds) for t in pod.tolerations] == [
        ("dedicated", None), (GPU_RESOURCE, None), ("spot", 30)
    ]  # fmt: skip
    assert pod.node_selector == {"zone": "eu-1"}
    assert [c.name for c in pod.containers] == [HARNESS_CONTAINER] and pod.restart_policy == "Never"

    bad = text.replace("priority_class_name:", "priorty_class_name:")
    with pytest.raises(ConfigError, match=r"nodes\[0\]\.pod_spec_overrides: priorty_class_name: not a V1PodSpec "
                                          r"field; did you mean 'priority_class_name'\?"):
        parse_config(bad, tmp_path / "c.yaml")
    nested = text.replace("run_as_user:", "run_as_usr:")
    with pytest.raises(ConfigError, match=r"security_context\.run_as_usr: not a V1PodSecurityContext field"):
        parse_config(nested, tmp_path / "c.yaml")


@pytest.mark.slow
def test_a_deleted_job_is_gone_and_api_errors_are_unreachable(tmp_path):
    from kubernetes.client.rest import ApiException

    from resources.runners.base import RunGone, RunHandle, RunUnreachable

    runner, cluster = _runner(tmp_path)
    job = job_name("gone-1", "performance")  # a run whose Job was deleted (or expired) meanwhile
    handle = RunHandle(run_id="gone-1", node="k8s-cpu", run_dir=str(tmp_path / "pod" / "gone-1" / "performance"),
                       scenario="Offline", mode="performance", extra={"job": job, "namespace": "mlperf"})  # fmt: skip
    with pytest.raises(RunGone, match=f"Job {job} no longer exists in mlperf"):
        runner.poll(handle)

    def unavailable(*a, **k):
        raise ApiException(status=503, reason="Service Unavailable")

    cluster.read_namespaced_job_status = unavailable
    with pytest.raises(RunUnreachable, match="503 Service Unavailable") as err:
        runner.poll(handle)
    assert not isinstance(err.value, RunGone)
    assert runner.stop_hint(handle) == f"stop it (kubectl delete job -n mlperf {handle.extra['job']})"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("{containers: 5}", r"containers: must be a list \(list\[V1Container\]\), got 5"),
        ("{termination_grace_period_seconds: abc}", r"termination_grace_period_seconds: must be a whole number, got 'abc'"),
        ("{host_ipc: 'yes'}", r"host_ipc: must be true or false, got 'yes'"),
        ("{security_context: 1000}", r"security_context: must be a mapping of V1PodSecurityContext fields, got 1000"),
        ("{node_selector: [a]}", r"node_selector: must be a mapping \(dict\[str, str\]\), got \['a'\]"),
        ("{restart_policy: Always}", r"restartPolicy: must be Never for a benchmark Job"),
        ("{node_name: a, nodeName: b}", r"nodeName: the same field as 'node_name'; give it once"),
        ("{volumes: [{name: x, empty_dir: {}}, {name: x, empty_dir: {}}]}", r"volumes: x listed twice"),
        ("{tolerations: [{key: a, toleration_seconds: soon}]}", r"tolerations\[0\]\.toleration_seconds: must be a whole"),
    ],
)
def test_pod_spec_overrides_of_the_wrong_type_are_one_config_line(tmp_path, override, message):
    from mlperf_assets.config import ConfigError, parse_config

    text = f"nodes: [{{name: k, runner: kubernetes, image: 'img:1', pod_spec_overrides: {override}}}]\n"
    with pytest.raises(ConfigError, match=r"nodes\[0\]\.pod_spec_overrides: (.* )?" + message) as err:
        parse_config(text, tmp_path / "c.yaml")
    assert "\n" not in str(err.value).strip()


def test_pod_spec_override_reusing_a_generated_name_is_refused_when_rendered(tmp_path):
    from mlperf_assets.config import parse_config
    from mlperf_assets.plan import build_spec

    text = "nodes: [{name: k, runner: kubernetes, image: 'img:1', pod_spec_overrides: {volumes: [{name: dshm, empty_dir: {}}]}}]\n"
    config = parse_config(text, tmp_path / "c.yaml")
    runner = KubernetesRunner(config.node("k"))
    spec = build_spec(config, run_id="r-1", node="k", scenario="Offline", mode="performance", dataset=tmp_path / "d.json")
    with pytest.raises(KubernetesRunnerError, match=r"node k: pod_spec_overrides: volumes: dshm is a name the runner "
                                                     r"already gives its own volumes entry"):
        runner.render(spec)
    # a scalar can no longer replace the harness container, and numbers stay accepted where text is a quantity
    ok = "nodes: [{name: k, runner: kubernetes, image: 'img:1', pod_spec_overrides: {overhead: {cpu: 1}}}]\n"
    manifest = KubernetesRunner(parse_config(ok, tmp_path / "c.yaml").node("k")).manifest(spec)
    assert [c["name"] for c in manifest["spec"]["template"]["spec"]["containers"]] == [HARNESS_CONTAINER]


@pytest.mark.timeout(180)
def test_a_harness_stopped_from_outside_is_a_failure_saying_so_not_cancelled(tmp_path, dataset):
    """Issue 24 G18, Kubernetes side: SIGTERM reaching the harness without the runner's cancel marker (the pod deleted
    or evicted: the pod's sh forwards it) is a failure naming it, not "cancelled"."""
    from mlperf_assets.harness.run_folder import FAILED, RUNNING

    runner, cluster = _runner(tmp_path)
    spec = RunSpec(run_id="k8s-outside", node="k8s-cpu", scenario="Server", mode="performance", benchmark="llama3.1-8b",
                   backend="extractive", dataset_path=str(dataset), progress_interval_s=0.2,
                   settings={"target_qps": 5, "min_duration_ms": 120000})  # fmt: skip
    handle = runner.start(spec)
    try:
        deadline = time.monotonic() + 60
        while (progress := runner.poll(handle)).completed < 1:
            assert progress.state == RUNNING and time.monotonic() < deadline, (progress, runner.log_tail(handle))
            time.sleep(0.2)
        os.killpg(int((Path(handle.run_dir) / "pid").read_text()), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (progress := runner.poll(handle)).state == RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        cluster.delete_namespaced_job(handle.extra["job"], "mlperf")
    assert (progress.state, progress.exit_code) == (FAILED, 143), progress
    assert progress.message.startswith("stopped by SIGTERM from outside the orchestrator (the pod deleted or evicted")
    assert not (Path(handle.run_dir) / "cancel_requested").exists()
