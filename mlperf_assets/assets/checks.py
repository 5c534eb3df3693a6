"""Asset checks of this package's own making: the WARN check for performance regressions.

`build_regression_check(asset_key)` returns an asset check that judges the latest run of every
node/scenario/benchmark/backend in the results store (the `store` resource) against the median of its earlier runs
(`mlperf_assets.reporting.regression`). It never blocks anything (severity WARN): a slower night is news, not a
broken pipeline.
"""


import dagster as dg

REGRESSION_CHECK = "no_performance_regression"


def build_regression_check(
    asset_key: dg.AssetKey | str | list[str],
    *,
    store_resource_key: str = "store",
    threshold_pct: float = 10.0,
    window: int = 5,
    name: str = REGRESSION_CHECK,
) -> dg.AssetChecksDefinition:
    """A non-blocking WARN check on `asset_key`: fails when a latest run regressed beyond `threshold_pct`.

    The runs come from the resource `store_resource_key` (the ResultsStore).
    """
    key = asset_key if isinstance(asset_key, dg.AssetKey) else dg.AssetKey(asset_key)

    @dg.asset_check(
        asset=key,
        name=name,
        blocking=False,
        required_resource_keys={store_resource_key},
        description=(f"WARN when the latest run of a node/scenario/backend lost more than {threshold_pct:g}% "
                     f"tokens/s, or its p99 TTFT/TPOT rose by more, against the median of up to {window} earlier "
                     "runs."),
    )
    def _regression_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        from mlperf_assets.reporting.regression import current_regressions
        from mlperf_assets.reporting.text import markdown_table

        store = getattr(context.resources, store_resource_key)
        if not store.exists():
            return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN,
                                       description=f"no results store at {store.path} yet: nothing to compare",
                                       metadata={"regressions": 0})
        summary = store.summary()
        flags = current_regressions(summary, threshold_pct, window=window)
        import pandas as pd

        table = pd.DataFrame([{
            "node": f.node, "scenario": f.scenario, "backend": f.backend, "metric": f.metric,
            "change %": f"{f.change_pct:+.1f}", "run": f.run_id,
        } for f in flags])
        return dg.AssetCheckResult(
            passed=not flags,
            severity=dg.AssetCheckSeverity.WARN,
            description=("; ".join(f.message for f in flags[:5]) if flags
                         else f"no regression beyond {threshold_pct:g}% in the latest runs"),
            metadata={
                "regressions": len(flags),
                "threshold_pct": float(threshold_pct),
                "runs_compared": int(len(summary)),
                "flags": dg.MetadataValue.md(markdown_table(table) if flags else "none"),
            },
        )

    return _regression_check
