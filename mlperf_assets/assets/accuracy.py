"""``accuracy_scores``: ROUGE of the partition's latest accuracy-mode run, the MLPerf way.

The run comes from ``scenario_run`` as a value (:class:`~mlperf_assets.assets.io.CollectedRun`: folder, run id and the
dataset it read); the benchmark scored is the one the run's manifest names. Writes ``accuracy.txt`` beside the accuracy
log (this asset owns that one file in ``scenario_run``'s folder: ``docs/architecture.md``, "Who writes what in a run
folder"), stores the scores in DuckDB, and checks them against the MLPerf target with a *blocking* asset check:

- a model backend (vllm, openai): severity ERROR, so a miss fails the check and blocks downstream assets
  (the report) in the same run: a model that loses accuracy must not be reported as a good result;
- a baseline (extractive lead-3, replay): severity WARN. The targets are 99% of llama3.1-8b's scores; a
  lead-3 extract is not expected to meet them (and replay trivially beats them), so a baseline's verdict
  says nothing about a model. Its scores are still recorded and reported, labelled "baseline", and a miss
  does not block the report.
"""


import dagster as dg

from mlperf_assets.assets.io import CollectedRun
from mlperf_assets.assets.results import LOADGEN_RESULTS_KEY
from mlperf_assets.assets.runs import SCENARIO_RUN_KEY, split_partition
from resources.mlperf_config import MlperfConfigResource
from resources.store import ResultsStore

ACCURACY_KEY = dg.AssetKey("accuracy_scores")
ROUGE_CHECK = "rouge_meets_mlperf_target"


def _check_table(checks: dict[str, dict]) -> str:
    lines = ["| metric | value | target | max | passed |", "|---|---|---|---|---|"]
    for metric, c in checks.items():
        high = c.get("max")
        lines.append(
            f"| {metric} | {c['value']:g} | {c['target']:g} | {'-' if high is None else f'{high:g}'} | "
            f"{'yes' if c['passed'] else 'NO'} |"
        )
    return "\n".join(lines)


def build_accuracy_scores(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=ACCURACY_KEY,
        group_name="mlperf",
        ins={"run": dg.AssetIn(SCENARIO_RUN_KEY)},
        deps=[LOADGEN_RESULTS_KEY],  # after the ingest: the scores attach to the stored runs
        partitions_def=partitions,
        kinds={"python", "duckdb"},
        tags={"mlperf/stage": "accuracy"},
        description="MLPerf ROUGE scores of the partition's latest accuracy run, checked against the MLPerf target.",
        check_specs=[
            dg.AssetCheckSpec(
                ROUGE_CHECK,
                asset=ACCURACY_KEY,
                blocking=True,
                description="ROUGE and gen_len within the MLPerf target (ERROR for models, WARN for baselines).",
            )
        ],
    )
    def accuracy_scores(
        context: dg.AssetExecutionContext, run: CollectedRun, mlperf_config: MlperfConfigResource, store: ResultsStore
    ) -> dg.MaterializeResult:
        from mlperf_assets.accuracy import AccuracyError, evaluate_accuracy_log, write_accuracy_txt
        from mlperf_assets.harness.files import sha256_file
        from mlperf_assets.harness.run_folder import ACCURACY_LOG, ACCURACY_TXT, read_manifest

        cfg = mlperf_config.load()
        node, scenario = split_partition(context)
        baseline = cfg.benchmark.is_baseline
        severity = dg.AssetCheckSeverity.WARN if baseline else dg.AssetCheckSeverity.ERROR
        if not cfg.benchmark.accuracy:
            return dg.MaterializeResult(
                metadata={"skipped": "benchmark.accuracy is false in the config"},
                check_results=[
                    dg.AssetCheckResult(
                        check_name=ROUGE_CHECK,
                        passed=False,
                        severity=dg.AssetCheckSeverity.WARN,
                        metadata={"reason": "accuracy mode not run (benchmark.accuracy: false)"},
                    )
                ],
            )
        folder = run.folder / "accuracy"
        log = folder / ACCURACY_LOG
        dataset = run.dataset
        manifest = read_manifest(folder)
        recorded = (manifest.get("dataset") or {}).get("sha256")
        if recorded and dataset.is_file() and sha256_file(dataset) != recorded:
            raise dg.Failure(
                description=f"{dataset} changed since run {manifest.get('run_id')} used it: rerun scenario_run",
                allow_retries=False,
            )
        try:
            # the run's benchmark (none recorded: the one the prepared dataset names), never the config's of now
            report = evaluate_accuracy_log(log, dataset, benchmark=manifest.get("benchmark"))
        except (AccuracyError, OSError) as exc:
            raise dg.Failure(description=f"scoring {log} failed: {exc}", allow_retries=False) from None
        write_accuracy_txt(report, folder / ACCURACY_TXT)
        run_id = manifest.get("run_id") or run.run_id
        store.save_accuracy(run_id, report.results, report.checks)
        results = report.results
        label = f"baseline ({cfg.benchmark.backend}), not a model" if baseline else "model"
        verdict = "PASSED" if report.passed else "FAILED"
        context.log.info(
            f"{node}/{scenario}: ROUGE-1 {results['rouge1']}, ROUGE-2 {results['rouge2']}, "
            f"ROUGE-L {results['rougeL']}, "
            f"gen_len {results['gen_len']} on {results['gen_num']} samples: MLPerf target {verdict} [{label}]"
        )
        check = dg.AssetCheckResult(
            check_name=ROUGE_CHECK,
            passed=report.passed,
            severity=severity,
            metadata={
                "label": label,
                "complete_dataset": report.complete,
                "checks": dg.MetadataValue.md(_check_table(report.checks)),
            },
        )
        metadata = {
            "run_id": run_id,
            "label": label,
            **{m: float(results[m]) for m in ("rouge1", "rouge2", "rougeL", "rougeLsum") if m in results},
            "gen_len": int(results["gen_len"]),
            "gen_num": int(results["gen_num"]),
            "passed": report.passed,
            "complete_dataset": report.complete,
            "tokenizer": report.tokenizer,
            "accuracy_txt": dg.MetadataValue.path(str(folder / ACCURACY_TXT)),
        }
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return accuracy_scores
