"""Asset jobs: ``benchmark_job`` (per node x scenario partition: run, ingest, score), ``report_job`` and
``submission_job`` (per node: the submission tree, which ``mlperf-dagster demo`` materializes).

``dataset_job`` prepares the dataset the runs read; ``mlperf-dagster run`` materializes it first.
Runs launched through the Dagster queue carry the tag ``dagster/partition/node``; ``dagster.yaml`` limits
them to one per node (``tag_concurrency_limits`` with ``applyLimitPerUniqueValue``).
"""

from __future__ import annotations

import dagster as dg

from mlperf_assets.assets import (
    ACCURACY_KEY,
    CHARTS_KEY,
    DATASET_KEY,
    LOADGEN_RESULTS_KEY,
    REPORT_KEY,
    SCENARIO_RUN_KEY,
)
from mlperf_assets.assets.submission import SUBMISSION_KEY
from mlperf_assets.config import MlperfConfig

BENCHMARK_JOB = "benchmark_job"
REPORT_JOB = "report_job"
DATASET_JOB = "dataset_job"
SUBMISSION_JOB = "submission_job"


def build_jobs(config: MlperfConfig) -> list[dg.UnresolvedAssetJobDefinition]:
    benchmark = dg.define_asset_job(
        BENCHMARK_JOB,
        selection=dg.AssetSelection.assets(SCENARIO_RUN_KEY, LOADGEN_RESULTS_KEY, ACCURACY_KEY),
        description="One node x scenario: LoadGen performance + accuracy runs, ingestion into DuckDB, ROUGE scoring.",
        tags={"mlperf/job": "benchmark"},
    )
    report = dg.define_asset_job(
        REPORT_JOB,
        selection=dg.AssetSelection.assets(CHARTS_KEY, REPORT_KEY),
        description="Charts, dashboard.html and report.md of the latest runs (from DuckDB).",
        tags={"mlperf/job": "report"},
    )
    dataset = dg.define_asset_job(
        DATASET_JOB,
        selection=dg.AssetSelection.assets(DATASET_KEY),
        description="Prepare the CNN/DailyMail dataset file the runs read.",
        tags={"mlperf/job": "dataset"},
    )
    submission = dg.define_asset_job(
        SUBMISSION_JOB,
        selection=dg.AssetSelection.assets(SUBMISSION_KEY),
        description="One node's MLPerf submission tree (and the MLCommons checker's verdict on it, when configured).",
        tags={"mlperf/job": "submission"},
    )
    return [benchmark, report, dataset, submission]
