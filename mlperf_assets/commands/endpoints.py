"""``mlperf-dagster endpoints plan | run | status | package | check``: an MLPerf Endpoints curve from the command line.

``plan`` prints the curve's points (pure, nothing runs); ``run`` materializes ``endpoints_plan`` and then each
``endpoint_point`` partition on the project's Dagster instance (so the UI shows them), one after the other, with a
line per point; ``status`` lists the points collected and in flight; ``package`` / ``check`` build and judge the
submission bundle (``commands/endpoints_bundle.py``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from mlperf_assets.errors import UserError

CONFIG_HELP = "config file with an endpoints: block (default: $MLPERF_DAGSTER_CONFIG, else config/config.yaml)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "endpoints", help="MLPerf Endpoints: plan, run, package and check a Pareto curve with MLCommons' client",
        description="MLPerf Endpoints: a Pareto curve over concurrency of one OpenAI-compatible server, each point "
        "run by MLCommons' reference client (unmodified, its own Python 3.12 venv) through the node's runner.",
    )
    sub = parser.add_subparsers(dest="endpoints_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)

    p = sub.add_parser("plan", help="print the curve's points (regions, accuracy, queries); runs nothing")
    p.add_argument("--config", default=None, metavar="PATH", help=CONFIG_HELP)
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="dataset samples to size for (default: the prepared dataset's, else the config's)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run the curve's points (all, or --point LABEL ...) and store them")
    p.add_argument("--config", default=None, metavar="PATH", help=CONFIG_HELP)
    p.add_argument("--dataset", default=None, metavar="PATH",
                   help="local CNN/DM copy replacing the config's dataset (like $MLPERF_DAGSTER_DATASET)")
    p.add_argument("--point", action="append", default=None, metavar="LABEL",
                   help="run only this point (repeatable; labels as `endpoints plan` prints them: c64, offline)")
    p.add_argument("--verbose", action="store_true", help="show Dagster's log lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="points collected and in flight")
    p.add_argument("--config", default=None, metavar="PATH", help=CONFIG_HELP)
    p.set_defaults(func=cmd_status)

    for name, adder, handler, text in (("package", "add_package_args", "cmd_package",
                                        "build the submission bundle (results/<system>/llama3_1-8b/r<N>/ ...)"),
                                       ("check", "add_check_args", "cmd_check",
                                        "judge a bundle with the Endpoints checker (endpoints-submission-cli)")):
        p = sub.add_parser(name, help=text)
        try:
            bundle = importlib.import_module("mlperf_assets.commands.endpoints_bundle")
        except ImportError as exc:
            missing = str(exc)
            p.set_defaults(func=lambda _a, m=missing: _unavailable(m))
            continue
        getattr(bundle, adder)(p)
        p.set_defaults(func=getattr(bundle, handler))


def _unavailable(why: str) -> int:
    raise UserError(f"the bundle commands are not available here ({why})")


def _config(path: str | None, dataset: str | None = None):
    from mlperf_assets.commands._shared import load_cli_config

    config = load_cli_config(path, dataset_override=dataset)
    if config.endpoints is None:
        raise UserError(f"{config.source_path}: no endpoints: block (see config/examples/endpoints-echo.yaml)")
    return config


def cmd_plan(args: argparse.Namespace) -> int:
    from mlperf_assets.endpoints.plan import plan_curve
    from mlperf_assets.endpoints.runs import client_dataset_path, dataset_samples
    from mlperf_assets.harness.benchmarks import FULL_VALIDATION_SIZE

    config = _config(args.config)
    parquet = client_dataset_path(config)
    samples = args.samples or (dataset_samples(parquet) if parquet.is_file() else None) \
        or config.dataset.max_samples or FULL_VALIDATION_SIZE
    print(plan_curve(config.endpoints, samples).table())
    return 0


class _PointPrinter:
    """One line per point every few seconds while it runs."""

    def __init__(self, out, every_s: float = 5.0) -> None:
        self.out, self.every_s, self.last = out, every_s, 0.0

    def __call__(self, node: str, label: str, progress: Any) -> None:
        now = time.monotonic()
        if progress.done or now - self.last >= self.every_s:
            self.last = now
            print(f"  {node}/{label}: {progress.describe()}", file=self.out, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg

    from mlperf_assets.assets.endpoints import (
        ENDPOINT_POINT_KEY,
        build_endpoint_point,
        build_endpoints_plan,
        point_labels,
    )
    from mlperf_assets.commands._shared import (
        StopSignals,
        cli_instance,
        ensure_prepared_dataset,
        failure_messages,
        hub_reachable,
        job_run_config,
    )
    from mlperf_assets.definitions import build_resources
    from mlperf_assets.endpoints.runs import NODE_DIM, POINT_DIM, endpoints_node
    from mlperf_assets.plan import prepared_dataset_path

    config = _config(args.config, args.dataset)
    known = point_labels(config)  # None: decided by the plan's probes
    for label in args.point or []:
        if known is not None and label not in known:
            raise UserError(f"--point {label}: not a point of the plan ({', '.join(known)})")
    if not prepared_dataset_path(config).is_file() and args.dataset is None and config.dataset_overridden_by is None \
            and config.dataset.source == "huggingface" and not hub_reachable():
        from mlperf_assets.commands.pipeline import demo_dataset_override

        local, where = demo_dataset_override(None)
        if local is not None:  # a development checkout's CNN/DM stories, as the demo uses them
            print(where, file=sys.stderr)
            config = _config(args.config, local)
    instance = cli_instance()
    run_config = job_run_config(args.verbose)
    resources = build_resources(config)
    node = endpoints_node(config)
    point_asset = build_endpoint_point(config, _PointPrinter(sys.stderr))
    endpoints_plan = build_endpoints_plan(config)
    failed: list[str] = []
    with StopSignals() as stop:
        ensure_prepared_dataset(config, instance, resources, run_config)
        planned = dg.materialize([endpoints_plan], instance=instance, resources=resources, run_config=run_config,
                                 raise_on_error=False)
        if not planned.success:
            raise UserError("; ".join(failure_messages(planned)) or "endpoints_plan failed")
        plan = planned.output_for_node("endpoints_plan")
        print(plan.table())
        labels = args.point or plan.labels
        for label in labels:
            if label not in plan.labels:
                raise UserError(f"--point {label}: not a point of the plan ({', '.join(plan.labels)})")
        for label in labels:
            if stop.received is not None:
                print(f"{label}: not started (interrupted)", file=sys.stderr)
                continue
            started = time.monotonic()
            result = dg.materialize(
                [endpoints_plan, point_asset], selection=[ENDPOINT_POINT_KEY], instance=instance,
                resources=resources, run_config=run_config, raise_on_error=False,
                partition_key=dg.MultiPartitionKey({NODE_DIM: node, POINT_DIM: label}),
            )
            took = time.monotonic() - started
            if stop.received is not None and not result.success:
                print(f"{node}/{label}: interrupted; the point was cancelled on its node", file=sys.stderr)
                return 130
            if not result.success:
                failed.append(label)
                print(f"FAILED {node}/{label} after {took:.0f} s: "
                      f"{'; '.join(failure_messages(result)) or 'see Dagster run ' + result.run_id}", file=sys.stderr)
                continue
            print(f"{node}/{label}: done in {took:.0f} s " + _point_line(result))
    if failed:
        print(f"{len(failed)} of {len(labels)} points failed ({', '.join(failed)}); re-run one alone with "
              f"`mlperf-dagster endpoints run --point LABEL`", file=sys.stderr)
        return 1
    if not plan.official:
        print("SHORTENED curve: UNOFFICIAL (not an MLPerf Endpoints result)")
    return 0


def _point_line(result: Any) -> str:
    meta: dict[str, Any] = {}
    for mat in result.asset_materializations_for_node("endpoint_point"):
        meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    parts = [f"{meta.get('n_samples_completed', '?')} queries"]
    for key, unit in (("system_tps", "tok/s"), ("tps_per_user", "tok/s/user"), ("ttft_p90_ms", "ms TTFT p90")):
        if meta.get(key) is not None:
            parts.append(f"{float(meta[key]):,.1f} {unit}")
    return "(" + ", ".join(parts) + f"): {meta.get('artifacts', '')}"


def cmd_status(args: argparse.Namespace) -> int:
    from mlperf_assets.endpoints.runs import ENDPOINTS_DIR, endpoints_node
    from mlperf_assets.harness.run_folder import read_manifest
    from resources.runners.ledger import ACTIVE_DIR

    config = _config(args.config)
    node = endpoints_node(config)
    root = config.storage.artifact_root
    base = root / ENDPOINTS_DIR / node
    rows = []
    for label_dir in sorted(base.iterdir()) if base.is_dir() else []:
        if label_dir.name.startswith("."):  # .probes
            continue
        runs = sorted(p for p in label_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if runs:
            manifest = read_manifest(runs[-1])
            rows.append((label_dir.name, runs[-1].name, manifest.get("exit_status", "?"), len(runs)))
    for label, run_id, status, count in rows:
        print(f"{node}/{label}: {status} (latest run {run_id}; {count} run{'s' if count > 1 else ''} collected)")
    active = root / ACTIVE_DIR / node
    for record in sorted(active.glob(f"{ENDPOINTS_DIR}-*.json")) if active.is_dir() else []:
        try:
            data = json.loads(record.read_text())
        except ValueError:
            continue
        print(f"{node}/{record.stem[len(ENDPOINTS_DIR) + 1:]}: in flight or not yet collected (run "
              f"{data.get('run_id')}, started {data.get('started_at')}); `endpoints run --point` reattaches")
    if not rows and not any(Path(active).glob("*.json") if active.is_dir() else []):
        print(f"no Endpoints points yet under {base}")
    return 0
