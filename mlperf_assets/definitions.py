"""The Dagster code location: ``defs`` = assets, checks, jobs, schedules, sensors and resources; nothing else.

Built from the config file chosen by ``$MLPERF_DAGSTER_CONFIG`` (default ``config/config.yaml``), with
``$MLPERF_DAGSTER_DATASET`` applied, read once here. ``build_definitions(config)`` builds the same for any config
(tests, ``mlperf-dagster run``). The node x scenario partitions are built once here and shared by the assets and
the nightly schedule.

``max_qps_search`` (capacity search, ``assets/search.py``) has partitions of its own: node x {Server, Interactive}.

Resources: ``mlperf_config`` (the config the definitions were built from), ``store`` (DuckDB results store) and one
runner per node, ``runner_<node>`` (local, ssh or kubernetes, built from the node's config model). ``scenario_run``
carries its own IO manager (``assets/io.py``: the collected run handed to ``loadgen_results`` and ``accuracy_scores``),
so the default ``io_manager`` stays Dagster's.
Schedules and sensors (``jobs/schedules.py``, ``jobs/sensors.py``): the nightly schedule (when the config has
``schedule:``), a report after each successful benchmark run, an alert on failed runs, and regression alerts.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from jobs import BENCHMARK_JOB, REPORT_JOB, build_jobs
from jobs.schedules import build_nightly_schedule
from jobs.sensors import build_failure_sensor, build_regression_alert_sensor, build_report_on_success_sensor
from mlperf_assets.assets import PartitionProgress, build_asset_checks, build_assets
from mlperf_assets.assets.endpoints import PointProgress, build_endpoints_assets, build_endpoints_jobs
from mlperf_assets.assets.endpoints_bundle import endpoints_bundle
from mlperf_assets.assets.search import build_max_qps_search, search_partitions
from mlperf_assets.assets.submission import build_submission_package
from mlperf_assets.config import MlperfConfig, load_config, runner_resource_key
from mlperf_assets.plan import NODE_DIM, SCENARIO_DIM
from resources.mlperf_config import MlperfConfigResource
from resources.runners import build_runner
from resources.store import ResultsStore


def node_scenario_partitions(config: MlperfConfig) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            NODE_DIM: dg.StaticPartitionsDefinition(config.node_names),
            SCENARIO_DIM: dg.StaticPartitionsDefinition(config.scenario_names),
        }
    )


def build_resources(config: MlperfConfig) -> dict[str, Any]:
    """``mlperf_config``, ``store``, and ``runner_<node>`` per node (plain runner objects, built from the node
    models: the config file is their only field list)."""
    resources: dict[str, Any] = {
        "mlperf_config": MlperfConfigResource.for_config(config),
        "store": ResultsStore(path=str(config.storage.duckdb_path)),
    }
    for node in config.nodes:
        resources[runner_resource_key(node.name)] = build_runner(node)
    return resources


def build_schedules(config: MlperfConfig, jobs: dict[str, Any], partitions: dg.PartitionsDefinition) -> list:
    if config.schedule is None:
        return []
    cron, timezone = config.schedule.cron, config.schedule.timezone
    return [build_nightly_schedule(jobs[BENCHMARK_JOB], partitions_def=partitions, cron=cron, timezone=timezone)]


def build_sensors(config: MlperfConfig, jobs: dict[str, Any]) -> list:
    return [
        build_report_on_success_sensor([jobs[BENCHMARK_JOB]], jobs[REPORT_JOB]),
        build_failure_sensor(),
        build_regression_alert_sensor(),  # reads the `store` resource
    ]


def build_definitions(config: MlperfConfig, *, on_progress: PartitionProgress | None = None,
                      on_point_progress: PointProgress | None = None) -> dg.Definitions:
    """The code location for ``config``. ``on_progress(node, scenario, mode, progress)``: every observation of a
    harness run, for an in-process caller that shows progress (``mlperf-dagster run``)."""
    partitions = node_scenario_partitions(config)
    jobs = {job.name: job for job in build_jobs(config)}
    endpoint_jobs = build_endpoints_jobs(config)  # with an endpoints: block only
    return dg.Definitions(
        assets=[*build_assets(config, partitions, on_progress), build_max_qps_search(config, search_partitions(config)),
                build_submission_package(config),  # per node; a blocking checker check with mlcommons_inference
                *build_endpoints_assets(config, on_point_progress),  # endpoints_plan, endpoint_point
                *([endpoints_bundle] if config.endpoints is not None else [])],  # + its blocking checker check
        asset_checks=build_asset_checks(config),
        jobs=[*jobs.values(), *endpoint_jobs],
        schedules=build_schedules(config, jobs, partitions),
        sensors=build_sensors(config, jobs),
        resources=build_resources(config),
    )


defs = build_definitions(load_config())
