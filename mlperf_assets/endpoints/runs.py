"""An Endpoints point as a run of the existing machinery: partitions (node x point), the point's folders, the
client's CNN/DM parquet, and :class:`EndpointPointPlan`, the :class:`mlperf_assets.plan.RunPlan` that
``resources.runners.ledger.PartitionRun`` runs (reattach after a restart, no duplicate run, one node one run).
Pure: no Dagster, no runner.

Folders: a collected point is ``<artifact_root>/endpoints/<node>/<label>/<run_id>/`` (the run folder of
``harness/endpoints_point.py``, as the node wrote it); in flight it is recorded under the ledger key
``endpoints-<label>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlperf_assets.endpoints.client import STANDIN_TOKENIZER_DIR, job_json, point_job
from mlperf_assets.endpoints.plan import PROBE_PREFIX, EndpointsPlan, Point
from mlperf_assets.harness.args import RunSpec
from mlperf_assets.plan import PERFORMANCE, ConfigPlan, PlannedRun, new_run_id, prepared_dataset_path

if TYPE_CHECKING:
    from mlperf_assets.config.models import MlperfConfig

NODE_DIM, POINT_DIM = "node", "point"
ENDPOINTS_DIR = "endpoints"
POINT_RUN = "point"  # the one harness run of a point, by its key in the ledger's record
CLIENT_DATASET_COLUMNS = ("article", "highlights")  # what the client's cnn_dailymail loader reads


def endpoints_node(config: MlperfConfig) -> str:
    """The node the curve runs on: ``endpoints.node``, else the first node."""
    assert config.endpoints is not None
    return config.endpoints.node or config.node_names[0]


PROBES_DIR = ".probes"  # probes: <artifact_root>/endpoints/.probes/<node>/<label>/<run_id> (never a curve's point)


def point_folder(config: MlperfConfig, node: str, label: str, run_id: str) -> Path:
    if label.startswith(PROBE_PREFIX):
        return config.storage.artifact_root / ENDPOINTS_DIR / PROBES_DIR / node / label / run_id
    return config.storage.artifact_root / ENDPOINTS_DIR / node / label / run_id


def client_dataset_path(config: MlperfConfig) -> Path:
    """The parquet the client reads as ``cnn_dailymail``, one per prepared dataset (same name, ``.parquet``)."""
    return config.dataset_dir / ENDPOINTS_DIR / f"{prepared_dataset_path(config).stem}.parquet"


def write_client_dataset(prepared: Path, out: Path) -> int:
    """The prepared dataset's articles and reference summaries as the client's parquet (columns ``article``,
    ``highlights``, ``id``), written atomically; returns the number of samples."""
    import pandas as pd

    from mlperf_assets.harness.dataset import load_prepared

    ds = load_prepared(prepared)
    frame = pd.DataFrame({"article": [ds.article(i) for i in range(len(ds))],
                          "highlights": [ds.reference_text(i) for i in range(len(ds))],
                          "id": [ds.sample_id(i) for i in range(len(ds))]})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(frame)


def dataset_samples(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


@dataclass(frozen=True)
class EndpointPointPlan(ConfigPlan):
    """One point's client run through a node's runner and the ledger (implements ``RunPlan``)."""

    config: MlperfConfig
    node: str
    curve: EndpointsPlan
    point: Point
    dataset: Path  # the client's parquet

    @property
    def scenario(self) -> str:  # the label in the ledger's messages
        return f"endpoints/{self.point.label}"

    @property
    def ledger_key(self) -> str:
        return f"{ENDPOINTS_DIR}-{self.point.label}"

    def new_run_id(self, dagster_run_id: str) -> str:
        return new_run_id(self.node, f"ep-{self.point.label}", dagster_run_id)

    def spec(self, run_id: str) -> RunSpec:
        assert self.config.endpoints is not None
        job = point_job(self.config.endpoints, self.curve, self.point, self.node,
                        standin_cache=str(self.config.storage.artifact_root.parent / ENDPOINTS_DIR
                                          / STANDIN_TOKENIZER_DIR))
        return RunSpec(
            run_id=run_id, node=self.node, scenario="Offline" if self.point.concurrency is None else "Server",
            mode=PERFORMANCE, benchmark=self.config.benchmark.model, backend="openai",
            dataset_path=str(self.dataset), progress_interval_s=self.config.benchmark.progress_interval_s,
            endpoint_point=job_json(job),
        )

    def runs(self, run_id: str) -> list[PlannedRun]:
        return [PlannedRun(POINT_RUN, self.spec(run_id), "")]

    def run_folder(self, run_id: str) -> Path:
        return point_folder(self.config, self.node, self.point.label, run_id)

    def staging_folder(self, run_id: str) -> Path:
        return self.run_folder(run_id).with_name(f".staging-{run_id}")
