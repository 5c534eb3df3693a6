"""``MlperfConfigResource``: the config the code location was built from, as a Dagster resource.

The code location reads and validates the config file once (``definitions.py``); this resource carries that
validated config to the assets (``mlperf_config.load()``), so a run sees the config its partitions and runners were
built from, even if the file is edited while it runs. The UI shows which file and which dataset override are in use.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from mlperf_assets.config import MlperfConfig


class MlperfConfigResource(ConfigurableResource):
    """``config_path``: the YAML file; ``dataset_overridden_by``: the ``MLPERF_DAGSTER_DATASET=...`` override applied,
    if any; ``snapshot``: the validated config (JSON) as the code location loaded it."""

    config_path: str
    dataset_overridden_by: str | None = None
    snapshot: str

    _config: MlperfConfig | None = PrivateAttr(default=None)

    @classmethod
    def for_config(cls, config: MlperfConfig) -> "MlperfConfigResource":
        return cls(
            config_path=str(config.source_path),
            dataset_overridden_by=config.dataset_overridden_by,
            snapshot=config.model_dump_json(exclude_defaults=True),
        )

    def load(self) -> MlperfConfig:
        """The config of the snapshot (the file is not read again)."""
        if self._config is None:
            config = MlperfConfig.model_validate_json(self.snapshot)
            config.source_path = Path(self.config_path)
            config.dataset_overridden_by = self.dataset_overridden_by
            self._config = config
        return self._config
