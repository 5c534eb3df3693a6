"""The config file (``config/*.yaml``): pydantic models, loading, and one-line error messages.

The shape is a contract other tooling writes (issue 4): fields may be added, never renamed.
Every relative path in a file is relative to that file's folder; ``~`` is expanded. Remote paths (an SSH
node's ``workdir`` and ``python``, a pod's ``workdir``) are kept as written.

Which file: ``load_config(path)``, else ``$MLPERF_DAGSTER_CONFIG``, else the embedded default
``config/config.yaml``. ``$MLPERF_DAGSTER_DATASET`` replaces the dataset with a local copy, its format
detected from the path (see :func:`detect_dataset_source`).

Every problem becomes one line ``<file>: <field path>: <what is wrong>``; :class:`ConfigError` carries
them all, found before anything runs: the file itself (unreadable, a folder, a symlink loop, binary, huge, nested
too deep, a key given twice), each field, the storage paths (usable as a DuckDB file and folders), the engine
arguments (asked of the backend, as the node will), and the cron (asked of Dagster, as the schedule will).
Pure module: Dagster is imported only inside :func:`_dagster_accepts_cron`, for its cron check.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat as statmod
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from mlperf_assets.harness.backends import BACKEND_NAMES, BASELINE_BACKENDS
from mlperf_assets.harness.backends import BACKENDS as BACKEND_ROWS
from mlperf_assets.harness.benchmarks import BENCHMARK_NAMES, DEFAULT_BENCHMARK, LG_MODEL_NAMES, SCENARIOS
from mlperf_assets.harness.benchmarks import HF_DATASET as _HF_DATASET
from mlperf_assets.harness.compliance import COMPLIANCE_NAMES
from mlperf_assets.harness.settings import LOADGEN_SETTINGS, positive_number, validate_settings
# The planner decides parallelism, the profile and the compliance runs; the load applies and checks them. plan.py
# imports this module for type hints only (no import circle).
from mlperf_assets.plan import apply_profile, compliance_tests, resolve_parallelism

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "config.yaml"
CONFIG_ENV = "MLPERF_DAGSTER_CONFIG"
DATASET_ENV = "MLPERF_DAGSTER_DATASET"

# Choices come from the harness's registries (benchmarks.py, backends/__init__.py); SCENARIOS is imported above.
PARALLELISM = ("auto", "data", "tensor")
BENCHMARKS = BENCHMARK_NAMES
BACKENDS = BACKEND_NAMES
DATASET_SOURCES = ("huggingface", "mlcommons-json", "stories", "jsonl", "local")
RUNNER_KINDS = ("local", "ssh", "kubernetes", "docker")
HF_DATASET = _HF_DATASET[0]  # "abisee/cnn_dailymail"


class ConfigError(Exception):
    """Invalid config: ``problems`` holds one line per problem, each naming the file and the field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- constrained scalar types with messages that read well on one line ------------------------------


def _int_in(lo: int | None, hi: int | None):
    if lo is not None and hi is not None:
        what = f"an integer between {lo} and {hi}"
    elif lo == 0:
        what = "an integer >= 0"
    elif lo == 1:
        what = "a positive integer"
    else:
        what = "an integer"

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"must be {what}, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"must be {what}, got {value!r}")
        return value

    return BeforeValidator(check)


_positive_number = positive_number  # finite and > 0: the check LoadGen rates and latencies get too


Port = Annotated[int, _int_in(1, 65535)]
PositiveInt = Annotated[int, _int_in(1, None)]
NonNegativeInt = Annotated[int, _int_in(0, None)]
PositiveFloat = Annotated[float, BeforeValidator(_positive_number)]

NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
K8S_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
K8S_QUANTITY_RE = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: Any) -> str:
    """One entry of ``forward_env``: a variable NAME. A ``NAME=VALUE`` entry is refused without echoing the value."""
    if not isinstance(value, str):
        raise ValueError(f"must be an environment variable name (a string), got {_describe(value)}")
    if "=" in value:
        raise ValueError(
            f"must be an environment variable NAME such as {value.split('=', 1)[0].strip() or 'HF_TOKEN'!r}, "
            "not NAME=VALUE: the value stays in the orchestrator's environment (value not shown)"
        )
    if not ENV_NAME_RE.fullmatch(value):
        raise ValueError(f"must be an environment variable NAME (letters, digits and '_'), got {value!r}")
    return value


EnvName = Annotated[str, BeforeValidator(_env_name)]


def runner_resource_key(node_name: str) -> str:
    """Dagster resource key of a node's runner: ``runner_<name>`` with non-identifier characters as ``_``."""
    return "runner_" + re.sub(r"[^0-9A-Za-z_]", "_", node_name)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=False)


# --- sections ---------------------------------------------------------------------------------------


class StorageConfig(_Model):
    """Where results go on the orchestrator."""

    artifact_root: Path = Path("results/artifacts")  # collected run folders: <node>/<scenario>/<run_id>/<mode>
    duckdb_path: Path = Path("results/mlperf.duckdb")  # the results store (contract B)
    report_dir: Path = Path("results/report")  # report.md (and, later, charts and dashboard)
    dataset_dir: Path | None = None  # prepared dataset files; default <artifact_root>/../datasets


