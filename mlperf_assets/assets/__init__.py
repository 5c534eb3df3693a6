"""The pipeline's assets: dataset -> scenario_run -> loadgen_results -> accuracy_scores -> benchmark_charts ->
benchmark_report.

``build_assets(config, partitions)`` returns them for one config, over the node x scenario partitions that
``definitions.py`` builds once.
Each module holds one stage; the asset functions are thin and call pure code.
"""

from __future__ import annotations

import dagster as dg

from mlperf_assets.config import MlperfConfig

from .accuracy import ACCURACY_KEY, ROUGE_CHECK, build_accuracy_scores
from .dataset import DATASET_KEY, cnn_dailymail_dataset
from .checks import build_regression_check
from .report import CHARTS_KEY, REPORT_KEY, benchmark_report
from .results import LOADGEN_RESULTS_KEY, build_loadgen_results
from .runs import SCENARIO_RUN_KEY, PartitionProgress, build_scenario_run

ASSET_KEYS = (DATASET_KEY, SCENARIO_RUN_KEY, LOADGEN_RESULTS_KEY, ACCURACY_KEY, CHARTS_KEY, REPORT_KEY)


def build_assets(
    config: MlperfConfig, partitions: dg.PartitionsDefinition, on_progress: PartitionProgress | None = None
) -> list[dg.AssetsDefinition]:
    """``on_progress(node, scenario, mode, progress)`` sees every observation of a harness run (progress bars)."""
    return [
        cnn_dailymail_dataset,
        build_scenario_run(config, partitions, on_progress),
        build_loadgen_results(partitions),
        build_accuracy_scores(partitions),
        benchmark_report,  # benchmark_charts and benchmark_report
    ]


def build_asset_checks(config: MlperfConfig) -> list[dg.AssetChecksDefinition]:
    """Checks defined apart from their assets (the others are check specs of their assets)."""
    return [build_regression_check(REPORT_KEY)]


__all__ = [
    "ACCURACY_KEY",
    "CHARTS_KEY",
    "ASSET_KEYS",
    "DATASET_KEY",
    "LOADGEN_RESULTS_KEY",
    "REPORT_KEY",
    "ROUGE_CHECK",
    "SCENARIO_RUN_KEY",
    "build_asset_checks",
    "build_assets",
]
