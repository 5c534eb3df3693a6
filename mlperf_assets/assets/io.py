"""How ``scenario_run`` hands its run to ``loadgen_results`` and ``accuracy_scores``: a typed value through an IO manager.

``scenario_run`` returns a :class:`CollectedRun` (the collected run folder, the harness run id, the prepared dataset
the run read); :class:`CollectedRunIOManager` stores it as a small JSON file per partition, and the downstream assets
take it as an input of the same partition (Dagster's identity partition mapping). No asset reads another's
materialization metadata: metadata is for the UI, the value is the contract.

Why an IO manager, and why these choices:

- the value must outlive the run that made it: ``loadgen_results`` is re-materialized alone (a re-ingest), in a
  later run, in another process (the daemon's run worker, or ``mlperf-dagster run``, which executes jobs in process).
  So it is a file, under the Dagster instance's storage directory (where ``fs_io_manager`` keeps its outputs):
  ``<storage>/scenario_run/<node>/<scenario>.json``, one per partition, replaced by each successful
  materialization. Like the materialization history it replaces, it belongs to the instance that ran the asset;
- it is attached to the asset (``io_manager_def``), not made a resource of the code location: it serves
  ``scenario_run`` alone, and as the default ``io_manager`` it would not even survive ``execute_in_process``, which
  swaps that one for an in-memory manager (the value would be lost between runs);
- a store query ("latest run of node x scenario") would need the store to know a run before ``loadgen_results``
  ingests it, and could not tell a re-ingest which folder was collected last;
- a reattached run (``scenario_run`` picking up a harness run an earlier Dagster run started) returns the collected
  folder like any other, so the downstream assets see the same value either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from mlperf_assets.harness.files import write_json_atomic


@dataclass(frozen=True)
class CollectedRun:
    """One partition's collected harness run, as ``scenario_run`` hands it on."""

    folder: Path  # <artifact_root>/<node>/<scenario>/<run_id>/, holding one folder per planned run
    run_id: str  # the harness run id (the ledger's; the manifest's run_id)
    dataset: Path  # the prepared dataset file the run read, on this (the orchestrator's) machine

    def to_json(self) -> dict[str, str]:
        return {"folder": str(self.folder), "run_id": self.run_id, "dataset": str(self.dataset)}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> CollectedRun:
        return cls(folder=Path(data["folder"]), run_id=str(data["run_id"]), dataset=Path(data["dataset"]))


def _partition_parts(key: str | dg.MultiPartitionKey) -> list[str]:
    if isinstance(key, dg.MultiPartitionKey):
        return [key.keys_by_dimension[dim] for dim in sorted(key.keys_by_dimension)]
    return [key]


class CollectedRunIOManager(dg.IOManager):
    """Stores a :class:`CollectedRun` per asset partition under ``root`` as JSON, and loads it for the same partition."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, asset_key: dg.AssetKey, partition_key: str | dg.MultiPartitionKey) -> Path:
        """``<root>/<asset key>/<node>/<scenario>.json`` (dimensions in name order: node, scenario)."""
        *folders, name = _partition_parts(partition_key)
        return self.root.joinpath(*asset_key.path, *folders, f"{name}.json")

    def handle_output(self, context: dg.OutputContext, obj: CollectedRun) -> None:
        path = self.path(context.asset_key, context.asset_partition_key)
        write_json_atomic(path, obj.to_json())
        context.log.debug(f"handed on run {obj.run_id} ({obj.folder}) through {path}")

    def load_input(self, context: dg.InputContext) -> CollectedRun:
        key, partition = context.asset_key, context.asset_partition_key
        path = self.path(key, partition)
        try:
            run = CollectedRun.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise dg.Failure(
                description=f"{key.to_user_string()} has no collected run for partition {partition} in this Dagster "
                            "instance: materialize it first",
                allow_retries=False,
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise dg.Failure(description=f"cannot read the run handed on in {path}: {exc}", allow_retries=False) from None
        if not run.folder.is_dir():
            raise dg.Failure(
                description=f"the run folder of {key.to_user_string()} {partition} ({run.folder}) is missing",
                allow_retries=False,
            )
        return run


@dg.io_manager(description="Hands scenario_run's collected run (folder, run id, dataset) to its downstream assets.")
def collected_run_io_manager(init_context: dg.InitResourceContext) -> CollectedRunIOManager:
    return CollectedRunIOManager(Path(init_context.instance.storage_directory()))  # type: ignore[union-attr]
