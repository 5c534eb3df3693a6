"""``MlperfConfigResource``: the config file the code location was built from, as a Dagster resource.

Assets read the validated config through it (``mlperf_config.load()``), so the UI shows which file and
which dataset override are in use. Partitions and runner resources are fixed when ``defs`` is built.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from mlperf_assets.config import MlperfConfig, parse_config


class MlperfConfigResource(ConfigurableResource):
    """``config_path``: the YAML file; ``dataset_override``: the ``MLPERF_DAGSTER_DATASET`` value applied, if any."""

    config_path: str
    dataset_override: str | None = None

    _cache: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def for_config(cls, config: MlperfConfig) -> "MlperfConfigResource":
        override = None
        if config.dataset_overridden_by:
            override = config.dataset_overridden_by.split("=", 1)[1]
        return cls(config_path=str(config.source_path), dataset_override=override)

    def load(self) -> MlperfConfig:
        """The validated config (re-read when the file changes). Raises ``config.ConfigError``."""
        path = Path(self.config_path)
        key = (path.stat().st_mtime_ns, self.dataset_override)
        if self._cache.get("key") != key:
            self._cache["config"] = parse_config(
                path.read_text(encoding="utf-8"), path, dataset_override=self.dataset_override
            )
            self._cache["key"] = key
        return self._cache["config"]
