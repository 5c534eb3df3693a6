"""``KubernetesRunner``: one Kubernetes Job per harness run, through dagster-k8s's client.

The Job manifest is built by a pure function (:func:`build_job_manifest`; ``mlperf-dagster render`` prints
it, tests validate it against the ``kubernetes`` client's models). The pod:

- requests and limits ``nvidia.com/gpu`` = the node's ``gpus`` (the plan's vLLM ``tensor_parallel_size`` x replicas
  must match: :func:`mlperf_assets.plan.check_node_gpus`),
  CPU/memory requests, the node selector and tolerations of the GPU pool, and a *required* pod anti-affinity
  on ``kubernetes.io/hostname`` against other benchmark pods, so two runs never share a machine (a second run
  waits for a free GPU node instead of disturbing the first one's measurement);
- mounts the run-folder volume at ``workdir`` (the node's PVC, or an emptyDir), and ``/dev/shm`` in memory;
- gets the HF token from a Secret by reference (``HF_TOKEN`` from ``secretKeyRef``): the manifest holds no secret;
- has an init container that waits for the prepared dataset to be staged into ``<workdir>/_datasets`` (the
  runner streams it in with ``exec`` unless the PVC already holds a copy with the same sha256);
- runs the harness under the exit-code supervisor (``base.wrapped_argv``) in its own process group, then holds the
  container open (up to ``collect_window_s``) so the runner can stream the run folder out with ``exec`` + ``tar``,
  which works for an emptyDir too; the container's exit code is the harness's, so the Job fails when it does;
- ``backoffLimit: 0`` (a retried benchmark would be a second, different run), ``activeDeadlineSeconds`` if set,
  labels with run id, node, scenario and mode (sanitized to label syntax; the raw values are annotations).

Any other pod-spec field comes from the node's ``pod_spec_overrides`` (V1PodSpec fields, merged by
:func:`merge_pod_spec`), so a new pod knob needs no code. ``start`` on a run whose Job already exists reattaches to
it (an orchestrator restart does not duplicate runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from mlperf_assets.config import KubernetesNode
from mlperf_assets.harness.args import RunSpec
from mlperf_assets.harness.files import replacing_folder
from mlperf_assets.harness.run_folder import CANCELLED, EXIT_CODE, FAILED, RUNNER_LOG, RUNNING, SUCCEEDED, RunProgress
from mlperf_assets.plan import check_node_gpus

from .base import BenchmarkRunner, RunGone, RunHandle, RunnerError, RunUnreachable, stopped_from_outside, wrapped_argv
from .remote_shell import (
    DATASETS_DIR,
    StatusCutShort,
    parse_status_output,
    render_cancel_command,
    render_status_command,
    sha256_file,
)

LABEL_PREFIX = "mlperf-dagster"
COMPONENT = "benchmark-run"
HARNESS_CONTAINER = "harness"
STAGE_CONTAINER = "stage-dataset"
COLLECTED_MARKER = "collected"
GPU_RESOURCE = "nvidia.com/gpu"
OUTSIDE_STOPPERS = "the pod deleted or evicted, a node drain, or a signal sent in the pod"
# Waiting reasons that will not fix themselves: the run fails at once with the reason.
FATAL_WAITING_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError")


class KubernetesRunnerError(RunnerError):
    """The Kubernetes runner could not build, submit, watch or collect a Job; one line naming the node."""


class KubernetesApiError(KubernetesRunnerError, RunUnreachable):
    """The API server could not be asked (no credentials, forbidden, unreachable, an error answer)."""


class JobGone(KubernetesRunnerError, RunGone):
    """The run's Job no longer exists in the namespace."""


# ------------------------------------------------------------------------------------------ pure helpers
def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of ``[A-Za-z0-9._-]``, starting and ending alphanumeric.

    Characters outside the set become ``-``; when anything had to change (or be cut), a short hash of the
    original is appended so different values stay different."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text)
    changed = cleaned != text or len(cleaned) > 63
    if changed:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        cleaned = cleaned[: 63 - 9].strip("-_.") + "-" + digest
    cleaned = cleaned.strip("-_.")
    return cleaned[:63].strip("-_.")


