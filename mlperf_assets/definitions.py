"""The Dagster code location: ``defs`` = assets, checks, jobs, schedules, sensors and resources; nothing else.

Built from the config file chosen by ``$MLPERF_DAGSTER_CONFIG`` (default ``config/config.yaml``), with
``$MLPERF_DAGSTER_DATASET`` applied. ``build_definitions(config)`` builds the same for any config (tests).

Resources: ``mlperf_config`` (the config file), ``store`` (DuckDB results store) and one runner per node,
``runner_<node>`` (local, ssh or kubernetes, from the node's ``runner:``).
Schedules and sensors (``jobs/schedules.py``, ``jobs/sensors.py``): the nightly schedule (when the config has
``schedule:``), a report after each successful benchmark run, an alert on failed runs, and regression alerts.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from jobs import BENCHMARK_JOB, REPORT_JOB, build_jobs
from jobs.schedules import build_nightly_schedule
from jobs.sensors import build_failure_sensor, build_regression_alert_sensor, build_report_on_success_sensor
from mlperf_assets.assets import build_asset_checks, build_assets, node_scenario_partitions
from mlperf_assets.config import MlperfConfig, load_config, runner_resource_key
from resources.mlperf_config import MlperfConfigResource
from resources.runners import build_runner
from resources.store import ResultsStore


def build_resources(config: MlperfConfig) -> dict[str, dg.ConfigurableResource]:
    resources: dict[str, dg.ConfigurableResource] = {
        "mlperf_config": MlperfConfigResource.for_config(config),
        "store": ResultsStore(path=str(config.storage.duckdb_path)),
    }
    for node in config.nodes:
        resources[runner_resource_key(node.name)] = build_runner(node, config)
    return resources


def build_schedules(config: MlperfConfig, jobs: dict[str, Any]) -> list:
    if config.schedule is None:
        return []
    return [
        build_nightly_schedule(
            jobs[BENCHMARK_JOB],
            cron=config.schedule.cron,
            timezone=config.schedule.timezone,
            partitions_def=node_scenario_partitions(config),
        )
    ]


def build_sensors(config: MlperfConfig, jobs: dict[str, Any]) -> list:
    return [
        build_report_on_success_sensor([jobs[BENCHMARK_JOB]], jobs[REPORT_JOB]),
        build_failure_sensor(),
        build_regression_alert_sensor(config.storage.duckdb_path),
    ]


def build_definitions(config: MlperfConfig) -> dg.Definitions:
    jobs = {job.name: job for job in build_jobs(config)}
    return dg.Definitions(
        assets=build_assets(config),
        asset_checks=build_asset_checks(config),
        jobs=list(jobs.values()),
        schedules=build_schedules(config, jobs),
        sensors=build_sensors(config, jobs),
        resources=build_resources(config),
    )


defs = build_definitions(load_config())
