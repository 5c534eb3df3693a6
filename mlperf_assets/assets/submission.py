"""``submission_package``: the MLPerf submission tree of one node (``<artifact_root>/../submission/<node>/``), from
its newest VALID run of each scenario with their accuracy and TEST06 runs (``mlperf_assets.submission``).

When the config names an MLCommons checkout (``mlcommons_inference:``) the asset carries a blocking check,
``mlcommons_submission_checker``: that checkout's submission checker judges the tree, its verdict per result goes
to DuckDB (``submission_checks``) and into the check's metadata, and the check fails on any finding the run's
settings do not explain (a smoke run's too-small dataset, short duration and baseline accuracy are expected and
listed, in the checker's own words).
"""

from pathlib import Path

import dagster as dg

from mlperf_assets.assets.accuracy import ACCURACY_KEY
from mlperf_assets.config import MlperfConfig
from resources.mlperf_config import MlperfConfigResource
from resources.store import ResultsStore

SUBMISSION_KEY = dg.AssetKey("submission_package")
CHECKER_CHECK = "mlcommons_submission_checker"


def submission_dir(config: MlperfConfig, node: str) -> Path:
    return config.storage.submission_root / node


def build_submission_package(config: MlperfConfig) -> dg.AssetsDefinition:
    checks = ([dg.AssetCheckSpec(CHECKER_CHECK, asset=SUBMISSION_KEY, blocking=True,
                                 description="The MLCommons submission checker of the configured checkout, at the "
                                             "benchmark's round, passes the tree, but for what the run's "
                                             "settings explain")]
              if config.mlcommons_inference is not None else [])

    @dg.asset(
        key=SUBMISSION_KEY,
        group_name="mlperf",
        partitions_def=dg.StaticPartitionsDefinition(config.node_names),
        deps=[ACCURACY_KEY],  # node -> its node x scenario partitions (Dagster infers the node dimension)
        check_specs=checks,
        kinds={"json"},
        tags={"mlperf/stage": "submission"},
        description="MLPerf submission tree of one node: results (performance, truncated accuracy, TEST06), "
                    "measurements, systems JSON; written atomically under <artifact_root>/../submission/<node>.",
    )
    def submission_package(context: dg.AssetExecutionContext, mlperf_config: MlperfConfigResource,
                           store: ResultsStore):
        from mlperf_assets.errors import UserError
        from mlperf_assets.submission import check_records, package, verdict_block
        from resources.runners import build_runner

        cfg = mlperf_config.load()
        node = context.partition_key
        try:
            tree, verdict, rows = package(cfg, submission_dir(cfg, node), nodes=[node], option="submission tree",
                                          machine_facts=lambda n: build_runner(cfg.node(n)).machine_facts())
        except UserError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        meta = {
            "tree": dg.MetadataValue.path(str(tree.submitter_dir)),
            "results": len(tree.results),
            "runs": dg.MetadataValue.json({f"{r.node}/{r.scenario}": r.run_id for r in tree.results}),
            "skipped": dg.MetadataValue.json([f"{s.node}/{s.scenario}/{s.run_id}: {s.reason}" for s in tree.skipped]),
            "not_submittable_because": dg.MetadataValue.json(
                {f"{n}/{s}": reasons for (n, s), reasons in tree.smoke_reasons.items() if reasons}),
        }
        context.log.info(f"wrote {tree.submitter_dir} ({len(tree.results)} result(s))")
        for (n, s), note in tree.dataset_notes.items():
            context.log.warning(f"{n}/{s}: {note}")
        yield dg.MaterializeResult(metadata=meta)
        if verdict is None:
            return
        check_id = store.save_submission_checks(check_records(tree, verdict, rows))
        block = verdict_block(verdict, rows, limit=20)
        context.log.info(block)
        unexpected = [m for r in rows for m in r["unexpected"]] + verdict.general_errors
        yield dg.AssetCheckResult(
            check_name=CHECKER_CHECK,
            passed=not unexpected,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "summary": verdict.summary,
                "check_id": check_id,  # its rows in the results store's submission_checks
                "verdict": dg.MetadataValue.md(f"```\n{block}\n```"),
                "unexpected_errors": dg.MetadataValue.json(unexpected),
                "expected_errors": dg.MetadataValue.json({f"{r['system']}/{r['scenario']}": r["expected"]
                                                          for r in rows}),
            },
        )

    return submission_package
