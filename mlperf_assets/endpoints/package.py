"""From a config and its stored points to a bundle on disk and the checker's verdict: what ``endpoints package``
and the ``endpoints_bundle`` asset share. Pure of Dagster: the caller reads ``endpoint_points`` (through the store)
and records the findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlperf_assets.endpoints.bundle import (
    Bundle,
    BundleOptions,
    CheckVerdict,
    build_bundle,
    check_bundle,
    latest_points,
    provisioned_power_kw,
)
from mlperf_assets.endpoints.results import PointResultsError, read_point
from mlperf_assets.errors import UserError

CHARTS_DIR = "endpoints"  # under the report folder


@dataclass
class Packaged:
    bundle: Bundle
    verdict: CheckVerdict | None
    points: Any  # the endpoint_points rows packaged (DataFrame)
    provisioned_kw: float | None
    notes: list[str]


def output_check(config, out: str | Path, option: str = "--out") -> Path:
    """``out`` checked as a bundle's folder: not the artifact root or inside it (the run folders it is built from),
    not holding the results store, the config file, the report folder; replaced only when mlperf-dagster wrote it."""
    from mlperf_assets.harness.outputs import check_output_folder

    storage = config.storage
    source = config.source_path
    keeps = {"the results store": storage.duckdb_path, "the results store's folder": storage.duckdb_path.parent,
             "the report folder": storage.report_dir, "the config file": source,
             "the config file's folder": source.parent if source else None}
    return check_output_folder(out, option=option, reads={"the artifact root": storage.artifact_root}, keeps=keeps)


def bundle_options(config, points, submission: str) -> BundleOptions:
    ep = config.endpoints
    concurrencies = [int(c) for c in points["concurrency"].dropna()]
    c_max = ep.highest_concurrency or (max(concurrencies) if concurrencies else 0)
    implementation = "vllm" if ep.server.launch == "vllm" else ep.server.launch
    return BundleOptions(org=ep.org, submission=submission, division=ep.division, max_supported_concurrency=c_max,
                         seed_set=ep.seed_set, target_cohort=ep.target_cohort, implementation=implementation)


def package(config, points, out: str | Path, *, submission: str, check: bool = True,
            machine: dict | None = None) -> Packaged:
    """The bundle of the newest run of every point in ``points`` (``endpoint_points`` rows of the config's node)
    written to ``out`` (checked first), and the checker's verdict on it unless ``check`` is False."""
    ep = config.endpoints
    if ep is None:
        raise UserError(f"{config.source_path}: no endpoints: block")
    notes: list[str] = []
    system = ep.system
    if system is None:
        from mlperf_assets.config.endpoints_disclosure import EndpointsSystem

        node = str(points["node"].iloc[0]) if len(points) else "system"
        system = EndpointsSystem(name=node, shortened_name=node[:20])
        notes.append(f"endpoints.system is not set: system_desc.json names the node ({node}), availability RDI; "
                     "describe the system in the config before submitting")
    if getattr(ep, "shortened", False):
        notes.append("endpoints.shortened is true: an UNOFFICIAL smoke curve; the checker must fail its query "
                     "counts (min-query-count) and, against an echo server, its accuracy")
    out = output_check(config, out)
    chosen = latest_points(points)
    if not chosen:
        raise UserError("no measured Endpoints point in the results store (run `mlperf-dagster endpoints run` first)")
    results = []
    for row in chosen:
        try:
            results.append(read_point(row["run_folder"]))
        except PointResultsError as exc:
            raise UserError(f"point {row['label']}: {exc}") from None
    import pandas as pd

    options = bundle_options(config, pd.DataFrame([r.row for r in results]), submission)
    bundle = build_bundle(results, out, system=system, power=ep.power, options=options, machine=machine)
    verdict = check_bundle(bundle.root) if check else None
    kw = provisioned_power_kw(ep.power, system_desc_id=bundle.system, cooling=system.cooling)
    return Packaged(bundle=bundle, verdict=verdict, points=pd.DataFrame([r.row for r in results]), provisioned_kw=kw,
                    notes=notes)


def write_charts(points, folder: str | Path, *, regions: dict | None = None, provisioned_kw: float | None = None,
                 ) -> dict[str, Path]:
    """The Endpoints charts of ``points`` as PNGs and one HTML page in ``folder``; returns key -> file."""
    from mlperf_assets.endpoints.charts import charts_html, endpoints_charts
    from mlperf_assets.harness.files import write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    charts = endpoints_charts(points, regions=regions, provisioned_kw=provisioned_kw)
    written: dict[str, Path] = {}
    for chart in charts:
        if chart.available:
            path = folder / f"{chart.key}.png"
            write_atomic(path, chart.png())
            written[chart.key] = path
    page = folder / "endpoints.html"
    write_atomic(page, charts_html(charts).encode())
    written["html"] = page
    return written


def plan_regions(c_min: int, c_max: int) -> dict[str, tuple[int, int]]:
    """The region bands of a curve, from the checker's own ``compute_regions`` ({} where it is not installed)."""
    try:
        from submission_checker.models.regions import compute_regions
    except ImportError:
        return {}
    regions = compute_regions(c_max, c_min)
    return {name: (int(getattr(regions, name).start), int(getattr(regions, name).end))
            for name in ("low_concurrency", "med_concurrency", "high_concurrency")}
