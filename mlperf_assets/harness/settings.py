"""LoadGen settings: the one table of user.conf keys this platform passes through, their validation, user.conf
generation and merging, and the one ``FromConfig`` call per process.

A scenario setting travels as one mapping, keyed by LoadGen's own user.conf keys, from the config file to the
node and into user.conf: ``ScenarioSettings`` (config/models.py) and ``RunSpec`` (harness/args.py) validate it with
:func:`validate_settings`; the runner renders it as the harness flags :func:`settings_argv` generates; the harness
CLI's flags are generated from the same table (:func:`add_settings_cli_args`) and its lines written by
:func:`generated_lines`. Adding a LoadGen setting is one row in :data:`LOADGEN_SETTINGS`.

Units follow LoadGen config files: durations and latencies in **ms**, rates in QPS, percentiles in %. Where a key's
unit is not in its name, config files and the CLI spell it with the unit (``min_duration_ms``, ``--ttft-latency-ms``);
both spellings are accepted wherever a mapping is validated. The generated lines use the exact
``<model>.<scenario>.<key>`` form, the most specific LoadGen looks up, and come after any copied ``--user-conf``
lines (LoadGen keeps the last value of a repeated key), so a setting given on the command line always wins.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .benchmarks import BENCHMARKS, LG_MODEL_NAMES, LOADGEN_MODELS, MODES, SCENARIOS
from .errors import SettingsError
from .files import NotUTF8, decode_utf8


# ------------------------------------------------------------------------------------------------- value kinds
def positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a number > 0, got {value!r}")
    return float(value)


def non_negative_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be an integer >= 0, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"must be true or false (1 or 0), got {value!r}")


def _percent(value: Any) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 <= value <= 100:
        raise ValueError(f"must be a percentage between 0 and 100, got {value!r}")
    return float(value)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class _Kind:
    check: Callable[[Any], Any]  # value from YAML/JSON/Python -> validated value; ValueError("must be ...")
    python_type: type  # the validated value's type (the config model's field type)
    unit: str
    metavar: str

    def from_text(self, text: str) -> Any:
        """A command-line value, checked (argparse reports the error with the flag)."""
        if self.python_type is bool:
            low = text.strip().lower()
            if low not in _TRUE + _FALSE:
                raise argparse.ArgumentTypeError(f"must be true or false (1 or 0), got {text!r}")
            return low in _TRUE
        try:
            value = self.python_type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if self.python_type is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            return self.check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


RATE = _Kind(positive_number, float, "QPS", "QPS")
LATENCY = _Kind(positive_number, float, "ms", "MS")
DURATION = _Kind(non_negative_int, int, "ms", "MS")
COUNT = _Kind(non_negative_int, int, "", "N")
FLAG = _Kind(_flag, bool, "", "BOOL")
PERCENT = _Kind(_percent, float, "percent", "PCT")


@dataclass(frozen=True)
class LoadGenSetting:
    """One user.conf key LoadGen reads (``test_settings_internal.cc``), as this platform passes it through."""

    key: str  # LoadGen's user.conf key
    kind: _Kind
    help: str
    unit_alias: bool = False  # spelled ``<key>_<unit>`` in config files and on the CLI (min_duration_ms)
    common: bool = False  # listed with the main settings in --help (the others under "other LoadGen settings")

    @property
    def name(self) -> str:
        """The spelling of config files (``ScenarioSettings`` fields) and, with dashes, of the CLI flag."""
        return f"{self.key}_{self.kind.unit}" if self.unit_alias else self.key

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "setting__" + self.key

    def check(self, value: Any) -> Any:
        """The validated value; ValueError("must be ...") otherwise (the config prefixes file and field)."""
        return self.kind.check(value)


_ROWS = (
    LoadGenSetting("target_qps", RATE, "Server: Poisson arrival rate; Offline: expected QPS (sizes the single query)",
                   common=True),
    LoadGenSetting("target_latency", LATENCY, "Server: end-to-end latency bound (gpt-j); SingleStream: expected "
                   "latency (keep it small for a fast backend, or LoadGen runs out of queries)",
                   unit_alias=True, common=True),
    LoadGenSetting("min_duration", DURATION, "minimum test duration (mlperf.conf: 600000)",
                   unit_alias=True, common=True),
    LoadGenSetting("max_duration", DURATION, "maximum test duration (0: no limit)", unit_alias=True, common=True),
    LoadGenSetting("min_query_count", COUNT, "minimum number of queries", common=True),
    LoadGenSetting("max_query_count", COUNT, "maximum number of queries (0: no limit)", common=True),
    LoadGenSetting("ttft_latency", LATENCY, "Server: time-to-first-token p99 limit", unit_alias=True, common=True),
    LoadGenSetting("tpot_latency", LATENCY, "Server: time-per-output-token p99 limit", unit_alias=True, common=True),
    LoadGenSetting("target_latency_percentile", PERCENT,
                   "Server/SingleStream: percentile the latency bound applies to"),
    LoadGenSetting("max_async_queries", COUNT, "Server: queries in flight at most (0: no limit)"),
    LoadGenSetting("coalesce_queries", FLAG, "Server: merge queries that are due at once"),
    LoadGenSetting("performance_sample_count_override", COUNT, "samples held in memory for performance runs (the "
                   "harness lowers it to the dataset size when the dataset is smaller)"),
    LoadGenSetting("accuracy_sample_count_override", COUNT, "samples an accuracy run issues (0: all)"),
    LoadGenSetting("sample_concatenate_permutation", FLAG, "issue samples as concatenated permutations"),
    LoadGenSetting("use_token_latencies", FLAG, "judge Server runs by TTFT/TPOT (mlperf.conf sets it per model)"),
    LoadGenSetting("infer_token_latencies", FLAG, "infer token counts from token_latency_scaling_factor"),
    LoadGenSetting("token_latency_scaling_factor", COUNT, "tokens per sample assumed by infer_token_latencies"),
    LoadGenSetting("accuracy_log_rng_seed", COUNT, "seed of which performance responses are logged"),
    LoadGenSetting("accuracy_log_sampling_target", COUNT, "responses to log in performance mode"),
    LoadGenSetting("print_timestamps", FLAG, "log issue and completion timestamps"),
    LoadGenSetting("performance_issue_unique", FLAG, "compliance TEST04: issue every sample once"),
    LoadGenSetting("performance_issue_same", FLAG, "compliance TEST04: issue one sample repeatedly"),
    LoadGenSetting("performance_issue_same_index", COUNT, "compliance TEST04: the sample issue_same repeats"),
)
# The keys LoadGen 6 honours in a user.conf for the scenarios run here (tests/harness/test_loadgen_settings.py checks
# each against LoadGen). Not listed, because LoadGen ignores them there: the RNG seeds and the TEST05 switches (mlperf.conf
# and audit.config only), server_num_issue_query_threads, accuracy_log_probability, and MultiStream's keys.
LOADGEN_SETTINGS: dict[str, LoadGenSetting] = {row.key: row for row in _ROWS}
# Every spelling a mapping may use: the LoadGen key and the config/CLI name.
_BY_NAME: dict[str, LoadGenSetting] = {**{row.name: row for row in _ROWS}, **LOADGEN_SETTINGS}
# Keys a copied --user-conf may hold: the table plus ``mode``, which the harness sets from --mode after FromConfig.
KNOWN_KEYS = frozenset(LOADGEN_SETTINGS) | {"mode"}


def setting_names() -> list[str]:
    """The config/CLI spellings, in table order."""
    return [row.name for row in _ROWS]


def validate_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The one validation of a scenario-settings mapping (either spelling of each key; None values dropped).

    Returns ``{LoadGen key: validated value}`` in table order; raises :class:`SettingsError` (also a ValueError)
    naming the setting as it was given."""
    unknown = sorted(str(k) for k in settings if k not in _BY_NAME)
    if unknown:
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, setting_names(), 1))
                 else repr(k) for k in unknown]
        raise SettingsError(f"unknown scenario setting(s) {', '.join(hints)}; known: {', '.join(setting_names())}")
    given: dict[str, tuple[str, Any]] = {}
    for name, value in settings.items():
        if value is None:
            continue
        row = _BY_NAME[name]
        if row.key in given:
            raise SettingsError(f"scenario settings {given[row.key][0]} and {name} are the same LoadGen key {row.key}")
        try:
            given[row.key] = (name, row.check(value))
        except ValueError as exc:
            raise SettingsError(f"scenario setting {name}: {exc}") from None
    return {row.key: given[row.key][1] for row in _ROWS if row.key in given}


