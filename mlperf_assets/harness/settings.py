"""LoadGen settings: model names, user.conf generation and merging, and the one ``FromConfig`` call per process.

Units follow LoadGen config files: durations and latencies in **ms**, rates in QPS. The generated lines use the exact
``<model>.<scenario>.<key>`` form, the most specific LoadGen looks up, and come after any copied ``--user-conf`` lines
(LoadGen keeps the last value of a repeated key), so a setting given on the command line always wins.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import SettingsError

SCENARIOS = ("Offline", "Server", "SingleStream")
MODES = ("performance", "accuracy")
# LoadGen model name -> the benchmark (prompt template and token dtype) it belongs to.
LG_MODEL_NAMES = {
    "llama3_1-8b": "llama3.1-8b",
    "llama3_1-8b-edge": "llama3.1-8b-edge",
    "llama3_1-8b-interactive": "llama3.1-8b",
    "gptj": "gptj",
}
DEFAULT_LG_MODEL_NAME = {"llama3.1-8b": "llama3_1-8b", "llama3.1-8b-edge": "llama3_1-8b-edge", "gptj": "gptj"}
# performance_sample_count_override in the mlperf.conf compiled into LoadGen.
MLPERF_CONF_PERFORMANCE_SAMPLE_COUNT = {
    "llama3_1-8b": 13368,
    "llama3_1-8b-edge": 5000,
    "llama3_1-8b-interactive": 13368,
    "gptj": 13368,
}
_CONF_LINE = re.compile(r"^\s*([^\s.=]+)\.([^\s.=]+)\.([^\s.=]+)\s*=\s*(\S+)\s*$")
# Keys LoadGen reads from user.conf (test_settings_internal.cc); anything else is silently ignored by LoadGen.
KNOWN_KEYS = {
    "mode", "min_duration", "max_duration", "min_query_count", "max_query_count", "target_qps", "target_latency",
    "target_latency_percentile", "samples_per_query", "max_async_queries", "coalesce_queries",
    "performance_sample_count_override", "accuracy_sample_count_override", "sample_concatenate_permutation",
    "accuracy_log_rng_seed", "accuracy_log_probability", "accuracy_log_sampling_target", "use_token_latencies",
    "infer_token_latencies", "token_latency_scaling_factor", "ttft_latency", "tpot_latency", "test05",
    "test05_qsl_rng_seed", "test05_sample_index_rng_seed", "test05_schedule_rng_seed", "print_timestamps",
    "performance_issue_unique", "performance_issue_same", "performance_issue_same_index", "qsl_rng_seed",
    "sample_index_rng_seed", "schedule_rng_seed", "server_num_issue_query_threads",
}


@dataclass(frozen=True)
class RunSettings:
    """What the command line says about the LoadGen test (None = leave LoadGen's / mlperf.conf's value)."""

    lg_model_name: str
    scenario: str
    mode: str = "performance"
    target_qps: float | None = None
    target_latency_ms: float | None = None  # Server: end-to-end latency bound; SingleStream: expected latency
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None
    min_query_count: int | None = None
    max_query_count: int | None = None
    ttft_latency_ms: float | None = None
    tpot_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise SettingsError(f"unknown scenario {self.scenario!r}: expected one of {', '.join(SCENARIOS)}")
        if self.mode not in MODES:
            raise SettingsError(f"unknown mode {self.mode!r}: expected one of {', '.join(MODES)}")
        check_lg_model_name(self.lg_model_name)
        for name in ("target_qps", "target_latency_ms", "ttft_latency_ms", "tpot_latency_ms"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v <= 0):
                raise SettingsError(f"--{name.replace('_', '-')} must be a positive number (got {v})")
        for name in ("min_duration_ms", "max_duration_ms", "min_query_count", "max_query_count"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise SettingsError(f"--{name.replace('_', '-')} must be >= 0 (got {v})")


def check_lg_model_name(name: str, benchmark: str | None = None) -> str:
    """LoadGen silently applies nothing for an unknown model name, so refuse it here."""
    if name not in LG_MODEL_NAMES:
        raise SettingsError(f"unknown LoadGen model name {name!r}: expected one of {', '.join(LG_MODEL_NAMES)}")
    if benchmark is not None and (LG_MODEL_NAMES[name] == "gptj") != (benchmark == "gptj"):
        raise SettingsError(f"LoadGen model name {name!r} does not fit benchmark {benchmark!r}")
    return name


def default_lg_model_name(benchmark: str) -> str:
    try:
        return DEFAULT_LG_MODEL_NAME[benchmark]
    except KeyError:
        raise SettingsError(f"unknown benchmark {benchmark!r}: expected one of {', '.join(DEFAULT_LG_MODEL_NAME)}") from None


def _fmt(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def generated_lines(settings: RunSettings, performance_sample_count_override: int | None = None) -> list[str]:
    """user.conf lines for the settings given on the command line (config units: ms, QPS)."""
    prefix = f"{settings.lg_model_name}.{settings.scenario}."
    pairs: list[tuple[str, float | int]] = []
    for key, value in (
        ("target_qps", settings.target_qps),
        ("target_latency", settings.target_latency_ms),
        ("min_duration", settings.min_duration_ms),
        ("max_duration", settings.max_duration_ms),
        ("min_query_count", settings.min_query_count),
        ("max_query_count", settings.max_query_count),
        ("ttft_latency", settings.ttft_latency_ms),
        ("tpot_latency", settings.tpot_latency_ms),
        ("performance_sample_count_override", performance_sample_count_override),
    ):
        if value is not None:
            pairs.append((key, value))
    return [f"{prefix}{key} = {_fmt(value)}" for key, value in pairs]


def read_user_conf(path: str | Path) -> str:
    """A user.conf's text, checked line by line (LoadGen only says -EINVAL, without a line)."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"--user-conf {path} does not exist" if not path.exists() else f"--user-conf {path} is not a file")
    text = path.read_text(encoding="utf-8")
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _CONF_LINE.match(line)
        if not m:
            raise SettingsError(f"{path}:{n}: expected 'model.scenario.key = number', got {raw.strip()!r}")
        model, scenario, key, value = m.groups()
        if model != "*" and model not in LG_MODEL_NAMES:
            raise SettingsError(f"{path}:{n}: unknown LoadGen model name {model!r} (LoadGen would ignore the line)")
        if scenario != "*" and scenario not in (*SCENARIOS, "MultiStream"):
            raise SettingsError(f"{path}:{n}: unknown scenario {scenario!r}")
        if key not in KNOWN_KEYS:
            raise SettingsError(f"{path}:{n}: unknown key {key!r} (LoadGen would ignore it)")
        if not _is_number(value):
            raise SettingsError(f"{path}:{n}: value {value!r} is not a number")
    return text