def job_name(run_id: str, mode: str) -> str:
    """A DNS-1123 name for the Job (<= 63 characters; the pods add a 5-character suffix to it)."""
    base = re.sub(r"[^a-z0-9-]", "-", f"mlperf-{run_id}-{mode}".lower())
    base = re.sub(r"-+", "-", base).strip("-")
    digest = hashlib.sha256(f"{run_id}/{mode}".encode()).hexdigest()[:6]
    return f"{base[: 56 - 7].rstrip('-')}-{digest}"


class PodSettings:
    """A Kubernetes node as the Job manifest sees it: its config model (``config.KubernetesNode``, the one list of
    fields and defaults), with tolerations as plain mappings. ``PodSettings(node_model)``, or
    ``PodSettings(node=NAME, **fields)`` to build the model from its fields."""

    def __init__(self, node: KubernetesNode | str, **fields: Any) -> None:
        self.model = node if isinstance(node, KubernetesNode) else KubernetesNode(name=node, runner="kubernetes", **fields)

    @property
    def node(self) -> str:
        return self.model.name

    @property
    def tolerations(self) -> tuple[dict[str, Any], ...]:
        return tuple(t.model_dump() for t in self.model.tolerations)

    def __getattr__(self, name: str) -> Any:
        model = self.__dict__.get("model")
        if model is not None and name in KubernetesNode.model_fields:
            return getattr(model, name)
        raise AttributeError(f"'PodSettings' object has no attribute {name!r}")


def _toleration(t: Mapping[str, Any]) -> dict[str, Any]:
    """A config toleration (snake_case) as a manifest toleration (camelCase), unset keys dropped."""
    keys = {"key": "key", "operator": "operator", "value": "value", "effect": "effect", "toleration_seconds": "tolerationSeconds"}
    return {keys[k]: v for k, v in t.items() if k in keys and v is not None}


def pod_paths(settings: PodSettings, spec: RunSpec, dataset_name: str) -> tuple[str, str, str]:
    """(run folder, datasets folder, dataset file) inside the pod."""
    root = settings.workdir.rstrip("/") or "/"
    run_dir = f"{root}/{spec.run_id}/{spec.mode}"
    datasets = f"{root}/{DATASETS_DIR}"
    return run_dir, datasets, f"{datasets}/{dataset_name}"


def stage_script(datasets_dir: str, dataset_name: str, sha256: str, timeout_s: int) -> str:
    """Init container: wait until ``<name>.sha256`` in the datasets folder records ``sha256`` (the runner
    streams the file in), or exit 1 after ``timeout_s``."""
    sha_file = shlex.quote(f"{datasets_dir}/{dataset_name}.sha256")
    return (
        f"mkdir -p {shlex.quote(datasets_dir)}; i=0; "
        f'until [ "$(cut -d" " -f1 {sha_file} 2>/dev/null)" = {shlex.quote(sha256)} ]; do '
        f"  if [ $i -ge {int(timeout_s)} ]; then echo 'dataset was not staged within {int(timeout_s)} s' >&2; exit 1; fi; "
        "  sleep 1; i=$((i+1)); "
        "done"
    )


def harness_script(run_dir: str, collect_window_s: int) -> str:
    """Main container (``sh -c SCRIPT sh ARGV...``): run ARGV in its own process group in the run folder,
    forward SIGTERM to that group, exit with its exit code once the runner has collected (or the window ended)."""
    q = shlex.quote(run_dir)
    return (
        f"mkdir -p {q} && cd {q} || exit 97; "
        "setsid \"$@\" & child=$!; echo $child > pid; "
        "trap 'kill -TERM -$child 2>/dev/null' TERM INT; "
        "while :; do wait $child; rc=$?; kill -0 $child 2>/dev/null || break; done; "
        f"[ -f {EXIT_CODE} ] && rc=$(cat {EXIT_CODE}); "
        f"i=0; while [ ! -f {COLLECTED_MARKER} ] && [ $i -lt {int(collect_window_s)} ]; do sleep 1; i=$((i+1)); done; "
        'case "$rc" in -*) rc=1;; esac; exit $rc'
    )


