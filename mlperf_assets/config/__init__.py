"""The config file (``config/*.yaml``): pydantic models, loading, and one-line error messages.

The shape is a contract other tooling writes: fields may be added, never renamed. Every relative path in a file is
relative to that file's folder; ``~`` is expanded. Remote paths (an SSH node's ``workdir`` and ``python``, a pod's
``workdir``) are kept as written.

Which file: ``load_config(path)``, else ``$MLPERF_DAGSTER_CONFIG``, else the embedded default ``config/config.yaml``.
``$MLPERF_DAGSTER_DATASET`` replaces the dataset with a local copy, its format detected from the path.

Every problem becomes one line ``<file>: <field path>: <what is wrong>``; :class:`ConfigError` carries them all, found
before anything runs: the file itself (unreadable, a folder, a symlink loop, binary, huge, nested too deep, a key
given twice), each field, the storage paths, the engine arguments (asked of the backend, as the node will), and the
cron (asked of Dagster, as the schedule will).

The package, by layer: ``fields`` (constrained types, the model base, path resolution), ``nodes`` (one model per
runner kind), ``models`` (the other sections and :class:`MlperfConfig`), ``yaml_reader`` (the hardened YAML read),
``messages`` (:class:`ConfigError`, pydantic errors as one line), ``checks`` (cross-field, backend and file-system
checks; they ask the planner), ``loader`` (which file, read, parse, load). The models import nothing of the planner.
"""

from mlperf_assets.config.loader import (
    CONFIG_ENV,
    DATASET_ENV,
    DEFAULT_CONFIG_PATH,
    MAX_CONFIG_BYTES,
    PROJECT_ROOT,
    config_path,
    detect_dataset_source,
    how_to_supply_dataset,
    load_config,
    parse_config,
    read_config_text,
)
from mlperf_assets.config.messages import ConfigError
from mlperf_assets.config.models import (
    HF_DATASET,
    BenchmarkConfig,
    DatasetConfig,
    MlperfConfig,
    ScenariosConfig,
    ScheduleConfig,
    SearchConfig,
    StorageConfig,
    SubmissionConfig,
)
from mlperf_assets.config.nodes import (
    RUNNER_KINDS,
    DockerNode,
    KubernetesNode,
    LocalNode,
    NodeConfig,
    SSHNode,
    runner_resource_key,
)
from mlperf_assets.config.yaml_reader import MAX_NESTING

__all__ = [
    "CONFIG_ENV", "DATASET_ENV", "DEFAULT_CONFIG_PATH", "HF_DATASET", "MAX_CONFIG_BYTES", "MAX_NESTING", "PROJECT_ROOT",
    "RUNNER_KINDS", "BenchmarkConfig", "ConfigError", "DatasetConfig", "DockerNode", "KubernetesNode", "LocalNode",
    "MlperfConfig", "NodeConfig", "SSHNode", "ScenariosConfig", "ScheduleConfig", "SearchConfig", "StorageConfig",
    "SubmissionConfig", "config_path", "detect_dataset_source", "how_to_supply_dataset", "load_config", "parse_config",
    "read_config_text", "runner_resource_key",
]