def format_value(value: Any) -> str:
    """A setting's value as user.conf and the harness CLI write it: ``12.5``, ``1000``, ``1`` for true."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def settings_argv(settings: Mapping[str, Any]) -> list[str]:
    """Harness CLI arguments for a settings mapping: ``["--target-qps", "4.5", "--min-duration-ms", "200"]``."""
    argv: list[str] = []
    for key, value in validate_settings(settings).items():
        argv += [LOADGEN_SETTINGS[key].flag, format_value(value)]
    return argv


def add_settings_cli_args(parser: argparse.ArgumentParser) -> None:
    """One flag per table row (config units), the common ones first."""
    main = parser.add_argument_group("LoadGen settings (written to user.conf; config units)")
    main.add_argument("--user-conf", default=None, help="a user.conf to copy first; the flags below override it")
    other = parser.add_argument_group("other LoadGen settings (user.conf keys; rarely needed)")
    for row in _ROWS:
        unit = f" [{row.kind.unit}]" if row.kind.unit and not row.unit_alias else ""
        (main if row.common else other).add_argument(row.flag, dest=row.dest, type=row.kind.from_text, default=None,
                                                     metavar=row.kind.metavar, help=row.help + unit)


def settings_from_cli(ns: argparse.Namespace) -> dict[str, Any]:
    """The flags :func:`add_settings_cli_args` added, by LoadGen key (None = not given); validate with
    :func:`validate_settings`."""
    return {row.key: getattr(ns, row.dest, None) for row in _ROWS}


# ------------------------------------------------------------------------------------------ schedule size
# LoadGen generates a test's whole schedule before it issues the first query and holds it, as the harness holds a
# record per sample, until the test ends: about 500 bytes per query (measured: LoadGen 6.0, Server, replay backend;
# 150 per sample Offline). A rate without a bound asks for billions of queries and ends in std::bad_alloc.
BYTES_PER_QUERY = 1024  # the measured ~500 B, doubled for headroom
# 10 GiB at BYTES_PER_QUERY, what any GPU server holds; 100 x the longest real LLM run (a 600 s Offline run at
# hundreds of samples/s schedules ~100,000)
MAX_SCHEDULED_QUERIES = 10_000_000
MLPERF_MIN_DURATION_MS = 600_000  # mlperf.conf's min_duration, every scenario: what an absent min_duration means
_QUERY_SLACK = {"Offline": 1.1, "SingleStream": 2.0}  # LoadGen: Offline's 10 % slack; SingleStream generates 2 x


def scheduled_queries(scenario: str, settings: Mapping[str, Any]) -> float:
    """About how many queries LoadGen generates for ``settings`` (LoadGen keys, config units; Offline: the samples of
    its one query): the rate (target_qps; SingleStream 1 / target_latency) x min_duration (mlperf.conf's 600 s when
    absent) x LoadGen's slack, at least min_query_count. A rate not given counts 0 (mlperf.conf's are small)."""
    if scenario == "SingleStream":
        latency = settings.get("target_latency")
        rate = 1000.0 / latency if latency else 0.0
    else:
        rate = settings.get("target_qps") or 0.0
    duration_s = (settings.get("min_duration") if settings.get("min_duration") is not None
                  else MLPERF_MIN_DURATION_MS) / 1000.0
    return max(rate * duration_s * _QUERY_SLACK.get(scenario, 1.0), float(settings.get("min_query_count") or 0))


def schedule_problem(scenario: str, settings: Mapping[str, Any], limit: int = MAX_SCHEDULED_QUERIES,
                     why: str = "LoadGen generates the whole schedule up front, ~1 KiB a query") -> str | None:
    """Why LoadGen could not hold the schedule ``settings`` ask for (more than ``limit`` queries), or None."""
    queries = scheduled_queries(scenario, settings)
    if queries <= limit:
        return None
    rate = (f"target_latency {settings['target_latency']:g} ms" if scenario == "SingleStream"
            and settings.get("target_latency") else f"target_qps {settings.get('target_qps') or 0:g}")
    duration = settings.get("min_duration")
    duration_text = (f"min_duration {duration:,} ms" if duration is not None
                     else f"min_duration {MLPERF_MIN_DURATION_MS:,} ms (mlperf.conf)")
    count = f", min_query_count {settings['min_query_count']:,}" if settings.get("min_query_count") else ""
    amount = f"{queries:,.0f}" if queries < 1e12 else f"{queries:.3g}" if math.isfinite(queries) else "infinitely many"
    return (f"{rate} x {duration_text}{count} schedules about {amount} {scenario} queries, more than the "
            f"{limit:,} a run can hold ({why}); "
            f"{'raise target_latency_ms' if scenario == 'SingleStream' else 'lower target_qps'}, "
            "or lower min_duration_ms or min_query_count")


def node_query_limit() -> tuple[int, str]:
    """The most queries a run on this machine may schedule, and why: :data:`MAX_SCHEDULED_QUERIES`, or fewer where
    half of this machine's memory (its cgroup's limit, in a container) holds fewer at :data:`BYTES_PER_QUERY`."""
    why = "LoadGen generates the whole schedule up front, ~1 KiB a query"
    memory = _memory_bytes()
    if memory is None or memory // 2 // BYTES_PER_QUERY >= MAX_SCHEDULED_QUERIES:
        return MAX_SCHEDULED_QUERIES, why
    return int(memory // 2 // BYTES_PER_QUERY), f"{why}, and half of this node's {memory / 2**30:.1f} GiB memory"


def _memory_bytes() -> int | None:
    """This machine's memory, or its cgroup's (v2, then v1) limit where lower; None where it cannot be read."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
        break
    return total if total and total > 0 else None