def build_job_manifest(
    spec: RunSpec,
    settings: PodSettings | KubernetesNode,
    *,
    dataset_name: str,
    dataset_sha256: str,
) -> dict[str, Any]:
    """The Job for one harness run, as a plain dict (camelCase keys, as ``kubectl`` takes it). Pure."""
    if isinstance(settings, KubernetesNode):
        settings = PodSettings(settings)
    check_node_gpus(spec, settings.gpus)  # the pod requests them all: the plan's layout must use them all
    run_dir, datasets_dir, dataset_path = pod_paths(settings, spec, dataset_name)
    harness = spec.harness_argv(settings.python, run_dir, dataset_path=dataset_path)
    argv = wrapped_argv(settings.python, run_dir, harness)

    labels = {
        "app.kubernetes.io/name": LABEL_PREFIX,
        "app.kubernetes.io/component": COMPONENT,
        f"{LABEL_PREFIX}/run-id": label_value(spec.run_id),
        f"{LABEL_PREFIX}/node": label_value(spec.node),
        f"{LABEL_PREFIX}/scenario": label_value(spec.scenario),
        f"{LABEL_PREFIX}/mode": label_value(spec.mode),
    }
    annotations = {
        f"{LABEL_PREFIX}/run-id": spec.run_id,
        f"{LABEL_PREFIX}/node": spec.node,
        f"{LABEL_PREFIX}/dataset-sha256": dataset_sha256,
    }
    resources: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    if settings.gpus:
        resources["requests"][GPU_RESOURCE] = str(settings.gpus)
        resources["limits"][GPU_RESOURCE] = str(settings.gpus)
    if settings.cpu_request:
        resources["requests"]["cpu"] = str(settings.cpu_request)
    if settings.memory_request:
        resources["requests"]["memory"] = str(settings.memory_request)
        resources["limits"]["memory"] = str(settings.memory_request)
    resources = {k: v for k, v in resources.items() if v}

    env = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "MLPERF_DAGSTER_RUN_ID", "value": spec.run_id},
    ]
    if settings.hf_token_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": settings.hf_token_secret, "key": settings.hf_token_secret_key}},
            }
        )
    mounts = [{"name": "runs", "mountPath": settings.workdir}, {"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [
        {"name": "runs", "persistentVolumeClaim": {"claimName": settings.pvc}} if settings.pvc else {"name": "runs", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
    ]
    term = {
        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": COMPONENT, "app.kubernetes.io/name": LABEL_PREFIX}},
        "topologyKey": "kubernetes.io/hostname",
    }
    if settings.exclusive_node:
        anti_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    else:
        anti_affinity = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}
    tolerations = [_toleration(t) for t in settings.tolerations]
    if settings.gpus and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "affinity": {"podAntiAffinity": anti_affinity},
        "initContainers": [
            {
                "name": STAGE_CONTAINER,
                "image": settings.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": ["sh", "-c", stage_script(datasets_dir, dataset_name, dataset_sha256, settings.stage_timeout_s)],
                "volumeMounts": [{"name": "runs", "mountPath": settings.workdir}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            }
        ],
        "containers": [
            {
                "name": HARNESS_CONTAINER,
                "image": settings.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": ["sh", "-c", harness_script(run_dir, settings.collect_window_s), "sh", *argv],
                "workingDir": settings.workdir,
                "env": env,
                "resources": resources,
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    pod_spec = merge_pod_spec(pod_spec, settings.pod_spec_overrides)

    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod_spec},
    }
    if settings.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = int(settings.active_deadline_seconds)
    if settings.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = int(settings.ttl_seconds_after_finished)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec.run_id, spec.mode),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }


def merge_pod_spec(generated: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` (camelCase, as ``config.KubernetesNode.pod_spec_overrides`` stores them) merged into a generated
    pod spec: mappings key by key (recursively), lists appended to the generated ones, other values replaced.
    ValueError when an appended item has the name of a generated one (two volumes named ``dshm``)."""
    out = dict(generated)
    for key, value in overrides.items():
        mine = out.get(key)
        if isinstance(mine, Mapping) and isinstance(value, Mapping):
            out[key] = merge_pod_spec(mine, value)
        elif isinstance(mine, list) and isinstance(value, list):
            ours = {item.get("name") for item in mine if isinstance(item, Mapping)} - {None}
            taken = sorted(str(item["name"]) for item in value if isinstance(item, Mapping) and item.get("name") in ours)
            if taken:
                raise ValueError(
                    f"pod_spec_overrides: {key}: {', '.join(taken)} is a name the runner already gives its own "
                    f"{key} entry; choose another name"
                )
            out[key] = [*mine, *value]
        else:
            out[key] = value
    return out


def manifest_to_model(manifest: Mapping[str, Any]) -> Any:
    """The manifest as a ``kubernetes.client.V1Job`` (the client's own deserializer: unknown or mistyped
    fields are dropped or rejected, which is what tests check against)."""
    from kubernetes.client import ApiClient

    class _Response:
        def __init__(self, data: str) -> None:
            self.data = data

    return ApiClient().deserialize(_Response(json.dumps(manifest)), "V1Job")


def manifest_yaml(manifest: Mapping[str, Any]) -> str:
    """The manifest as YAML for ``kubectl apply -f -`` (no anchors/aliases, keys in manifest order)."""
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(dict(manifest), Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=120)


# ---------------------------------------------------------------------------------------------- runner
class KubernetesRunner(BenchmarkRunner):
    """Runs the harness as Kubernetes Jobs, configured by a ``config.KubernetesNode`` (see the module docstring).

    ``kubeconfig``/``kube_context`` select the cluster (default: ``$KUBECONFIG`` / ``~/.kube/config``, or the
    in-cluster service account when the orchestrator runs in the cluster). Option ``cancel_grace_s``: how long
    cancel waits after SIGINT before the Job is deleted.
    """

    kind = "kubernetes"
    settings_model = KubernetesNode
    OPTIONS = ("poll_interval_s", "cancel_grace_s")
    cancel_grace_s = 10.0

    def __init__(self, settings: KubernetesNode | None = None, /, **fields: Any) -> None:
        super().__init__(settings, **fields)
        self._client: Any = None  # dagster_k8s DagsterKubernetesClient
        self._last: dict[str, RunProgress] = {}

    @property
    def pod_settings(self) -> PodSettings:
        return PodSettings(self.settings)

    def manifest(self, spec: RunSpec) -> dict[str, Any]:
        """The Job this runner would submit for ``spec`` (pure; reads the dataset only to hash it)."""
        dataset = Path(spec.dataset_path)
        digest = sha256_file(dataset) if dataset.is_file() else "0" * 64
        try:
            return build_job_manifest(spec, self.pod_settings, dataset_name=dataset.name, dataset_sha256=digest)
        except ValueError as exc:
            raise KubernetesRunnerError(f"node {self.node}: {exc}") from None

    def render(self, spec: RunSpec) -> str:
        """The Job manifest as YAML (``kubectl apply -f -`` takes it)."""
        return manifest_yaml(self.manifest(spec))

    # ---- API access (dagster-k8s client over the kubernetes client)
    def client(self) -> Any:
        if self._client is None:
            import kubernetes
            from dagster_k8s.client import DagsterKubernetesClient, PatchedApiClient

            try:
                if self.kubeconfig or self.kube_context or os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists():
                    configuration = kubernetes.client.Configuration()
                    kubernetes.config.load_kube_config(
                        config_file=str(self.kubeconfig) if self.kubeconfig else None,
                        context=self.kube_context,
                        client_configuration=configuration,
                    )
                else:
                    configuration = kubernetes.client.Configuration()
                    kubernetes.config.load_incluster_config(client_configuration=configuration)
            except (kubernetes.config.ConfigException, OSError) as exc:
                raise KubernetesApiError(
                    f"node {self.node}: no Kubernetes credentials ({exc}); set kubeconfig/kube_context in the node's config "
                    "or run the orchestrator in the cluster"
                ) from None
            api = PatchedApiClient(configuration)
            self._client = DagsterKubernetesClient.production_client(
                batch_api_override=kubernetes.client.BatchV1Api(api), core_api_override=kubernetes.client.CoreV1Api(api)
            )
        return self._client

    def _api_error(self, what: str, exc: Exception) -> KubernetesApiError:
        inner = getattr(exc, "k8s_api_exception", None) or exc  # dagster-k8s wraps the client's ApiException
        status = getattr(inner, "status", None)
        reason = getattr(inner, "reason", None) or (str(inner).splitlines() or [type(inner).__name__])[0]
        hint = ""
        if status == 403:
            hint = f" (the orchestrator's account needs create/get/list/delete on jobs and pods, and create on pods/exec, in {self.namespace})"
        elif status == 404:
            hint = f" (does namespace {self.namespace} exist?)"
        return KubernetesApiError(f"node {self.node}: {what} failed: {status or ''} {reason}{hint}".replace("  ", " "))

    def exec(self, pod: str, container: str, command: str, *, stdin: bytes | None = None, timeout_s: float = 300) -> tuple[int, bytes, str]:
        """Run ``sh -c command`` in a container: (exit code, stdout bytes, stderr text)."""
        from kubernetes.stream import stream

        core = self.client().core_api
        resp = stream(
            core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container=container,
            command=["sh", "-c", command],
            stdin=stdin is not None,
            stdout=True,
            stderr=True,
            tty=False,
            binary=True,
            _preload_content=False,
        )
        out, err = io.BytesIO(), io.BytesIO()
        try:
            if stdin is not None:
                for i in range(0, len(stdin), 1 << 20):
                    resp.write_stdin(stdin[i : i + (1 << 20)])
            deadline = time.monotonic() + timeout_s
            while resp.is_open():
                resp.update(timeout=1)
                if resp.peek_stdout():
                    out.write(resp.read_stdout())
                if resp.peek_stderr():
                    err.write(resp.read_stderr())
                if time.monotonic() > deadline:
                    raise KubernetesRunnerError(f"node {self.node}: exec in {pod}/{container} timed out after {timeout_s:g} s")
            rc = resp.returncode
        finally:
            resp.close()
        return int(rc or 0), out.getvalue(), err.getvalue().decode(errors="replace")

    # ---- the runner interface
    def _job_exists(self, name: str) -> bool:
        try:
            return self.client().get_job_status(name, self.namespace) is not None
        except Exception as exc:  # noqa: BLE001 - API errors get one clear line
            raise self._api_error(f"reading Job {name}", exc) from None

    def start(self, spec: RunSpec) -> RunHandle:
        dataset = Path(spec.dataset_path).resolve()
        if not dataset.is_file():
            raise RunnerError(f"node {self.node}: prepared dataset {dataset} does not exist")
        manifest = self.manifest(spec)
        name = manifest["metadata"]["name"]
        run_dir, datasets_dir, _ = pod_paths(self.pod_settings, spec, dataset.name)
        handle = RunHandle(
            run_id=spec.run_id,
            node=self.node,
            run_dir=run_dir,
            scenario=spec.scenario,
            mode=spec.mode,
            extra={
                "job": name,
                "namespace": self.namespace,
                "dataset": str(dataset),
                "datasets_dir": datasets_dir,
                "dataset_sha256": manifest["metadata"]["annotations"][f"{LABEL_PREFIX}/dataset-sha256"],
                "spec": spec.to_json(),
                "staged": False,
            },
        )
        if self._job_exists(name):
            handle.extra["reattached"] = True
            return handle
        try:
            self.client().create_namespaced_job_with_retries(manifest_to_model(manifest), self.namespace)
        except Exception as exc:  # noqa: BLE001
            raise self._api_error(f"creating Job {name}", exc) from None
        return handle

    def _pod(self, handle: RunHandle) -> Any | None:
        try:
            pods = self.client().get_pods_in_job(handle.extra["job"], self.namespace)
        except Exception as exc:  # noqa: BLE001
            raise self._api_error(f"listing the pods of Job {handle.extra['job']}", exc) from None
        if not pods:
            return None
        return max(pods, key=lambda p: p.metadata.creation_timestamp or 0)

    def _stage_dataset(self, handle: RunHandle, pod: str) -> None:
        """Stream the prepared dataset into the init container unless the volume already holds it."""
        name = Path(handle.extra["dataset"]).name
        datasets, sha = handle.extra["datasets_dir"], handle.extra["dataset_sha256"]
        target = f"{datasets}/{name}"
        rc, out, _ = self.exec(pod, STAGE_CONTAINER, f"cut -d' ' -f1 {shlex.quote(target + '.sha256')} 2>/dev/null; true")
        if out.decode().strip() != sha:
            data = Path(handle.extra["dataset"]).read_bytes()
            tmp = f"{datasets}/.{name}.tmp"
            command = (
                f"mkdir -p {shlex.quote(datasets)} && head -c {len(data)} > {shlex.quote(tmp)} && "
                f"mv {shlex.quote(tmp)} {shlex.quote(target)} && "
                f"echo {shlex.quote(sha + '  ' + name)} > {shlex.quote(target + '.sha256.tmp')} && "
                f"mv {shlex.quote(target + '.sha256.tmp')} {shlex.quote(target + '.sha256')}"
            )
            rc, _, err = self.exec(pod, STAGE_CONTAINER, command, stdin=data)
            if rc:
                raise KubernetesRunnerError(f"node {self.node}: staging the dataset into {pod} failed: {err.strip()[:300]}")
        handle.extra["staged"] = True

    def poll(self, handle: RunHandle) -> RunProgress:
        last = self._last.get(handle.run_dir, RunProgress())
        job = handle.extra["job"]
        try:
            status = self.client().get_job_status(job, self.namespace)
        except Exception as exc:  # noqa: BLE001
            raise self._api_error(f"reading Job {job}", exc) from None
        if status is None:
            raise JobGone(f"node {self.node}: Job {job} no longer exists in {self.namespace}")
        pod = self._pod(handle)
        if pod is None:
            if status.failed:
                return replace(last, state=FAILED, message=f"Job {job} failed before a pod ran (activeDeadlineSeconds?)")
            return replace(last, state=RUNNING, message=f"Job {job} created; waiting for a pod")
        pod_name = pod.metadata.name
        phase = pod.status.phase if pod.status else None
        for cs in list(pod.status.init_container_statuses or []) + list(pod.status.container_statuses or []):
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in FATAL_WAITING_REASONS:
                message = f"pod {pod_name}: {cs.name}: {waiting.reason}: {waiting.message or ''}".strip()
                self.client().delete_job(job, self.namespace)
                return replace(last, state=FAILED, message=message)
        if phase == "Pending":
            init = {cs.name: cs for cs in (pod.status.init_container_statuses or [])}
            stage = init.get(STAGE_CONTAINER)
            if stage is not None and stage.state and stage.state.running and not handle.extra.get("staged"):
                self._stage_dataset(handle, pod_name)
            reason = (pod.status.conditions or [None])[-1]
            detail = f": {reason.reason}" if reason is not None and getattr(reason, "reason", None) else ""
            return replace(last, state=RUNNING, message=f"pod {pod_name} pending{detail}")
        harness = next((cs for cs in (pod.status.container_statuses or []) if cs.name == HARNESS_CONTAINER), None)
        terminated = harness.state.terminated if harness is not None and harness.state else None
        if phase == "Running" and terminated is None:
            rc, out, err = self.exec(pod_name, HARNESS_CONTAINER, render_status_command(handle.run_dir), timeout_s=60)
            try:
                remote = parse_status_output(out.decode(errors="replace"))
            except StatusCutShort:  # the container stopped under the exec: the next poll sees it terminated
                return replace(last, state=RUNNING, message=f"pod {pod_name}: the harness container is stopping")
            remote = replace(remote, alive=remote.exit_code_text is None)  # the container runs: so does the harness
            progress = stopped_from_outside(remote.progress(), cancel_requested=remote.cancel_requested, who=OUTSIDE_STOPPERS)
        else:  # the container ended: its exit code is the harness's
            code = terminated.exit_code if terminated is not None else (0 if phase == "Succeeded" else 1)
            state = SUCCEEDED if code == 0 else (CANCELLED if code in (130, 143) else FAILED)
            message = None if code == 0 else f"pod {pod_name} ended with exit code {code}: {terminated.reason if terminated else phase}"
            progress = replace(last, state=state, exit_code=code, message=message)
        self._last[handle.run_dir] = progress
        return progress

    def collect(self, handle: RunHandle, dest_dir: str | Path) -> Path:
        pod = self._pod(handle)
        if pod is None or (pod.status and pod.status.phase != "Running"):
            where = f"PVC {self.pvc}" if self.pvc else "the pod's emptyDir (gone with the pod)"
            raise KubernetesRunnerError(
                f"node {self.node}: the pod of Job {handle.extra['job']} is no longer running, so {handle.run_dir} "
                f"cannot be streamed out; its files are on {where}"
            )
        command = f"tar cf - -C {shlex.quote(handle.run_dir)} ."
        rc, data, err = self.exec(pod.metadata.name, HARNESS_CONTAINER, command, timeout_s=3600)
        if rc:
            raise KubernetesRunnerError(f"node {self.node}: reading {handle.run_dir} from the pod failed: {err.strip()[:300]}")
        dest = Path(dest_dir).resolve()
        with replacing_folder(dest) as tmp, tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(tmp, filter="data")
        # let the pod finish: its container exits with the harness's code once it sees the marker
        self.exec(pod.metadata.name, HARNESS_CONTAINER, f"touch {shlex.quote(handle.run_dir + '/' + COLLECTED_MARKER)}")
        return dest

    def cancel(self, handle: RunHandle) -> None:
        job = handle.extra["job"]
        pod = self._pod(handle)
        if pod is not None and pod.status and pod.status.phase == "Running":
            try:
                self.exec(pod.metadata.name, HARNESS_CONTAINER, render_cancel_command(handle.run_dir, grace_s=self.cancel_grace_s), timeout_s=self.cancel_grace_s + 30)
            except Exception:  # noqa: BLE001 - deleting the Job below stops it anyway
                pass
        try:
            self.client().delete_job(job, self.namespace)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) != 404:
                raise self._api_error(f"deleting Job {job}", exc) from None

    def stop_hint(self, handle: RunHandle) -> str:
        return f"stop it (kubectl delete job -n {self.namespace} {handle.extra.get('job', job_name(handle.run_id, handle.mode))})"

    def log_tail(self, handle: RunHandle, lines: int = 20) -> str:
        pod = self._pod(handle)
        if pod is None:
            return ""
        try:
            if pod.status and pod.status.phase == "Running":
                _, out, _ = self.exec(pod.metadata.name, HARNESS_CONTAINER, f"tail -n {int(lines)} {shlex.quote(handle.run_dir + '/' + RUNNER_LOG)}")
                return out.decode(errors="replace").rstrip()
            return self.client().retrieve_pod_logs(pod.metadata.name, self.namespace, tail_lines=lines).rstrip()
        except Exception:  # noqa: BLE001 - best effort, for error messages
            return ""

    def active_runs(self) -> list[tuple[RunHandle, RunProgress]]:
        """Benchmark Jobs of this node that have not finished, with their progress (for ``monitor``)."""
        selector = f"app.kubernetes.io/component={COMPONENT},{LABEL_PREFIX}/node={label_value(self.node)}"
        try:
            jobs = self.client().batch_api.list_namespaced_job(self.namespace, label_selector=selector).items
        except Exception as exc:  # noqa: BLE001
            raise self._api_error("listing Jobs", exc) from None
        out = []
        for job in jobs:
            if job.status and (job.status.succeeded or job.status.failed):
                continue
            labels = job.metadata.labels or {}
            annotations = job.metadata.annotations or {}
            run_id = annotations.get(f"{LABEL_PREFIX}/run-id", labels.get(f"{LABEL_PREFIX}/run-id", ""))
            mode = labels.get(f"{LABEL_PREFIX}/mode", "")
            handle = RunHandle(
                run_id=run_id,
                node=self.node,
                run_dir=f"{self.workdir.rstrip('/')}/{run_id}/{mode}",
                scenario=labels.get(f"{LABEL_PREFIX}/scenario", ""),
                mode=mode,
                extra={"job": job.metadata.name, "namespace": self.namespace, "staged": True},
            )
            try:
                out.append((handle, self.poll(handle)))
            except RunnerError as exc:
                out.append((handle, RunProgress(state=RUNNING, message=str(exc))))
        return out


__all__ = [
    "JobGone",
    "KubernetesApiError",
    "KubernetesRunner",
    "KubernetesRunnerError",
    "PodSettings",
    "build_job_manifest",
    "job_name",
    "label_value",
    "manifest_to_model",
    "manifest_yaml",
    "merge_pod_spec",
]
