"""The node models: one per runner kind, each checking its own fields and resolving its own orchestrator-side paths.
A new runner kind is a model here (added to :data:`NODE_MODELS`) and its runner class in ``resources/runners``."""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from mlperf_assets.config.fields import (
    ENV_NAME_RE,
    ConfigModel,
    EnvName,
    NonNegativeInt,
    Port,
    PositiveFloat,
    PositiveInt,
    resolve_path,
)

NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
K8S_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
K8S_QUANTITY_RE = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


class NodeBase(ConfigModel):
    """What every node has. Each runner kind is one model below (its ``runner`` literal is the kind) and one entry
    of :data:`NODE_MODELS`; ``resources/runners`` pairs the kind with its runner class."""

    name: str
    gpus: NonNegativeInt = 0
    # Fields naming files on the orchestrator: relative to the config file's folder, ``~`` expanded. Paths on the
    # node (a workdir over SSH, an image's paths) are kept as written.
    orchestrator_paths: ClassVar[tuple[str, ...]] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NODE_NAME_RE.fullmatch(value):
            raise ValueError(
                f"must be 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit, got {value!r}"
            )
        return value

    def resolve_paths(self, base: Path, artifact_root: Path) -> None:
        """Resolve :attr:`orchestrator_paths` against ``base``, the config file's folder."""
        for field in self.orchestrator_paths:
            setattr(self, field, resolve_path(base, getattr(self, field)))


class LocalNode(NodeBase):
    """The orchestrator's own machine."""

    runner: Literal["local"]
    workdir: Path | None = None  # run folders while running; set on load to <artifact_root>/../work when absent
    python: str | None = None  # interpreter with the harness; default the orchestrator's own

    def resolve_paths(self, base: Path, artifact_root: Path) -> None:
        self.workdir = resolve_path(base, self.workdir) or artifact_root.parent / "work"


class ContainerConfig(ConfigModel):
    """Run the harness on an SSH node inside a container (docker or podman)."""

    image: str
    engine: Literal["docker", "podman"] = "docker"
    extra_args: list[str] = Field(default_factory=list)  # extra `run` options, each one argv element