class DatasetConfig(_Model):
    """The CNN/DailyMail validation set and how to get it."""

    source: Literal["huggingface", "mlcommons-json", "stories", "jsonl", "local"] = "huggingface"
    path: Path | None = None  # required unless source is huggingface
    max_samples: PositiveInt | None = None  # None = all (13,368 for the full set)
    tokenizer: str | None = None  # "byte" or an HF name/path; default: byte for baselines, else the checkpoint
    seed: NonNegativeInt | None = None  # sampling seed when max_samples is below the source size


class _ScenarioSettingsBase(_Model):
    """LoadGen settings for one scenario: one optional field per row of ``harness/settings.py``'s LOADGEN_SETTINGS,
    spelled as config files spell it (``target_qps``, ``min_duration_ms``, ``ttft_latency_ms``, ...) and checked by
    that row; None = mlperf.conf's value."""

    def as_settings(self) -> dict[str, Any]:
        """The settings mapping of a ``RunSpec``: LoadGen user.conf keys, unset values dropped."""
        return validate_settings(self.model_dump(exclude_none=True))


ScenarioSettings = create_model(
    "ScenarioSettings",
    __base__=_ScenarioSettingsBase,
    __module__=__name__,
    **{row.name: (Annotated[row.kind.python_type, BeforeValidator(row.check)] | None, None)
       for row in LOADGEN_SETTINGS.values()},
)