_SCHEDULE_KEYS = ("target_qps", "target_latency", "min_duration", "min_query_count")


def audit_schedule_overrides(entries: Mapping[str, str], lg_model_name: str, scenario: str) -> dict[str, float]:
    """The schedule settings a compliance test's audit.config (``parse_audit_config``'s entries) sets for this model
    and scenario: LoadGen applies them at StartTest, after FromConfig, so the schedule LoadGen builds is theirs
    (TEST06: min_duration 0, min_query_count 100)."""
    out: dict[str, float] = {}
    for key, value in entries.items():
        model, scen, name = key.split(".")
        if model in ("*", lg_model_name) and scen in ("*", scenario) and name in _SCHEDULE_KEYS:
            out[name] = float(value)
    return out


def check_schedule(scenario: str, settings: Mapping[str, Any], audit: Mapping[str, float] | None = None) -> None:
    """SettingsError (exit 2, nothing written) when LoadGen could not hold the schedule on this machine (``audit``: a
    compliance test's overrides, which win)."""
    limit, why = node_query_limit()
    problem = schedule_problem(scenario, {**settings, **(audit or {})}, limit, why)
    if problem:
        raise SettingsError(problem)


# ------------------------------------------------------------------------------------------ names and the run
_CONF_LINE = re.compile(r"^\s*([^\s.=]+)\.([^\s.=]+)\.([^\s.=]+)\s*=\s*(\S+)\s*$")


