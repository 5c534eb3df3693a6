"""``endpoints_bundle``: the MLPerf Endpoints submission bundle of the curve's newest measured points
(``<artifact_root>/../endpoints_bundle/<org>/<submission>/``, ``mlperf_assets.endpoints.package``), with its charts.

It carries a blocking check, ``endpoints_checker``: MLCommons' Endpoints checker (``endpoints-submission-cli
check-submission``) judges the bundle; every finding goes to DuckDB (``endpoint_checks``) and, errors first with the
checker's own fix text, into the check's metadata. A shortened (UNOFFICIAL) curve is expected to fail the query
count and, against an echo server, the accuracy gate: those findings are listed as expected, anything else fails.
"""


from pathlib import Path

import dagster as dg

from mlperf_assets.assets.endpoints import ENDPOINT_POINT_KEY
from mlperf_assets.config import MlperfConfig
from resources.mlperf_config import MlperfConfigResource
from resources.store import ResultsStore

ENDPOINTS_BUNDLE_KEY = dg.AssetKey("endpoints_bundle")
ENDPOINTS_CHECKER_CHECK = "endpoints_checker"
BUNDLE_DIR = "endpoints_bundle"
SUBMISSION_ID = "submission"
# What a shortened curve cannot pass (its points are a few queries each; an echo server scores no ROUGE)
SHORTENED_EXPECTED = frozenset({"min-query-count", "accuracy-gate", "accuracy-sample-count"})


def bundle_dir(config: MlperfConfig) -> Path:
    return config.storage.artifact_root.parent / BUNDLE_DIR


def split_findings(errors: list[dict], *, shortened: bool) -> tuple[list[dict], list[dict]]:
    """(expected, unexpected) errors: a shortened curve expects :data:`SHORTENED_EXPECTED`; an official one none."""
    expected = [e for e in errors if shortened and e["rule"] in SHORTENED_EXPECTED]
    return expected, [e for e in errors if e not in expected]


def _gallery(paths: dict[str, Path], max_bytes: int = 400_000) -> str:
    import base64

    parts = [f"**{key}**\n\n![{key}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode('ascii')})"
             for key, p in paths.items() if p.suffix == ".png" and p.stat().st_size <= max_bytes]
    return "\n\n".join(parts) or "_no chart drawn_"


def _finding_lines(findings: list[dict], limit: int = 20) -> str:
    lines = []
    for f in findings[:limit]:
        fix = f" - fix: {f['fix']}" if f.get("fix") else ""
        lines.append(f"- **{f['severity'].upper()} {f['rule']}**: {f['message']}{fix}")
    return "\n".join(lines) or "none"


@dg.asset(
    key=ENDPOINTS_BUNDLE_KEY,
    group_name="endpoints",
    deps=[ENDPOINT_POINT_KEY],
    check_specs=[dg.AssetCheckSpec(ENDPOINTS_CHECKER_CHECK, asset=ENDPOINTS_BUNDLE_KEY, blocking=True,
                                   description="MLCommons' Endpoints checker (endpoints-submission-cli "
                                               "check-submission) passes the bundle, but for what a shortened "
                                               "curve must fail")],
    kinds={"json", "png"},
    tags={"mlperf/stage": "submission"},
    description="MLPerf Endpoints bundle of the newest run of every point: point.yaml, system_desc.json, "
                "system_power.json, results and accuracy per r<N>, src/ and docs/; written atomically under "
                "<artifact_root>/../endpoints_bundle; Pareto and secondary charts under <report_dir>/endpoints/.",
)
def endpoints_bundle(context: dg.AssetExecutionContext, mlperf_config: MlperfConfigResource, store: ResultsStore):
    from mlperf_assets.endpoints.package import CHARTS_DIR, package, plan_regions, write_charts
    from mlperf_assets.endpoints.runs import endpoints_node
    from mlperf_assets.errors import UserError

    cfg = mlperf_config.load()
    if cfg.endpoints is None:
        raise dg.Failure(description=f"{cfg.source_path}: no endpoints: block", allow_retries=False)
    node = endpoints_node(cfg)
    try:
        from resources.runners import build_runner

        done = package(cfg, store.endpoint_points("node = ?", [node]), bundle_dir(cfg), submission=SUBMISSION_ID,
                       machine=build_runner(cfg.node(node)).machine_facts())
    except UserError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    concurrencies = [int(c) for c in done.points["concurrency"].dropna()]
    regions = (plan_regions(min(concurrencies), max(concurrencies))
               if len(concurrencies) > 1 and max(concurrencies) > 32 else {})
    charts = write_charts(done.points, cfg.storage.report_dir / CHARTS_DIR, regions=regions,
                          provisioned_kw=done.provisioned_kw)
    for note in done.notes:
        context.log.warning(note)
    yield dg.MaterializeResult(metadata={
        "bundle": dg.MetadataValue.path(str(done.bundle.root)),
        "points": dg.MetadataValue.json({f"r{n}": str(p) for n, p in sorted(done.bundle.points.items())}),
        "official": not cfg.endpoints.shortened,
        "provisioned_power_kw": done.provisioned_kw if done.provisioned_kw is not None else "not declared",
        "charts_html": dg.MetadataValue.path(str(charts["html"])),
        "charts": dg.MetadataValue.md(_gallery(charts)),
        "notes": dg.MetadataValue.json(done.notes),
    })
    verdict = done.verdict
    check_id = store.save_endpoint_checks(done.bundle.root, verdict.findings)
    expected, unexpected = split_findings(verdict.errors, shortened=cfg.endpoints.shortened)
    context.log.info("\n".join(verdict.lines(20)) or "Endpoints checker: no errors, no warnings")
    yield dg.AssetCheckResult(
        check_name=ENDPOINTS_CHECKER_CHECK,
        passed=not unexpected,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(unexpected)} unexpected error(s)" if unexpected else
                     f"passed: {len(verdict.errors)} error(s) a shortened curve must have, "
                     f"{len(verdict.warnings)} warning(s)" if expected else
                     f"passed: 0 errors, {len(verdict.warnings)} warning(s)"),
        metadata={
            "check_id": check_id,  # its rows in the results store's endpoint_checks
            "checker_exit_code": verdict.exit_code,
            "unexpected_errors": dg.MetadataValue.md(_finding_lines(unexpected)),
            "expected_errors": dg.MetadataValue.md(_finding_lines(expected)),
            "warnings": dg.MetadataValue.md(_finding_lines(verdict.warnings)),
        },
    )