class ScenariosConfig(_Model):
    """A scenario runs when its key is present with a mapping of settings (``{}``: the defaults); ``false`` (or
    leaving the key out) disables it. A key with no value (``Offline:`` then nothing) is refused: YAML reads it as
    null, which would silently disable a scenario its author meant to run."""

    Offline: ScenarioSettings | None = None
    Server: ScenarioSettings | None = None
    SingleStream: ScenarioSettings | None = None

    @field_validator(*SCENARIOS, mode="before")
    @classmethod
    def _present(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("empty; write {} to enable it with defaults or false to disable it")
        return None if value is False else value

    def enabled(self) -> dict[str, ScenarioSettings]:
        """Scenario name -> settings, in MLPerf order, for the scenarios present in the file."""
        return {name: s for name in SCENARIOS if (s := getattr(self, name)) is not None}


class BenchmarkConfig(_Model):
    """What to run: the MLPerf benchmark, the model, the backend and its engine options, the scenarios."""

    model: Literal[BENCHMARKS] = DEFAULT_BENCHMARK  # MLPerf benchmark name (harness/benchmarks.py)
    checkpoint: str | None = "meta-llama/Llama-3.1-8B-Instruct"  # HF name or path of the model (vllm/openai)
    backend: Literal[BACKENDS] = "vllm"
    engine: dict[str, Any] = Field(default_factory=dict)  # backend options, passed as --engine-arg KEY=VALUE
    lg_model_name: Literal[LG_MODEL_NAMES] | None = None  # LoadGen model name; None = the benchmark's default
    scenarios: ScenariosConfig = Field(default_factory=lambda: ScenariosConfig(Offline=ScenarioSettings()))
    accuracy: bool = True  # after the performance run, run accuracy mode and score ROUGE
    progress_interval_s: PositiveFloat = 2.0  # harness progress.jsonl interval
    log_interval_s: PositiveFloat = 5.0  # how often scenario_run writes progress to the Dagster log
    run_timeout_s: PositiveFloat | None = None  # cancel a harness run that takes longer (None = no limit)
    # smoke: the settings as written; submission: the full dataset (13,368), MLPerf durations and counts from
    # mlperf.conf (the scenarios' duration/count overrides dropped), accuracy and TEST06 for every scenario
    profile: Literal["smoke", "submission"] = "smoke"
    compliance: list[Literal[COMPLIANCE_NAMES]] = Field(default_factory=list)  # compliance tests after accuracy
    # How a node with several GPUs (its `gpus`) runs one test (resolve_parallelism): data = one engine replica per
    # GPU group behind one SUT (--data-parallel-size), tensor = one engine over all of them (tensor_parallel_size),
    # auto = data when the benchmark's model fits one GPU (benchmarks.py fits_one_gpu), else tensor
    parallelism: Literal[PARALLELISM] = "auto"

    @field_validator("scenarios", mode="after")
    @classmethod
    def _some_scenario(cls, value: ScenariosConfig) -> ScenariosConfig:
        if not value.enabled():
            raise ValueError(f"needs at least one of {', '.join(SCENARIOS)}")
        return value

    @property
    def is_baseline(self) -> bool:
        return self.backend in BASELINE_BACKENDS


class _NodeBase(_Model):
    name: str
    gpus: NonNegativeInt = 0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NODE_NAME_RE.fullmatch(value):
            raise ValueError(
                f"must be 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit, got {value!r}"
            )
        return value


class LocalNode(_NodeBase):
    """The orchestrator's own machine."""

    runner: Literal["local"]
    workdir: Path | None = None  # run folders while running; set on load to <artifact_root>/../work when absent
    python: str | None = None  # interpreter with the harness; default the orchestrator's own


class ContainerConfig(_Model):
    """Run the harness on an SSH node inside a container (docker or podman)."""

    image: str
    engine: Literal["docker", "podman"] = "docker"
    extra_args: list[str] = Field(default_factory=list)  # extra `run` options, each one argv element


class SSHNode(_NodeBase):
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


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: NonNegativeInt | None = None


class KubernetesNode(_NodeBase):
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
        return k8s_camel_case("V1PodSpec", value)


def k8s_camel_case(model: str, value: Any, where: str = "") -> Any:
    """``value`` as the Kubernetes API writes a ``model`` (a ``kubernetes.client`` model name, or a type string such
    as ``list[V1Toleration]``): field names in camelCase, snake_case accepted; ValueError naming an unknown field."""
    import kubernetes.client

    if model.startswith("list[") and isinstance(value, list):
        return [k8s_camel_case(model[5:-1], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if model.startswith("dict(") and isinstance(value, dict):
        inner = model[5:-1].split(", ", 1)[1]
        return {k: k8s_camel_case(inner, v, f"{where}.{k}") for k, v in value.items()}
    cls = getattr(kubernetes.client, model, None) if model.startswith("V1") else None
    if cls is None or not isinstance(value, dict):
        return value  # a scalar or free-form object: the API server judges it
    by_camel = {camel: snake for snake, camel in cls.attribute_map.items()}
    out: dict[str, Any] = {}
    for key, item in value.items():
        snake = key if key in cls.attribute_map else by_camel.get(str(key))
        path = f"{where}.{key}".lstrip(".")
        if snake is None:
            close = difflib.get_close_matches(str(key), [*cls.attribute_map, *by_camel], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{path}: not a {model} field{hint}")
        out[cls.attribute_map[snake]] = k8s_camel_case(cls.openapi_types[snake], item, path)
    return out


DOCKER_VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DOCKER_SIZE_RE = re.compile(r"[0-9]+(\.[0-9]+)?[bkmgBKMG]?")


class DockerNode(_NodeBase):
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
        duplicates = sorted({name for name in self.env if self.env.count(name) > 1})
        if duplicates:
            raise ValueError(f"env lists {', '.join(duplicates)} more than once")
        return self


NodeConfig = Annotated[Union[LocalNode, SSHNode, KubernetesNode, DockerNode], Field(discriminator="runner")]


class ScheduleConfig(_Model):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        problem = timezone_problem(value)
        if problem:
            raise ValueError(problem)
        return value


CRON_FIELDS = (  # name, values: what one field of a 5-field cron expression may hold
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
)
CRON_EXPECTED = "must be a 5-field cron expression such as '0 2 * * *'"


def _dagster_accepts_cron(value: str) -> bool:
    """Dagster's own check, the one ``ScheduleDefinition`` raises on (``is_valid_cron_string``: its vendored
    croniter, exactly 5 fields, no 30/31 February). Imported here, not at the top: this module stays free of
    Dagster for everything but this one answer; without Dagster installed, the shape check stands in."""
    try:
        from dagster._utils.schedules import is_valid_cron_string
    except ImportError:  # pragma: no cover - the orchestrator always has dagster
        fields = value.split()
        return len(fields) == 5 and all(re.fullmatch(r"[0-9A-Za-z*,/#?-]+", f) for f in fields)
    try:
        return bool(is_valid_cron_string(value))
    except Exception:  # noqa: BLE001 - croniter raising on odd input is a "no" too
        return False


def cron_problem(value: str) -> str | None:
    """None if Dagster will accept ``value`` as a schedule's cron, else one sentence saying which part is wrong."""
    if _dagster_accepts_cron(value):
        return None
    fields = value.split()
    if len(fields) != 5:
        return f"{CRON_EXPECTED}, got {value!r}"
    for i, (name, values) in enumerate(CRON_FIELDS):
        alone = ["*"] * 5
        alone[i] = fields[i]
        if not _dagster_accepts_cron(" ".join(alone)):
            return f"{CRON_EXPECTED}, got {value!r}: the {name} field {fields[i]!r} is not valid (allowed: {values})"
    return f"{CRON_EXPECTED}, got {value!r}: Dagster refuses it (a date that never occurs, such as February 30)"


def timezone_problem(value: str) -> str | None:
    """None if ``value`` is an IANA time zone name (as Dagster loads ``execution_timezone``), else why not."""
    if value in ("UTC", "utc"):
        return None  # Dagster's get_timezone takes both spellings
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # unknown name, not a key, too long for a file name
        return f"must be an IANA time zone such as UTC or Europe/Paris, got {value[:80]!r}"
    return None


def _fraction_pct(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 100:
        raise ValueError(f"must be a percentage >= 0 and < 100, got {value!r}")
    return float(value)


class SearchConfig(_Model):
    """``max_qps_search`` / ``mlperf-dagster search-qps``: the highest Server (or Interactive) target_qps that stays
    VALID, found by short probes (bracketing, then bisection) and one full-length confirmation run
    (``mlperf_assets/search.py``). Changing any of these starts a new search; the same ones resume the stored one."""

    probe_duration_s: PositiveFloat = 60.0  # LoadGen min_duration of each probe
    confirm_duration_s: PositiveFloat = 600.0  # the confirmation run's min_duration (MLPerf's 600 s)
    min_queries: NonNegativeInt = 600  # min_query_count of probes and confirmations (early stopping needs ~460)
    start_qps: PositiveFloat | None = None  # first estimate (samples/s); None: the node's latest Offline run, else a probe
    start_fraction: PositiveFloat = 0.9  # first probe at this fraction of the estimate
    growth: PositiveFloat = 1.5  # while probes pass, the next one is this many times higher
    shrink: PositiveFloat = 0.5  # while probes fail, the next one is this fraction of the last
    tolerance_pct: PositiveFloat = 3.0  # stop when the highest pass and the lowest fail are this close
    max_probes: PositiveInt = 8
    margin_pct: Annotated[float, BeforeValidator(_fraction_pct)] = 10.0  # p99s must stay this far under the limits
    min_qps: PositiveFloat = 0.5  # never probe below this: the target is unreachable
    confirm_attempts: PositiveInt = 3  # confirmation runs at most (each INVALID one steps down)
    step_down_pct: Annotated[float, BeforeValidator(_fraction_pct)] = 5.0
    offline_probe_duration_s: PositiveFloat = 10.0  # the estimate's Offline probe, when no Offline run is stored
    offline_probe_queries: PositiveInt = 1000

    @field_validator("growth")
    @classmethod
    def _growth(cls, value: float) -> float:
        if value <= 1:
            raise ValueError(f"must be > 1 (the next probe after a pass is higher), got {value!r}")
        return value

    @field_validator("shrink")
    @classmethod
    def _shrink(cls, value: float) -> float:
        if value >= 1:
            raise ValueError(f"must be < 1 (the next probe after a failure is lower), got {value!r}")
        return value


# Fields the config's submission: block must give (a machine cannot report them); one config line each.
MACHINE_UNKNOWABLE = (
    "submitter", "system_name", "host_storage_type", "host_storage_capacity", "host_memory_configuration",
    "host_networking", "host_networking_topology", "host_network_card_count", "accelerator_host_interconnect",
    "accelerator_interconnect", "accelerator_memory_configuration", "cooling",
)  # fmt: skip


class SubmissionConfig(_Model):
    """What an MLPerf submission tree needs that a machine cannot report (``systems/<system>.json``,
    ``measurements.json``); the rest comes from the run manifests. Any other systems-JSON field goes in ``system``."""

    submitter: str | None = None
    division: Literal["closed", "open"] = "closed"
    category: Literal["datacenter", "edge", "datacenter,edge"] = "datacenter"  # the checker's system_type
    system_name: str | None = None
    status: Literal["available", "preview", "rdi"] = "available"
    host_processor_model_name: str | None = None  # default: what the node reports (a local node: /proc/cpuinfo)
    host_memory_capacity: str | None = None  # default: what the node reports
    host_storage_type: str | None = None
    host_storage_capacity: str | None = None
    host_memory_configuration: str | None = None
    host_networking: str | None = None
    host_networking_topology: str | None = None
    host_network_card_count: str | None = None
    accelerator_host_interconnect: str | None = None
    accelerator_interconnect: str | None = None
    accelerator_memory_configuration: str | None = None
    cooling: str | None = None
    hw_notes: str | None = None
    sw_notes: str | None = None
    weight_data_types: str | None = None  # measurements.json; default bf16 (a baseline: none)
    starting_weights_filename: str | None = None  # default: benchmark.checkpoint
    system: dict[str, Any] = Field(default_factory=dict)  # extra or overriding systems-JSON fields, verbatim

    def missing_fields(self) -> list[str]:
        return [f for f in MACHINE_UNKNOWABLE if getattr(self, f) in (None, "") and f not in self.system]


class MlperfConfig(_Model):
    """A whole config file. ``source_path`` is the file it came from (not part of the file)."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    nodes: list[NodeConfig]
    schedule: ScheduleConfig | None = None
    search: SearchConfig = Field(default_factory=SearchConfig)  # capacity search (max_qps_search)
    submission: SubmissionConfig | None = None  # present: submission trees can be built (submission_package)
    mlcommons_inference: Path | None = None  # the user's mlcommons/inference checkout (checker, TEST06 audit.config)

    source_path: Path | None = Field(default=None, exclude=True)
    dataset_overridden_by: str | None = Field(default=None, exclude=True)  # "MLPERF_DAGSTER_DATASET=..." if so

    @field_validator("nodes", mode="after")
    @classmethod
    def _nodes(cls, nodes: list) -> list:
        if not nodes:
            raise ValueError("needs at least one node")
        return nodes

    # -- convenience ---------------------------------------------------------------------------------

    def node(self, name: str) -> LocalNode | SSHNode | KubernetesNode | DockerNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def scenario_names(self) -> list[str]:
        return list(self.benchmark.scenarios.enabled())

    @property
    def tokenizer(self) -> str:
        """Tokenizer for prepare-dataset: explicit, else byte for baselines, else the checkpoint."""
        if self.dataset.tokenizer:
            return self.dataset.tokenizer
        if self.benchmark.is_baseline or not self.benchmark.checkpoint:
            return "byte"
        return self.benchmark.checkpoint

    @property
    def dataset_dir(self) -> Path:
        return self.storage.dataset_dir or self.storage.artifact_root.parent / "datasets"


# --- loading ----------------------------------------------------------------------------------------

_NODE_CLASSES = {"local": LocalNode, "ssh": SSHNode, "kubernetes": KubernetesNode, "docker": DockerNode}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Model classes in an annotation, looking through Optional / Union / Annotated (not through list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (list, dict):
        return []
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def _item_annotation(annotation: Any) -> Any:
    """``X`` for ``list[X]`` (or ``list[X] | None``); None otherwise."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is list:
            return typing.get_args(arg)[0]
    return None


def _model_for(annotation: Any, raw: Any) -> type[BaseModel] | None:
    models = _models_in(annotation)
    if len(models) == 1:
        return models[0]
    kind = raw.get("runner") if isinstance(raw, dict) else None
    return _NODE_CLASSES.get(kind) if models else None


def _fields_at(loc: tuple, data: Any) -> list[str]:
    """Field names allowed at ``loc`` (for did-you-mean), walking the models alongside the raw data."""
    annotation: Any = MlperfConfig
    node = data
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            annotation = _item_annotation(annotation)
            continue
        model = _model_for(annotation, node)
        if model is None:
            return []
        if part in _NODE_CLASSES and part not in model.model_fields:
            continue  # the union tag pydantic inserts after nodes[i]
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        node = node.get(part) if isinstance(node, dict) else None
    model = _model_for(annotation, node)
    if model is None:
        return []
    return [f for f in model.model_fields if f not in ("source_path", "dataset_overridden_by")]


def _format_loc(loc: tuple) -> str:
    parts: list[str] = []
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif isinstance(previous, int) and part in _NODE_CLASSES:
            pass  # the union tag pydantic inserts after nodes[i]
        elif part in ("function-after[_nodes(), list[...]]",) or str(part).startswith("function-"):
            pass
        else:
            parts.append(("." if parts else "") + str(part))
        previous = part
    return "".join(parts) or "(top level)"


def _describe(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _message(err: dict, data: Any) -> tuple[str, str]:
    """(field path, message) for one pydantic error."""
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(loc[:-1], data)
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else (f" (allowed: {', '.join(allowed)})" if allowed else "")
        return _format_loc(loc), f"unknown key{hint}"
    if kind == "missing":
        return _format_loc(loc), "is required"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6) if isinstance(value, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return _format_loc(loc), f"must be one of {', '.join(choices)}, got {value!r}{hint}"
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        close = difflib.get_close_matches(str(tag), RUNNER_KINDS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return _format_loc(loc) + ".runner", f"must be one of {', '.join(RUNNER_KINDS)}, got {tag!r}{hint}"
    if kind == "union_tag_not_found":
        return _format_loc(loc) + ".runner", f"is required (one of {', '.join(RUNNER_KINDS)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _format_loc(loc), f"must be a mapping, got {_describe(value)}"
    if kind == "list_type":
        return _format_loc(loc), f"must be a list, got {_describe(value)}"
    if kind == "string_type":
        return _format_loc(loc), f"must be a string, got {_describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return _format_loc(loc), f"must be true or false, got {value!r}"
    if kind in ("path_type",):
        return _format_loc(loc), f"must be a path (a string), got {_describe(value)}"
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
        return _format_loc(loc), msg
    return _format_loc(loc), err["msg"]


def _resolve(base: Path, path: Path | None) -> Path | None:
    if path is None:
        return None
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else _absolute(base / path)


def _resolve_paths(config: MlperfConfig, base: Path) -> None:
    s = config.storage
    s.artifact_root = _resolve(base, s.artifact_root)
    s.duckdb_path = _resolve(base, s.duckdb_path)
    s.report_dir = _resolve(base, s.report_dir)
    s.dataset_dir = _resolve(base, s.dataset_dir)
    config.dataset.path = _resolve(base, config.dataset.path)
    config.mlcommons_inference = _resolve(base, config.mlcommons_inference)
    for node in config.nodes:
        if isinstance(node, LocalNode):
            node.workdir = _resolve(base, node.workdir) or s.artifact_root.parent / "work"
        elif isinstance(node, SSHNode):
            node.key_file = _resolve(base, node.key_file)
            node.known_hosts = _resolve(base, node.known_hosts)
        elif isinstance(node, KubernetesNode):
            node.kubeconfig = _resolve(base, node.kubeconfig)
        elif isinstance(node, DockerNode):  # orchestrator-side files; image paths and harness_source are the engine's
            node.key_file = _resolve(base, node.key_file)
            node.known_hosts = _resolve(base, node.known_hosts)
            node.tls_ca_cert = _resolve(base, node.tls_ca_cert)
            node.tls_client_cert = _resolve(base, node.tls_client_cert)
            node.tls_client_key = _resolve(base, node.tls_client_key)


def _cross_checks(config: MlperfConfig, raw: dict) -> list[tuple[str, str]]:
    """Problems that involve several fields or the file system: (field path, message)."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    keys: dict[str, int] = {}
    for i, node in enumerate(config.nodes):
        if node.name in seen:
            problems.append((f"nodes[{i}].name", f"duplicate node name {node.name!r} (also nodes[{seen[node.name]}])"))
            continue
        key = runner_resource_key(node.name)
        if key in keys:
            other = config.nodes[keys[key]].name
            problems.append((f"nodes[{i}].name", f"{node.name!r} and {other!r} differ only in '.'/'-'/'_'; rename one"))
        seen[node.name] = i
        keys[key] = i
    ds = config.dataset
    if ds.source != "huggingface" and ds.path is None:
        problems.append(("dataset.path", f"is required when source is {ds.source!r}"))
    if ds.path is not None and config.dataset_overridden_by is None:
        if ds.source == "stories" and not ds.path.is_dir():
            problems.append(("dataset.path", f"{ds.path} is not a folder of .story files"))
        elif ds.source != "stories" and not ds.path.exists():
            problems.append(("dataset.path", f"{ds.path} does not exist"))
    for i, node in enumerate(config.nodes):
        if isinstance(node, SSHNode):
            if node.reconnect_backoff_max_s > node.reconnect_timeout_s:
                longer = f"{node.reconnect_backoff_max_s:g} s is longer than reconnect_timeout_s"
                problems.append((f"nodes[{i}].reconnect_backoff_max_s", f"{longer} ({node.reconnect_timeout_s:g} s)"))
            seen_env: set[str] = set()
            for j, name in enumerate(node.forward_env):
                if name in seen_env:
                    problems.append((f"nodes[{i}].forward_env[{j}]", f"{name!r} is listed twice"))
                seen_env.add(name)
    for i, node in enumerate(config.nodes):
        try:
            resolve_parallelism(config.benchmark, node)
        except ValueError as exc:
            problems.append((f"nodes[{i}].gpus", str(exc)))
    if BACKEND_ROWS[config.benchmark.backend].checkpoint_arg and not config.benchmark.checkpoint:
        problems.append(("benchmark.checkpoint", f"is required for the {config.benchmark.backend} backend"))
    elif (engine_problem := _engine_problem(config.benchmark)) is not None:
        problems.append(("benchmark.engine", engine_problem))
    problems += _storage_problems(config)
    problems += _submission_problems(config)
    return problems


def _submission_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """A submission block missing what a machine cannot know (one line each); an MLCommons checkout that is not
    one; TEST06 without a checkout to take its audit.config from."""
    problems: list[tuple[str, str]] = []
    if config.submission is not None:
        for name in config.submission.missing_fields():
            problems.append((f"submission.{name}", "is required for a submission (a machine cannot report it)"))
    root = config.mlcommons_inference
    if root is not None:
        if not root.is_dir():
            problems.append(("mlcommons_inference", f"{root} does not exist (a checkout of mlcommons/inference)"))
        elif not (root / "tools/submission/submission_checker/main.py").is_file():
            problems.append(("mlcommons_inference", f"{root} has no tools/submission/submission_checker/main.py"))
    tests = compliance_tests(config)
    if tests and root is None:
        problems.append(("mlcommons_inference", f"is required for {', '.join(tests)} "
                                                f"(its compliance/{tests[0]}/audit.config)"))
    return problems


def _engine_problem(benchmark: BenchmarkConfig) -> str | None:
    """Why the backend would refuse an entry of the ``engine:`` mapping, asked of the backend itself (``from_args``,
    the check the harness makes on the node) with the arguments exactly as the node gets them (``--engine-arg
    KEY=VALUE``). Cheap: no backend library is imported. Only what the entries cause is reported here (the backend
    accepts the same call without them); a required argument left out, and vLLM's own engine arguments (known only
    with vLLM installed), are reported by the harness when the run starts."""
    from mlperf_assets.harness.backends import backend_class
    from mlperf_assets.harness.backends.base import BackendArgs, format_key_value, parse_key_values
    from mlperf_assets.harness.errors import HarnessError

    def refusal(engine: dict[str, Any]) -> str | None:
        model_key = BACKEND_ROWS[benchmark.backend].checkpoint_arg
        if model_key and benchmark.checkpoint and model_key not in engine:
            engine = {**engine, model_key: benchmark.checkpoint}
        try:
            as_sent = parse_key_values([format_key_value(str(k), v) for k, v in engine.items()], "--engine-arg")
            backend_class(benchmark.backend).from_args(BackendArgs(engine_args=as_sent))
        except HarnessError as exc:
            return str(exc)
        except (ValueError, TypeError) as exc:
            return f"the {benchmark.backend} backend refuses it: {exc}"
        return None

    if not benchmark.engine:
        return None
    problem = refusal(dict(benchmark.engine))
    return problem if problem is not None and refusal({}) is None else None


def _storage_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """Storage paths the orchestrator could not use, found before anything runs: the DuckDB file must be a file
    (or creatable) and writable; the folders must be folders (or creatable)."""
    s = config.storage
    problems: list[tuple[str, str]] = []
    db_problem = _path_problem(s.duckdb_path, folder=False)
    if db_problem:
        problems.append(("storage.duckdb_path", db_problem))
    for field in ("artifact_root", "report_dir", "dataset_dir"):
        path = getattr(s, field)
        problem = _path_problem(path, folder=True) if path is not None else None
        if problem:
            problems.append((f"storage.{field}", problem))
    for i, node in enumerate(config.nodes):
        if isinstance(node, LocalNode) and node.workdir is not None:
            problem = _path_problem(node.workdir, folder=True)
            if problem:
                problems.append((f"nodes[{i}].workdir", problem))
    return problems


def _path_problem(path: Path, *, folder: bool) -> str | None:
    """Why ``path`` cannot be used as a folder (``folder``) or as the DuckDB file, or None. A path that does not
    exist yet is fine if its nearest existing parent is a folder this process may write in."""
    kind = "a folder" if folder else "a DuckDB file such as results/mlperf.duckdb"
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # not there yet (or below a file: said below)
        st = None
    except OSError as exc:  # a symlink loop, a component that is a file, a name too long
        reason = "a symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        return f"{path} cannot be used: {reason}"
    if st is not None:
        if folder and not statmod.S_ISDIR(st.st_mode):
            return f"{path} is a file, not a folder"
        if folder:
            return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable by this user"
        if statmod.S_ISDIR(st.st_mode):
            return f"{path} is a folder; give {kind}"
        if not statmod.S_ISREG(st.st_mode):
            return f"{path} is not a regular file (a device, pipe or socket); give {kind}"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path} is not writable by this user"
        with open(path, "rb") as f:  # DuckDB opens only its own files (bytes 8-11 "DUCK"), not even an empty one
            if f.read(12)[8:12] != b"DUCK":
                return f"{path} is not a DuckDB database; give a new file name or an existing results store"
        return None
    parent = path.parent
    while True:
        try:
            parent_st = parent.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            if parent == parent.parent:
                return f"{path} cannot be created: no existing parent folder"
            parent = parent.parent
        except OSError as exc:
            reason = "a symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            return f"{path} cannot be created: {parent}: {reason}"
    if not statmod.S_ISDIR(parent_st.st_mode):
        return f"{path} cannot be created: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {parent} is not writable by this user"
    return None


def how_to_supply_dataset() -> str:
    return (
        f"To use a local copy instead, set {DATASET_ENV} to a folder of .story files, an MLCommons cnn_eval.json "
        f"or a .jsonl file of {{id, article, highlights}}, e.g. "
        f"`{DATASET_ENV}=../shared/testdata/cnn_dailymail/stories make demo`; or set dataset.source and "
        "dataset.path in the config."
    )


def detect_dataset_source(path: Path) -> tuple[str, Path]:
    """(source, path) for a local CNN/DM copy: a folder of ``.story`` files, a folder or file ``cnn_eval.json``
    (MLCommons list), a file written by ``prepare-dataset`` (``local``), or a ``.jsonl`` file.
    Raises ValueError with a one-line reason."""
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_dir():
        if any(path.glob("*.story")):
            return "stories", path
        if (path / "cnn_eval.json").is_file():
            return "mlcommons-json", path / "cnn_eval.json"
        jsonl = sorted(path.glob("*.jsonl"))
        if len(jsonl) == 1:
            return "jsonl", jsonl[0]
        raise ValueError(f"{path} holds neither .story files, nor cnn_eval.json, nor exactly one .jsonl file")
    if path.suffix == ".jsonl":
        return "jsonl", path
    if path.suffix == ".json":
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"["):
            return "mlcommons-json", path
        if head.startswith(b"{"):
            return "local", path
        raise ValueError(f"{path} is not a JSON list (cnn_eval.json) or a prepared dataset")
    raise ValueError(f"cannot tell the format of {path}: expected a .story folder, a .json or a .jsonl file")


def config_path(path: str | os.PathLike | None = None) -> Path:
    """The config file to use: ``path``, else ``$MLPERF_DAGSTER_CONFIG``, else the embedded default."""
    if path:
        return Path(path)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def _absolute(path: Path) -> Path:
    """``path.resolve()``, or the plain absolute path where resolving fails (a symlink loop raises RuntimeError in
    Python 3.11, a vanished working folder OSError): the file's own read then reports the problem in one line."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def _display(path: Path) -> str:
    try:
        return str(_absolute(path).relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


# --- reading the YAML: what yaml.safe_load accepts silently or crashes on is refused in one line ----------

MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; more is the wrong file (or /dev/zero)
MAX_NESTING = 64  # the deepest real config (pod_spec_overrides) nests ~12 levels; PyYAML recurses ~3 frames a level
MAX_VALUES = 100_000  # values after expanding aliases (a "billion laughs" file stops here)


class _YAMLRefused(Exception):
    """A YAML document PyYAML would load (or crash on), refused: ``problems`` are ``<field path or line N>: <why>``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(problems[0])


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with a nesting limit checked while composing (PyYAML recurses once per level, so a
    file of 5,000 ``[`` is a RecursionError otherwise)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                line = self.peek_event().start_mark.line + 1
                raise _YAMLRefused([f"line {line}: nested more than {MAX_NESTING} levels deep"])
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _key_text(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _check_yaml_tree(root: yaml.Node) -> list[str]:
    """Duplicate keys in any mapping (``field path: key given twice (lines A and B)``), and alias trees that loop
    or expand past :data:`MAX_VALUES` values or :data:`MAX_NESTING` levels. Walks the composed node graph,
    where every key keeps its line; each distinct node once."""
    problems: list[tuple[int, str]] = []  # (line, problem)
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once done
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        if done:
            on_path.discard(id(node))
            children = _children(node, path)
            values = 1 + sum(sizes[id(c)][0] for c, _ in children)
            depth = 1 + max((sizes[id(c)][1] for c, _ in children), default=0)
            sizes[id(node)] = (values, depth)
            where = path or f"line {node.start_mark.line + 1}"
            if values > MAX_VALUES:
                raise _YAMLRefused([f"{where}: expands to more than {MAX_VALUES:,} values (YAML aliases)"])
            if depth > MAX_NESTING:
                raise _YAMLRefused([f"{where}: nested more than {MAX_NESTING} levels deep (YAML aliases)"])
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            where = path or f"line {node.start_mark.line + 1}"
            raise _YAMLRefused([f"{where}: refers to itself (a recursive YAML alias)"])
        on_path.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                text = _key_text(key)
                if text is None or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                if (key.tag, text) in first:
                    where = f"{path}.{text}" if path else text
                    earlier = first[key.tag, text]
                    lines = f"lines {earlier} and {line}" if earlier != line else f"both on line {line}"
                    problems.append((line, f"{where}: key given twice ({lines}); YAML would keep only the last, "
                                           "so remove one"))  # fmt: skip
                else:
                    first[key.tag, text] = line
        stack.append((node, path, True))
        for child, child_path in _children(node, path):
            stack.append((child, child_path, False))
    return [problem for _, problem in sorted(problems)]


def _children(node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
    if isinstance(node, yaml.SequenceNode):
        return [(c, f"{path}[{i}]") for i, c in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out = []
        for key, value in node.value:
            text = _key_text(key)
            out.append((key, path))
            out.append((value, f"{path}.{text}" if path and text is not None else (text or path)))
        return out
    return []


def _load_yaml(text: str) -> Any:
    """The document in ``text`` (None if empty). Raises ``yaml.YAMLError``, or :class:`_YAMLRefused` listing every
    duplicate key (or the nesting / alias problem)."""
    loader = _ConfigLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        duplicates = _check_yaml_tree(root)
        if duplicates:
            raise _YAMLRefused(duplicates)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def parse_config(text: str, source_path: Path, *, dataset_override: str | None = None) -> MlperfConfig:
    """Validate a config file's text; relative paths resolve against ``source_path``'s folder."""
    shown = _display(source_path)
    try:
        raw = _load_yaml(text)
    except _YAMLRefused as exc:
        raise ConfigError([f"{shown}: {problem}" for problem in exc.problems]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{shown}: {where}invalid YAML: {problem}"]) from None
    if raw is None:
        raise ConfigError([f"{shown}: the file is empty; expected a mapping with nodes, benchmark, dataset, storage"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{shown}: the top level must be a mapping (nodes:, benchmark:, ...), got {_describe(raw)}"])
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError([f"{shown}: top-level key {bad_keys[0]!r} must be a string"])
    try:
        config = MlperfConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        errors = exc.errors(include_url=False)
        suggested = {
            _format_loc(tuple(e["loc"])[:-1] + (m.group(1),))
            for e in errors
            if e["type"] == "extra_forbidden"
            for m in [re.search(r"did you mean '([^']+)'", _message(e, raw)[1])]
            if m
        }
        for err in errors:
            where, msg = _message(err, raw)
            if err["type"] == "missing" and where in suggested:
                continue  # reported as the misspelt key
            line = f"{shown}: {where}: {msg}"
            if line not in lines:
                lines.append(line)
        raise ConfigError(lines) from None
    config.source_path = _absolute(source_path)
    _resolve_paths(config, config.source_path.parent)
    if dataset_override:
        try:
            source, path = detect_dataset_source(_absolute(Path(os.path.expanduser(dataset_override))))
        except (ValueError, OSError) as exc:
            raise ConfigError([f"{DATASET_ENV}={dataset_override}: {exc}"]) from None
        config.dataset = config.dataset.model_copy(update={"source": source, "path": path})
        config.dataset_overridden_by = f"{DATASET_ENV}={dataset_override}"
    apply_profile(config)
    problems = _cross_checks(config, raw)
    if problems:
        raise ConfigError([f"{shown}: {where}: {msg}" for where, msg in problems])
    return config


def load_config(
    path: str | os.PathLike | None = None,
    *,
    use_env_dataset: bool = True,
    dataset_override: str | None = None,
) -> MlperfConfig:
    """Load and validate a config file (see :func:`config_path`), applying ``dataset_override`` or else
    ``$MLPERF_DAGSTER_DATASET`` (unless ``use_env_dataset`` is false).

    Raises :class:`ConfigError` (one line per problem) for anything wrong, including a missing file.
    """
    file = config_path(path)
    origin = "" if path else (f" (from ${CONFIG_ENV})" if os.environ.get(CONFIG_ENV) else "")
    text = read_config_text(file, origin)
    override = dataset_override or (os.environ.get(DATASET_ENV) if use_env_dataset else None)
    return parse_config(text, file, dataset_override=override or None)


def read_config_text(file: Path, origin: str = "") -> str:
    """The text of a config file; :class:`ConfigError` with one line if it is missing, a folder, unreadable, a
    symlink loop, larger than :data:`MAX_CONFIG_BYTES` (or endless, like ``/dev/zero``) or not UTF-8 text."""
    shown = _display(file)
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{shown}: no such config file{origin}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{shown}: is a folder, not a config file{origin}"]) from None
    except PermissionError:
        raise ConfigError([f"{shown}: cannot read: permission denied{origin}"]) from None
    except OSError as exc:
        reason = "a symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise ConfigError([f"{shown}: cannot read: {reason}{origin}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [f"{shown}: is larger than {MAX_CONFIG_BYTES >> 20} MiB; a config file is a few KB: is this the right file?"]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{shown}: is not a UTF-8 text file (offset {exc.start}); a config file is YAML text"]
        ) from None