class RunSettings:
    """What the run asks of LoadGen: model name, scenario, mode and the scenario settings (validated, keyed by
    LoadGen's user.conf keys; an absent key keeps mlperf.conf's value). Settings come as a mapping, as keywords
    (``min_duration_ms=1000``), or both."""

    __slots__ = ("lg_model_name", "scenario", "mode", "loadgen")

    def __init__(self, lg_model_name: str, scenario: str, mode: str = "performance",
                 loadgen: Mapping[str, Any] | None = None, **settings: Any) -> None:
        if scenario not in SCENARIOS:
            raise SettingsError(f"unknown scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
        if mode not in MODES:
            raise SettingsError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        self.lg_model_name = check_lg_model_name(lg_model_name)
        self.scenario = scenario
        self.mode = mode
        self.loadgen: dict[str, Any] = validate_settings({**(loadgen or {}), **settings})

    def requested(self) -> dict[str, Any]:
        """What run_manifest.json records as the requested settings."""
        return {"lg_model_name": self.lg_model_name, "scenario": self.scenario, "mode": self.mode, **self.loadgen}


def check_lg_model_name(name: str, benchmark: str | None = None) -> str:
    """LoadGen silently applies nothing for an unknown model name, so refuse it here."""
    if name not in LOADGEN_MODELS:
        raise SettingsError(f"unknown LoadGen model name {name!r}: expected one of {', '.join(LG_MODEL_NAMES)}")
    if benchmark is not None:
        own = BENCHMARKS[LOADGEN_MODELS[name].benchmark]
        if benchmark not in BENCHMARKS or own.prompt_format != BENCHMARKS[benchmark].prompt_format:
            raise SettingsError(f"LoadGen model name {name!r} does not fit benchmark {benchmark!r}")
    return name


def default_lg_model_name(benchmark: str) -> str:
    try:
        return BENCHMARKS[benchmark].default_lg_model_name
    except KeyError:
        raise SettingsError(f"unknown benchmark {benchmark!r}: expected one of {', '.join(BENCHMARKS)}") from None


def generated_lines(settings: RunSettings, performance_sample_count_override: int | None = None) -> list[str]:
    """user.conf lines for the run's settings (config units), then the harness's own sample-count override."""
    prefix = f"{settings.lg_model_name}.{settings.scenario}."
    pairs = list(settings.loadgen.items())
    if performance_sample_count_override is not None:
        pairs.append(("performance_sample_count_override", performance_sample_count_override))
    return [f"{prefix}{key} = {format_value(value)}" for key, value in pairs]


def read_user_conf(path: str | Path) -> str:
    """A user.conf's text, checked line by line (LoadGen only says -EINVAL, without a line)."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"--user-conf {path} does not exist" if not path.exists() else f"--user-conf {path} is not a file")
    try:
        text = decode_utf8(path.read_bytes())
    except NotUTF8 as exc:
        raise SettingsError(f"{path}:{exc.line}: {exc}; expected a LoadGen user.conf") from None
    except OSError as exc:
        raise SettingsError(f"--user-conf {path}: cannot read it ({exc.strerror or exc})") from None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _CONF_LINE.match(line)
        if not m:
            raise SettingsError(f"{path}:{n}: expected 'model.scenario.key = number', got {raw.strip()!r}")
        model, scenario, key, value = m.groups()
        if model != "*" and model not in LOADGEN_MODELS:
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


def build_user_conf(settings: RunSettings, dataset_size: int, user_conf: str | Path | None = None,
                    audit: Mapping[str, float] | None = None) -> UserConf:
    """The user.conf for this run: the copy of ``user_conf`` (if any), then the generated lines."""
    check_schedule(settings.scenario, settings.loadgen, audit)
    copied = read_user_conf(user_conf) if user_conf else ""
    asked = settings.loadgen.get("performance_sample_count_override")
    wanted = asked or LOADGEN_MODELS[settings.lg_model_name].performance_sample_count
    override = None
    note = None
    psc = wanted
    if dataset_size < wanted:
        override = psc = dataset_size
        source = "performance_sample_count_override asks" if asked else "mlperf.conf sets"
        note = (f"dataset has {dataset_size} samples, fewer than the {wanted} {source} for "
                f"{settings.lg_model_name}: performance_sample_count_override = {dataset_size} (not a submission run)")
    parts = []
    if copied:
        parts += [f"# copied from {user_conf}", copied.rstrip("\n"), ""]
    parts.append("# generated by the mlperf-dagster harness from its command line (later lines win)")
    parts += generated_lines(settings, override)
    return UserConf("\n".join(parts) + "\n", psc, note)


_from_config_done = False


def load_test_settings(user_conf_path: str | Path, settings: RunSettings, audit: Mapping[str, float] | None = None):
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
    # again with what FromConfig made of mlperf.conf and a copied --user-conf: the flags alone were checked before
    rate_key = {"Server": "server_target_qps", "Offline": "offline_expected_qps"}.get(settings.scenario)
    check_schedule(settings.scenario, {
        "target_qps": getattr(ts, rate_key) if rate_key else None,
        "target_latency": ts.single_stream_expected_latency_ns / 1e6 if settings.scenario == "SingleStream" else None,
        "min_duration": int(ts.min_duration_ms), "min_query_count": int(ts.min_query_count)}, audit)
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