class SSHNode(NodeBase):
    """A GPU server reached over SSH (key auth; host key checked against known_hosts)."""

    runner: Literal["ssh"]
    host: str
    port: Port = 22
    user: str | None = None  # default: the local user name
    key_file: Path | None = None  # private key on the orchestrator; default: the SSH agent / ~/.ssh defaults
    key_passphrase_env: str | None = None  # NAME of the environment variable holding the key's passphrase
    known_hosts: Path = Path("~/.ssh/known_hosts")
    workdir: str = "mlperf-dagster"  # remote folder for run folders and datasets (relative = remote home)
    python: str = "python3"  # remote interpreter with the harness installed
    gpus: NonNegativeInt = 1
    connect_timeout_s: PositiveFloat = 10.0
    command_timeout_s: PositiveFloat = 60.0
    keepalive_s: PositiveFloat = 15.0
    # NAMES of orchestrator environment variables the harness gets (e.g. HF_TOKEN); values never go in the file
    forward_env: list[EnvName] = Field(default_factory=list)
    reconnect_timeout_s: PositiveFloat = 1800.0  # how long a lost connection is retried before the run is reported lost
    reconnect_backoff_max_s: PositiveFloat = 30.0  # longest wait between reconnection attempts
    cancel_grace_s: PositiveFloat = 10.0  # after SIGINT, how long cancel waits before SIGTERM (then SIGKILL)
    container: ContainerConfig | None = None
    orchestrator_paths: ClassVar[tuple[str, ...]] = ("key_file", "known_hosts")

    @field_validator("key_passphrase_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME_RE.fullmatch(value):
            raise ValueError(
                f"must be an environment variable NAME (the secret stays in the environment), got {value!r}"
            )
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+", value):
            raise ValueError(f"must be a host name or IP address, got {value!r}")
        return value


class Toleration(ConfigModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: NonNegativeInt | None = None


class KubernetesNode(NodeBase):
    """A pool of GPU nodes in a Kubernetes cluster; each run is a Job."""

    runner: Literal["kubernetes"]
    namespace: str = "default"
    image: str  # container image with the harness (and vLLM) installed
    gpus: NonNegativeInt = 1  # nvidia.com/gpu requests = limits
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    pvc: str | None = None  # PersistentVolumeClaim for run folders; None = emptyDir + collection
    service_account: str | None = None
    hf_token_secret: str | None = None  # Secret NAME holding the HF token (key: hf_token_secret_key)
    hf_token_secret_key: str = "HF_TOKEN"
    cpu_request: str | None = None  # e.g. "8"
    memory_request: str | None = None  # e.g. "64Gi"
    active_deadline_seconds: PositiveInt | None = None
    workdir: str = "/results"  # mount path of the run-folder volume in the pod
    python: str = "python"  # interpreter inside the image
    kube_context: str | None = None  # kubeconfig context; None = current context / in-cluster
    kubeconfig: Path | None = None  # None = $KUBECONFIG / ~/.kube/config / in-cluster
    exclusive_node: bool = True  # required anti-affinity: never two benchmark pods on one machine (false: preferred)
    stage_timeout_s: PositiveInt = 3600  # how long the pod waits for the dataset to be staged into its volume
    collect_window_s: PositiveInt = 3600  # how long the finished pod stays up for the run folder to be collected
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    shm_size: str = "16Gi"  # size of the in-memory /dev/shm volume
    ttl_seconds_after_finished: NonNegativeInt | None = 7 * 24 * 3600  # finished Jobs are deleted after; null: kept
    # Any other V1PodSpec field (snake_case or camelCase), merged into the generated pod spec: mappings key by key,
    # lists appended (extra tolerations, volumes, imagePullSecrets), other values replaced. Stored in camelCase.
    pod_spec_overrides: dict[str, Any] = Field(default_factory=dict)
    orchestrator_paths: ClassVar[tuple[str, ...]] = ("kubeconfig",)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not K8S_NAME_RE.fullmatch(value) or len(value) > 63:
            raise ValueError(f"must be a Kubernetes name (lower-case letters, digits, '-'), got {value!r}")
        return value

    @field_validator("cpu_request", "memory_request", "shm_size", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value)
        if not K8S_QUANTITY_RE.fullmatch(text):
            raise ValueError(f"must be a Kubernetes quantity such as 8, 500m or 64Gi, got {value!r}")
        return text

    @field_validator("pod_spec_overrides")
    @classmethod
    def _pod_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        spec = k8s_camel_case("V1PodSpec", value)
        if spec.get("restartPolicy", "Never") != "Never":  # the Job's backoffLimit 0 and the ledger count on one try
            raise ValueError(
                f"restartPolicy: must be Never for a benchmark Job (a restarted harness would run the benchmark "
                f"again), got {spec['restartPolicy']!r}"
            )
        for field in ("volumes", "containers", "initContainers", "imagePullSecrets"):
            names = [item.get("name") for item in spec.get(field, [])]
            twice = sorted({str(n) for n in names if n is not None and names.count(n) > 1})
            if twice:
                raise ValueError(f"{field}: {', '.join(twice)} listed twice; names must be unique")
        return spec


def k8s_camel_case(model: str, value: Any, where: str = "") -> Any:
    """``value`` as the Kubernetes API writes a ``model`` (a ``kubernetes.client`` model name, or a type string such
    as ``list[V1Toleration]``): field names in camelCase, snake_case accepted; ValueError naming an unknown field, a
    field given in both spellings, or a value of the wrong type (a scalar for a list or an object, text for a number).
    A number passes for text (a quantity such as ``cpu: 2``); the API server judges the rest."""
    import kubernetes.client

    path = where.lstrip(".") or "the value"
    if model.startswith("list["):
        if not isinstance(value, list):
            raise ValueError(f"{path}: must be a list ({model}), got {_k8s_shown(value)}")
        return [k8s_camel_case(model[5:-1], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if model.startswith(("dict(", "dict[")):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: must be a mapping ({model}), got {_k8s_shown(value)}")
        inner = model[5:-1].split(", ", 1)[1]
        return {k: k8s_camel_case(inner, v, f"{where}.{k}") for k, v in value.items()}
    expected = _K8S_SCALARS.get(model)
    if expected is not None:
        if not expected[0](value):
            raise ValueError(f"{path}: must be {expected[1]}, got {_k8s_shown(value)}")
        return value
    cls = getattr(kubernetes.client, model, None) if model.startswith("V1") else None
    if cls is None:
        return value  # a free-form object: the API server judges it
    if not isinstance(value, dict):
        raise ValueError(f"{path}: must be a mapping of {model} fields, got {_k8s_shown(value)}")
    by_camel = {camel: snake for snake, camel in cls.attribute_map.items()}
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, item in value.items():
        snake = key if key in cls.attribute_map else by_camel.get(str(key))
        path = f"{where}.{key}".lstrip(".")
        if snake is None:
            close = difflib.get_close_matches(str(key), [*cls.attribute_map, *by_camel], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{path}: not a {model} field{hint}")
        if snake in given:
            raise ValueError(f"{path}: the same field as {given[snake]!r}; give it once")
        given[snake] = str(key)
        out[cls.attribute_map[snake]] = k8s_camel_case(cls.openapi_types[snake], item, path)
    return out


def _k8s_shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# the client's scalar types: (accepts, what a message calls it)
_K8S_SCALARS: dict[str, tuple[Any, str]] = {
    "str": (lambda v: isinstance(v, str) or _is_number(v), "text"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "datetime": (lambda v: isinstance(v, str), "a date-time text"),
}


# Variables the image (PATH, LD_LIBRARY_PATH, the venv, the GPUs the engine grants) or the Docker runner itself
# (resources/runners/docker.py _static_env) sets in a container: a node's env may not replace them
DOCKER_RESERVED_ENV = frozenset({
    "PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "HOME", "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE", "MLPERF_DAGSTER_RUN_ID", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
})  # fmt: skip
DOCKER_VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DOCKER_SIZE_RE = re.compile(r"[0-9]+(\.[0-9]+)?[bkmgBKMG]?")


class DockerNode(NodeBase):
    """A Docker engine: this machine's, or a remote one (``ssh://``, or ``tcp://`` with TLS). Each run is a container
    started from ``image`` (``resources/runners/docker.py``; ``mlperf-dagster render`` prints its spec)."""

    runner: Literal["docker"]
    image: str  # an image with the harness installed (docker/Dockerfile), or any image plus harness_source
    # None: the local engine ($DOCKER_HOST, else /var/run/docker.sock); unix:///path; ssh://user@host[:port] (host key
    # checked against known_hosts, as for ssh nodes); tcp://host:port with TLS (tls_ca_cert, client cert and key)
    docker_host: str | None = None
    pull: Literal["never", "missing", "always"] = "missing"  # missing: pull only when the engine lacks the image
    gpus: NonNegativeInt | Literal["all"] | list[str] = 0  # a count, "all", or device ids/UUIDs (a GPU device request)
    shm_size: str | None = None  # /dev/shm size such as 16g (with an ipc mode other than host)
    ipc: str = "host"  # host (what vLLM images expect), private, shareable, container:NAME
    network: str = "host"  # host (what MLPerf GPU images expect), none, or a network on the engine
    volumes: list[str] = Field(default_factory=list)  # "SOURCE:TARGET[:ro]": engine-host path or named volume
    env: list[EnvName] = Field(default_factory=list)  # NAMES of orchestrator variables; values read at start
    user: str | None = None  # uid[:gid] or a user name of the image; default: the image's user
    workdir: str = "/mlperf-dagster"  # run folders inside the container: <workdir>/<run_id>/<mode>
    python: str = "python3"  # interpreter inside the image
    harness_source: str | None = None  # the project's source on the engine's host, mounted read-only on PYTHONPATH
    datasets_volume: str | None = None  # named volume caching prepared datasets (else copied into each container)
    init: bool = True  # docker's init as PID 1 (reaps the engine's orphaned workers)
    key_file: Path | None = None  # ssh:// engines: private key (default: the SSH agent / ~/.ssh keys)
    key_passphrase_env: str | None = None  # ssh:// engines: NAME of the variable holding the key's passphrase
    known_hosts: Path = Path("~/.ssh/known_hosts")  # ssh:// engines: an unknown or changed host key is refused
    tls_ca_cert: Path | None = None  # tcp:// engines: CA that signed the engine's certificate (required)
    tls_client_cert: Path | None = None  # tcp:// engines: client certificate and key, if the engine asks for one
    tls_client_key: Path | None = None
    connect_timeout_s: PositiveFloat = 10.0
    api_timeout_s: PositiveFloat = 120.0  # one Docker API call (copying a run folder out streams within it)
    reconnect_timeout_s: PositiveFloat = 600.0  # how long an unreachable engine is retried before the run is reported lost
    cancel_grace_s: PositiveFloat = 10.0  # after SIGTERM, how long cancel waits before SIGKILL
    # the key, known_hosts and TLS files are the orchestrator's; volume sources and harness_source are the engine's
    orchestrator_paths: ClassVar[tuple[str, ...]] = (
        "key_file", "known_hosts", "tls_ca_cert", "tls_client_cert", "tls_client_key",
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value or not all(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).strip() for v in value):
                raise ValueError(f"must be a GPU count, 'all', or a list of device ids such as ['0', '1'], got {value!r}")
            return [str(v).strip() for v in value]
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError(f"must be a GPU count, 'all', or a list of device ids such as ['0', '1'], got {value!r}")

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if re.fullmatch(r"unix:///\S+", value):
            return value
        if re.fullmatch(r"ssh://([A-Za-z0-9_.-]+@)?[A-Za-z0-9_.\[\]:-]+", value) or re.fullmatch(
            r"tcp://[A-Za-z0-9_.\[\]-]+(:[0-9]{1,5})?", value
        ):
            return value
        raise ValueError(f"must be unix:///PATH, ssh://[USER@]HOST[:PORT] or tcp://HOST:PORT, got {value!r}")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; name the image the harness runs in, such as mlperf-dagster:0.1")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in DOCKER_RESERVED_ENV:
                raise ValueError(
                    f"{name} is the image's or the runner's to set (the orchestrator's value would replace it and the "
                    f"harness could not start); remove it from env"
                )
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for item in value:
            parts = item.split(":")
            ok = len(parts) in (2, 3) and parts[1].startswith("/") and (len(parts) == 2 or parts[2] in ("ro", "rw"))
            ok = ok and (parts[0].startswith("/") or bool(DOCKER_VOLUME_NAME_RE.fullmatch(parts[0])))
            if not ok:
                raise ValueError(
                    f"{item!r} must be SOURCE:TARGET or SOURCE:TARGET:ro, SOURCE an absolute path on the engine's host "
                    "or a volume name, TARGET an absolute path in the container"
                )
        return value

    @field_validator("shm_size")
    @classmethod
    def _shm_size(cls, value: str | None) -> str | None:
        if value is not None and not DOCKER_SIZE_RE.fullmatch(str(value)):
            raise ValueError(f"must be a size such as 16g or 512m, got {value!r}")
        return value

    @field_validator("workdir", "harness_source")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or value.rstrip("/") == ""):
            raise ValueError(f"must be an absolute path other than /, got {value!r}")
        return value.rstrip("/") if value else value

    @field_validator("datasets_volume")
    @classmethod
    def _volume_name(cls, value: str | None) -> str | None:
        if value is not None and not DOCKER_VOLUME_NAME_RE.fullmatch(value):
            raise ValueError(f"must be a Docker volume name (letters, digits, '_', '.', '-'), got {value!r}")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?", value):
            raise ValueError(f"must be uid[:gid] or a user name, got {value!r}")
        return value

    @field_validator("key_passphrase_env")
    @classmethod
    def _passphrase_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME_RE.fullmatch(value):
            raise ValueError(f"must be an environment variable NAME (the secret stays in the environment), got {value!r}")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> "DockerNode":
        if self.shm_size is not None and self.ipc == "host":
            raise ValueError("shm_size needs an ipc mode other than host (with ipc: host the container uses the host's /dev/shm)")
        if self.docker_host and self.docker_host.startswith("tcp://") and self.tls_ca_cert is None:
            raise ValueError(
                f"docker_host {self.docker_host} needs tls_ca_cert (and tls_client_cert/tls_client_key if the engine asks "
                "for a client certificate): a plain tcp:// engine gives root on its host to anyone who can reach it"
            )
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError("tls_client_cert and tls_client_key go together")
        sources: dict[str, str] = {}  # the engine keys bind mounts by source: a repeated one would lose an entry
        for what, source in [
            *((f"volumes entry {item!r}", item.split(":")[0].rstrip("/") or "/") for item in self.volumes),
            ("harness_source", self.harness_source),
            ("datasets_volume", self.datasets_volume),
        ]:
            if source is None:
                continue
            if source in sources:
                raise ValueError(f"{what} mounts {source}, as {sources[source]} does; each source may be mounted once")
            sources[source] = what
        targets = [item.split(":")[1].rstrip("/") or "/" for item in self.volumes]
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"volumes mount two sources at {', '.join(twice)}; each target may be used once")
        duplicates = sorted({name for name in self.env if self.env.count(name) > 1})
        if duplicates:
            raise ValueError(f"env lists {', '.join(duplicates)} more than once")
        return self


NODE_MODELS = (LocalNode, SSHNode, KubernetesNode, DockerNode)
NODE_CLASSES: dict[str, type[NodeBase]] = {
    typing.get_args(model.model_fields["runner"].annotation)[0]: model for model in NODE_MODELS
}  # runner kind -> node model
RUNNER_KINDS = tuple(NODE_CLASSES)
NodeConfig = Annotated[Union[NODE_MODELS], Field(discriminator="runner")]


def runner_resource_key(node_name: str) -> str:
    """Dagster resource key of a node's runner: ``runner_<name>`` with non-identifier characters as ``_``."""
    return "runner_" + re.sub(r"[^0-9A-Za-z_]", "_", node_name)
