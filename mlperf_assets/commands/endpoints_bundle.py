"""``mlperf-dagster endpoints package --out DIR`` and ``endpoints check DIR``: the MLPerf Endpoints submission bundle
of the config's measured points, and the Endpoints checker's verdict on a bundle (wired into the ``endpoints`` group
by ``commands/endpoints.py``)."""

from __future__ import annotations

import argparse
import sys

from mlperf_assets.errors import UserError

CONFIG_HELP = "config file with an endpoints: block (default: $MLPERF_DAGSTER_CONFIG, else config/config.yaml)"


def add_package_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Write <out>/<org>/<submission>/{src,docs,results/<system>/llama3_1-8b/r<N>/} from the newest "
                     "stored run of each point (point.yaml, system_desc.json, system_power.json authored from the "
                     "config and the recorded provenance), into a temporary folder renamed into place, then judge "
                     "it with endpoints-submission-cli check-submission; its findings are stored in DuckDB "
                     "(endpoint_checks) and the charts are written to <report_dir>/endpoints/.")
    p.add_argument("--config", default=None, metavar="PATH", help=CONFIG_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder of the bundle (replaced only if mlperf-dagster wrote it)")
    p.add_argument("--submission", default="submission", metavar="NAME",
                   help="the submission id: the folder under <org>/ (default: submission)")
    p.add_argument("--no-check", action="store_true", help="write the bundle without running the checker")


def add_check_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Run the Endpoints checker (endpoints-submission-cli check-submission) on a bundle: its "
                     "<org>/<submission> folder, or the --out folder of `endpoints package`. Errors first, each "
                     "with the checker's own fix text; exit 1 on any error.")
    p.add_argument("bundle", metavar="DIR", help="the bundle (its <org>/<submission> folder or the folder above)")
    p.add_argument("--config", default=None, metavar="PATH",
                   help="record the findings in this config's results store (endpoint_checks)")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="show at most N findings (default 20)")


def _verdict_lines(verdict, limit: int) -> list[str]:
    head = (f"checker: {'PASSED' if verdict.passed else 'FAILED'}: {len(verdict.errors)} error(s), "
            f"{len(verdict.warnings)} warning(s) ({verdict.root})")
    lines = [head, *(f"  {line}" for line in verdict.lines(limit))]
    hidden = len(verdict.findings) - min(limit, len(verdict.findings))
    if hidden > 0:
        lines.append(f"  ... {hidden} more (--limit)")
    return lines


def cmd_package(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    from pathlib import Path

    from mlperf_assets.commands._shared import load_cli_config
    from mlperf_assets.endpoints.package import CHARTS_DIR, package, plan_regions, write_charts
    from resources.runners import build_runner
    from resources.store import ResultsStore

    config = load_cli_config(args.config)
    if config.endpoints is None:
        raise UserError(f"{config.source_path}: no endpoints: block (see config/examples/endpoints-echo.yaml)")
    from mlperf_assets.endpoints.runs import endpoints_node

    node = endpoints_node(config)
    store = ResultsStore(path=str(config.storage.duckdb_path))
    points = store.endpoint_points("node = ?", [node])
    machine = build_runner(config.node(node)).machine_facts()  # CPU, sockets, memory, OS as the node reports them
    done = package(config, points, Path(args.out), submission=args.submission, check=not args.no_check,
                   machine=machine)
    print(f"bundle: {done.bundle.root} ({len(done.bundle.points)} point(s): "
          f"{', '.join(f'r{n}' for n in sorted(done.bundle.points))})", file=out)
    concurrencies = [int(c) for c in done.points["concurrency"].dropna()]
    regions = plan_regions(min(concurrencies), max(concurrencies)) if len(concurrencies) > 1 and max(
        concurrencies) > 32 else {}
    charts = write_charts(done.points, config.storage.report_dir / CHARTS_DIR, regions=regions,
                          provisioned_kw=done.provisioned_kw)
    print(f"charts: {charts['html']}", file=out)
    for note in done.notes:
        print(f"  note: {note}", file=out)
    if done.verdict is None:
        return 0
    store.save_endpoint_checks(done.bundle.root, done.verdict.findings)
    print("\n".join(_verdict_lines(done.verdict, 20)), file=out)
    return 0 if done.verdict.passed else 1


def cmd_check(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    from mlperf_assets.endpoints.bundle import check_bundle, find_bundle_root

    root = find_bundle_root(args.bundle)
    verdict = check_bundle(root)
    if args.config:
        from mlperf_assets.commands._shared import load_cli_config
        from resources.store import ResultsStore

        config = load_cli_config(args.config)
        ResultsStore(path=str(config.storage.duckdb_path)).save_endpoint_checks(root, verdict.findings)
    print("\n".join(_verdict_lines(verdict, max(args.limit, 0))), file=out)
    return 0 if verdict.passed else 1
