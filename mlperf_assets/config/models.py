"""The config file's models, section by section: storage, dataset, benchmark (with its scenarios' LoadGen settings),
schedule, capacity search, submission, and :class:`MlperfConfig`, the whole file. The node models are in
:mod:`mlperf_assets.config.nodes`. Choices come from the harness's registries (benchmarks.py, backends/__init__.py).
Pure: this module imports nothing of the planner; Dagster only inside :func:`_dagster_accepts_cron`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, ValidationInfo, create_model, field_validator

from mlperf_assets.config.fields import ConfigModel, NonNegativeInt, PositiveFloat, PositiveInt, resolve_path
from mlperf_assets.config.endpoints import EndpointsConfig
from mlperf_assets.config.nodes import NodeConfig
from mlperf_assets.harness.backends import BACKEND_NAMES, BASELINE_BACKENDS
from mlperf_assets.harness.benchmarks import BENCHMARK_NAMES, DEFAULT_BENCHMARK, LG_MODEL_NAMES, SCENARIOS
from mlperf_assets.harness.benchmarks import HF_DATASET as _HF_DATASET
from mlperf_assets.harness.compliance import COMPLIANCE_NAMES
from mlperf_assets.harness.settings import LOADGEN_SETTINGS, MAX_SCHEDULED_QUERIES, validate_settings

PARALLELISM = ("auto", "data", "tensor")
BENCHMARKS = BENCHMARK_NAMES
BACKENDS = BACKEND_NAMES
DATASET_SOURCES = ("huggingface", "mlcommons-json", "stories", "jsonl", "local")
HF_DATASET = _HF_DATASET[0]  # "abisee/cnn_dailymail"


class StorageConfig(ConfigModel):
    """Where results go on the orchestrator."""

    artifact_root: Path = Path("results/artifacts")  # collected run folders: <node>/<scenario>/<run_id>/<mode>
    duckdb_path: Path = Path("results/mlperf.duckdb")  # the results store
    report_dir: Path = Path("results/report")  # report.md (and, later, charts and dashboard)
    dataset_dir: Path | None = None  # prepared dataset files; default <artifact_root>/../datasets

    @property
    def submission_root(self) -> Path:
        """Where ``submission_package`` (and the demo) write one submission tree per node: <artifact_root>/../submission."""
        return self.artifact_root.parent / "submission"


class DatasetConfig(ConfigModel):
    """The CNN/DailyMail validation set and how to get it."""

    source: Literal[DATASET_SOURCES] = "huggingface"
    path: Path | None = None  # required unless source is huggingface
    max_samples: PositiveInt | None = None  # None = all (13,368 for the full set)
    tokenizer: str | None = None  # "byte" or an HF name/path; default: byte for baselines, else the checkpoint
    seed: NonNegativeInt | None = None  # sampling seed when max_samples is below the source size


class _ScenarioSettingsBase(ConfigModel):
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


class ScenariosConfig(ConfigModel):
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


class BenchmarkConfig(ConfigModel):
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


class ScheduleConfig(ConfigModel):
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


MAX_SEARCH_FACTOR = 10.0  # search.growth and start_fraction at most: a bigger step jumps past the capacity sought
MAX_SEARCH_DURATION_S = 86_400  # a probe or confirmation lasts at most a day


def search_max_qps(duration_s: float) -> float:
    """The highest rate a search run of ``duration_s`` may probe: LoadGen must hold its schedule."""
    return MAX_SCHEDULED_QUERIES / duration_s


def _fraction_pct(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 100:
        raise ValueError(f"must be a percentage >= 0 and < 100, got {value!r}")
    return float(value)


class SearchConfig(ConfigModel):
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
        if value > MAX_SEARCH_FACTOR:
            raise ValueError(f"must be at most {MAX_SEARCH_FACTOR:g} (x{value:g} per passing probe skips the "
                             f"capacity it looks for), got {value!r}")
        return value

    @field_validator("start_fraction")
    @classmethod
    def _start_fraction(cls, value: float) -> float:
        if value > MAX_SEARCH_FACTOR:
            raise ValueError(f"must be at most {MAX_SEARCH_FACTOR:g} (a first probe at {value:g} x the estimate "
                             f"ignores it), got {value!r}")
        return value

    @field_validator("probe_duration_s", "confirm_duration_s", "offline_probe_duration_s")
    @classmethod
    def _duration(cls, value: float) -> float:
        if value > MAX_SEARCH_DURATION_S:
            raise ValueError(f"must be at most {MAX_SEARCH_DURATION_S:,} s (a day; MLPerf's runs last 600 s), "
                             f"got {value!r}")
        return value

    @field_validator("min_queries", "offline_probe_queries")
    @classmethod
    def _queries(cls, value: int) -> int:
        if value > MAX_SCHEDULED_QUERIES:
            raise ValueError(f"must be at most {MAX_SCHEDULED_QUERIES:,} (LoadGen generates a run's whole "
                             f"schedule up front, ~1 KiB a query), got {value!r}")
        return value

    @field_validator("start_qps", "min_qps")
    @classmethod
    def _rate(cls, value: float | None, info: ValidationInfo) -> float | None:
        """A rate whose probe or confirmation LoadGen could hold (durations are fields above these two)."""
        durations = [info.data[k] for k in ("probe_duration_s", "confirm_duration_s") if k in info.data]
        if value is None or not durations:
            return value
        top = search_max_qps(max(durations))
        if value > top:
            raise ValueError(f"must be at most {top:,.2f} QPS: {value:g} QPS x the {max(durations):g} s "
                             f"{'confirmation' if max(durations) == info.data.get('confirm_duration_s') else 'probe'} "
                             f"schedules more than the {MAX_SCHEDULED_QUERIES:,} queries a run can hold (LoadGen "
                             "generates the whole schedule up front, ~1 KiB a query)")
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


def _folder_name_problem(value: str, *, strict: bool) -> None:
    """A submission name that becomes a folder of the tree: refused (ValueError, one line) when blank, '.' or '..',
    hidden, or holding a path separator; ``strict`` (the submitter, whose folder must equal it): also any character
    a folder name of the tree cannot hold (letters, digits, '.', '_' and '-' only)."""
    if not value.strip():
        raise ValueError("is blank")
    if "/" in value or "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{value!r} holds a path separator or control character: it names a folder of the tree")
    if value.strip().startswith("."):
        raise ValueError(f"{value!r} starts with '.': it names a folder of the tree ('.', '..' and hidden names "
                         "are not folder names the checker reads)")
    if strict and not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise ValueError(f"{value!r} must be letters, digits, '.', '_' or '-' only (the checker requires the "
                         "tree's <division>/<submitter>/ folder to be this name)")


class SubmissionConfig(ConfigModel):
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

    @field_validator("submitter", mode="after")
    @classmethod
    def _submitter(cls, value: str | None) -> str | None:
        # The checker requires the tree's <division>/<submitter>/ folder to be the systems JSON's submitter.
        if value is not None and value != "":
            _folder_name_problem(value, strict=True)
        return value

    @field_validator("system_name", mode="after")
    @classmethod
    def _system_name(cls, value: str | None) -> str | None:
        if value is not None and value != "":
            _folder_name_problem(value, strict=False)
        return value

    @field_validator("system", mode="after")
    @classmethod
    def _system(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if item is not None and not isinstance(item, (str, int, float)):
                shown, hint = (item.isoformat(), f"; quote it: '{item.isoformat()}'") if hasattr(item, "isoformat") \
                    else (repr(item), "")
                raise ValueError(f"{key}: {shown} is a {type(item).__name__}, not a string, number or boolean "
                                 f"(the systems JSON holds only those){hint}")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{key}: {item} is not a finite number (JSON has no NaN or infinity)")
        return value

    def missing_fields(self) -> list[str]:
        return [f for f in MACHINE_UNKNOWABLE if getattr(self, f) in (None, "") and f not in self.system]


class MlperfConfig(ConfigModel):
    """A whole config file. ``source_path`` is the file it came from (not part of the file)."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    nodes: list[NodeConfig]
    schedule: ScheduleConfig | None = None
    search: SearchConfig = Field(default_factory=SearchConfig)  # capacity search (max_qps_search)
    submission: SubmissionConfig | None = None  # present: submission trees can be built (submission_package)
    mlcommons_inference: Path | None = None  # the user's mlcommons/inference checkout (checker, TEST06 audit.config)
    endpoints: EndpointsConfig | None = None  # an MLPerf Endpoints curve (config/endpoints.py)

    source_path: Path | None = Field(default=None, exclude=True)
    dataset_overridden_by: str | None = Field(default=None, exclude=True)  # "MLPERF_DAGSTER_DATASET=..." if so

    @field_validator("nodes", mode="after")
    @classmethod
    def _nodes(cls, nodes: list) -> list:
        if not nodes:
            raise ValueError("needs at least one node")
        return nodes

    # -- convenience ---------------------------------------------------------------------------------

    def node(self, name: str) -> NodeConfig:
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

    def resolve_paths(self, base: Path) -> None:
        """Every orchestrator-side path relative to ``base`` (the config file's folder), ``~`` expanded; each node
        resolves its own fields."""
        s = self.storage
        s.artifact_root = resolve_path(base, s.artifact_root)
        s.duckdb_path = resolve_path(base, s.duckdb_path)
        s.report_dir = resolve_path(base, s.report_dir)
        s.dataset_dir = resolve_path(base, s.dataset_dir)
        self.dataset.path = resolve_path(base, self.dataset.path)
        self.mlcommons_inference = resolve_path(base, self.mlcommons_inference)
        if self.endpoints is not None:
            self.endpoints.resolve_paths(base)
        for node in self.nodes:
            node.resolve_paths(base, s.artifact_root)
