"""Loading a config file: which file (:func:`config_path`), reading it (:func:`read_config_text`), validating it
(:func:`parse_config`), and the dataset override (``$MLPERF_DAGSTER_DATASET``, :func:`detect_dataset_source`).
Every problem is one line ``<file>: <field path>: <what is wrong>`` of a :class:`ConfigError`."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from mlperf_assets.config.checks import cross_checks
from mlperf_assets.config.fields import absolute_path, describe
from mlperf_assets.config.messages import ConfigError, validation_problems
from mlperf_assets.config.models import MlperfConfig
from mlperf_assets.config.yaml_reader import YAMLRefused, load_yaml
from mlperf_assets.plan import apply_profile

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "config.yaml"
CONFIG_ENV = "MLPERF_DAGSTER_CONFIG"
DATASET_ENV = "MLPERF_DAGSTER_DATASET"
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; more is the wrong file (or /dev/zero)


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

def _display(path: Path) -> str:
    try:
        return str(absolute_path(path).relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)

def parse_config(text: str, source_path: Path, *, dataset_override: str | None = None) -> MlperfConfig:
    """Validate a config file's text; relative paths resolve against ``source_path``'s folder."""
    shown = _display(source_path)
    try:
        raw = load_yaml(text)
    except YAMLRefused as exc:
        raise ConfigError([f"{shown}: {problem}" for problem in exc.problems]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{shown}: {where}invalid YAML: {problem}"]) from None
    if raw is None:
        raise ConfigError([f"{shown}: the file is empty; expected a mapping with nodes, benchmark, dataset, storage"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{shown}: the top level must be a mapping (nodes:, benchmark:, ...), got {describe(raw)}"])
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError([f"{shown}: top-level key {bad_keys[0]!r} must be a string"])
    try:
        config = MlperfConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{shown}: {line}" for line in validation_problems(exc, raw)]) from None
    config.source_path = absolute_path(source_path)
    config.resolve_paths(config.source_path.parent)
    if dataset_override:
        try:
            source, path = detect_dataset_source(absolute_path(Path(os.path.expanduser(dataset_override))))
        except (ValueError, OSError) as exc:
            raise ConfigError([f"{DATASET_ENV}={dataset_override}: {exc}"]) from None
        config.dataset = config.dataset.model_copy(update={"source": source, "path": path})
        config.dataset_overridden_by = f"{DATASET_ENV}={dataset_override}"
    apply_profile(config)
    problems = cross_checks(config)
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