def _is_number(value: str) -> bool:
    for parse in (lambda v: int(v, 0), int, float):
        try:
            parse(value)
            return True
        except ValueError:
            pass
    return False


@dataclass(frozen=True)
class UserConf:
    text: str
    performance_sample_count: int
    performance_sample_count_note: str | None


def build_user_conf(settings: RunSettings, dataset_size: int, user_conf: str | Path | None = None) -> UserConf:
    """The user.conf for this run: the copy of ``user_conf`` (if any), then the generated lines."""
    copied = read_user_conf(user_conf) if user_conf else ""
    official = MLPERF_CONF_PERFORMANCE_SAMPLE_COUNT[settings.lg_model_name]
    override = None
    note = None
    psc = official
    if dataset_size < official:
        override = psc = dataset_size
        note = (f"dataset has {dataset_size} samples, fewer than the {official} mlperf.conf sets for "
                f"{settings.lg_model_name}: performance_sample_count_override = {dataset_size} (not a submission run)")
    parts = []
    if copied:
        parts += [f"# copied from {user_conf}", copied.rstrip("\n"), ""]
    parts.append("# generated by the mlperf-dagster harness from its command line (later lines win)")
    parts += generated_lines(settings, override)
    return UserConf("\n".join(parts) + "\n", psc, note)


_from_config_done = False


def load_test_settings(user_conf_path: str | Path, settings: RunSettings):
    """``TestSettings`` from the built-in mlperf.conf plus ``user_conf_path``: exactly one ``FromConfig`` per process
    (a second call silently drops mlperf.conf)."""
    global _from_config_done
    import mlperf_loadgen as lg

    if _from_config_done:
        raise RuntimeError("TestSettings.FromConfig was already called in this process: run one LoadGen test per process")
    ts = lg.TestSettings()
    _from_config_done = True
    rc = ts.FromConfig(str(user_conf_path), settings.lg_model_name, settings.scenario)
    if rc != 0:
        raise SettingsError(f"LoadGen rejected {user_conf_path} (FromConfig returned {rc})")
    ts.scenario = getattr(lg.TestScenario, settings.scenario)
    ts.mode = lg.TestMode.AccuracyOnly if settings.mode == "accuracy" else lg.TestMode.PerformanceOnly
    return ts


def effective_settings(ts) -> dict[str, Any]:
    """Every TestSettings attribute after FromConfig (latencies in ns, as LoadGen holds them)."""
    out: dict[str, Any] = {}
    for name in dir(ts):
        if name.startswith("_") or name == "FromConfig":
            continue
        value = getattr(ts, name)
        if callable(value):
            continue
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = getattr(value, "name", str(value))
    return out


def as_dict(settings: RunSettings) -> dict[str, Any]:
    return asdict(settings)
