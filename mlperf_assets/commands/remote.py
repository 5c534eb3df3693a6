"""``mlperf-dagster render-k8s``, ``render-docker`` and ``monitor``: remote nodes seen from the orchestrator."""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlperf_assets.errors import UserError

RENDER_HELP = """\
Print the Kubernetes Job that a `runner: kubernetes` node would be given for one scenario, as YAML
(nothing is submitted; no cluster is needed). Check it, or apply it by hand:

  mlperf-dagster render-k8s --config config/examples/kubernetes.yaml --node k8s-a100 --scenario Offline
  mlperf-dagster render-k8s --config cfg.yaml --node k8s-a100 --scenario Server --mode accuracy | kubectl apply --dry-run=server -f -

The Job requests nvidia.com/gpu = the node's gpus (vLLM's tensor_parallel_size is set to match each engine replica's share), carries the
node's nodeSelector, tolerations and CPU/memory requests, keeps one benchmark pod per machine (pod
anti-affinity), reads HF_TOKEN from the node's Secret by reference, and stores the run folder on the node's PVC
(or an emptyDir the runner collects from). Labels: mlperf-dagster/run-id, /node, /scenario, /mode.
"""

RENDER_DOCKER_HELP = """\
Print the container that a `runner: docker` node would be given for one scenario, as YAML: the Docker SDK's
containers.create() keywords (nothing is created; no engine is needed):

  mlperf-dagster render-docker --config config/examples/docker.yaml --node docker-h100 --scenario Offline

It shows the image, the command (the harness under its exit-code supervisor), the GPU device request (`gpus`: a
count, all, or device ids; vLLM's tensor_parallel_size set to each replica's share of a count), ipc, shm_size, network, the volumes
(model cache, datasets, harness_source), the user, and the labels the runner finds the run by after a restart
(mlperf-dagster.run-id, .node, .scenario, .mode). Environment variables listed in the node's `env` appear by name
only: their values are read from the orchestrator's environment when the run starts.
"""
MONITOR_HELP = """\
Show the runs in progress on every node of the config, with a progress bar each: node, run, scenario and
mode, samples done/total, tokens/s, ETA and elapsed time. Read from the runners themselves: a local node's
work folder, an SSH node's run folders (progress.jsonl over SSH), a Kubernetes node's Jobs, a Docker node's
containers (found by their labels; progress.jsonl read inside them). A node that
cannot be reached shows its error in its row; the others carry on.

examples:
  mlperf-dagster monitor                                   # the default config, refreshed every 2 s (Ctrl-C ends)
  mlperf-dagster monitor --config config/examples/ssh-fleet.yaml --node jw2
  mlperf-dagster monitor --once                            # one snapshot, for scripts and cron
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    def render_parser(name: str, help: str, description: str, kind: str, dataset_help: str, func) -> None:
        from mlperf_assets.harness.benchmarks import MODES, SCENARIOS

        p = subparsers.add_parser(name, help=help, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config",
                       help="config file (default: $MLPERF_DAGSTER_CONFIG or the embedded config/config.yaml)")
        p.add_argument("--node", required=True, help=f"name of a node with runner: {kind}")
        p.add_argument("--scenario", required=True, choices=SCENARIOS)
        p.add_argument("--mode", default="performance", choices=MODES)
        p.add_argument("--run-id", help="run id to render (default: a timestamped example id)")
        p.add_argument("--dataset", help=dataset_help)
        p.set_defaults(func=func)

    render_parser(
        "render-k8s", "print the Kubernetes Job manifest a node would get", RENDER_HELP, "kubernetes",
        "prepared dataset file whose name and sha256 go in the manifest (default: the config's prepared dataset "
        "path; a placeholder hash if it does not exist yet)", cmd_render_k8s,
    )
    render_parser(
        "render-docker", "print the container spec a docker node would get", RENDER_DOCKER_HELP, "docker",
        "prepared dataset file whose name goes in the spec (default: the config's)", cmd_render_docker,
    )

    m = subparsers.add_parser(
        "monitor", help="live progress of the runs in progress on every node",
        description=MONITOR_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    m.add_argument("--config", help="config file (default: $MLPERF_DAGSTER_CONFIG or the embedded config/config.yaml)")
    m.add_argument("--node", action="append", default=[], help="only this node (repeatable)")
    m.add_argument("--once", action="store_true", help="print one snapshot and exit")
    m.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh interval (default: 2)")
    m.set_defaults(func=cmd_monitor)


def _load(path: str | None) -> Any:
    from mlperf_assets.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise UserError("invalid config:\n" + "\n".join(exc.problems)) from None


# ------------------------------------------------------------------------------------------ render-k8s
def _render_target(args: argparse.Namespace, runner: str) -> tuple[Any, Any]:
    """(node model, RunSpec) for ``render-k8s``/``render-docker``: the named node, which must use ``runner``."""
    from mlperf_assets.plan import build_spec, prepared_dataset_path

    config = _load(args.config)
    try:
        node = config.node(args.node)
    except KeyError:
        raise UserError(f"no node {args.node!r} in {config.source_path}; nodes: {', '.join(config.node_names)}") from None
    if node.runner != runner:
        raise UserError(f"node {node.name} in {config.source_path} has runner: {node.runner}, not {runner}")
    if args.scenario not in config.scenario_names:
        raise UserError(
            f"scenario {args.scenario} is not configured in {config.source_path} (benchmark.scenarios has "
            f"{', '.join(config.scenario_names)})"
        )
    run_id = args.run_id or "render-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dataset = Path(args.dataset) if args.dataset else prepared_dataset_path(config)
    if args.dataset and not dataset.is_file():
        raise UserError(f"--dataset {dataset}: no such file")
    try:
        spec = build_spec(config, run_id=run_id, node=node.name, scenario=args.scenario, mode=args.mode, dataset=dataset)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return node, spec


def cmd_render_k8s(args: argparse.Namespace) -> int:
    from resources.runners.base import RunnerError
    from resources.runners.kubernetes import KubernetesRunner, manifest_yaml

    node, spec = _render_target(args, "kubernetes")
    try:
        manifest = KubernetesRunner(node).manifest(spec)
    except (RunnerError, ValueError) as exc:
        raise UserError(str(exc)) from None
    sys.stdout.write(manifest_yaml(manifest))
    return 0


# ---------------------------------------------------------------------------------------- render-docker
def cmd_render_docker(args: argparse.Namespace) -> int:
    from resources.runners.base import RunnerError
    from resources.runners.docker import DockerRunner, spec_yaml

    node, spec = _render_target(args, "docker")
    try:
        container = DockerRunner(node).container_spec(spec)
    except (RunnerError, ValueError) as exc:
        raise UserError(str(exc)) from None
    engine = node.docker_host or "the local engine ($DOCKER_HOST or /var/run/docker.sock)"
    sys.stdout.write(
        f"# the container node {node.name} gets for {spec.scenario} {spec.mode} on {engine}: Docker SDK\n"
        "# containers.create() keywords. env_from_orchestrator: names whose values are read from the orchestrator's\n"
        "# environment at start. Before it starts, the run spec and the prepared dataset are copied into it.\n"
    )
    sys.stdout.write(spec_yaml(container))
    return 0


# --------------------------------------------------------------------------------------------- monitor
@dataclass
class MonitorRow:
    node: str
    run_id: str = ""
    scenario: str = ""
    mode: str = ""
    state: str = ""
    completed: int = 0
    total: int | None = None
    tokens_per_s: float = 0.0
    elapsed_s: float = 0.0
    message: str = ""

    @property
    def eta_s(self) -> float | None:
        """Remaining time at the average rate so far; None without a total or any progress."""
        if not self.total or not self.completed or not self.elapsed_s or self.completed >= self.total:
            return None
        return (self.total - self.completed) * self.elapsed_s / self.completed


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def snapshot_node(runner: Any) -> list[MonitorRow]:
    """Rows for one node: its active runs, or one row with the error that kept us from reading it."""
    from resources.runners.base import RunUnreachable

    try:
        runs = runner.active_runs()
    except Exception as exc:  # noqa: BLE001 - one unreachable or broken node must not stop the others
        message = str(exc).split("\n")[0].removeprefix(f"node {runner.node}: ")
        state = "unreachable" if isinstance(exc, RunUnreachable) else "error"
        return [MonitorRow(node=runner.node, state=state, message=message[:200])]
    if not runs:
        return [MonitorRow(node=runner.node, state="idle")]
    return [
        MonitorRow(
            node=runner.node,
            run_id=handle.run_id,
            scenario=handle.scenario,
            mode=handle.mode,
            state=progress.state,
            completed=progress.completed,
            total=progress.total,
            tokens_per_s=progress.tokens_per_s,
            elapsed_s=progress.elapsed_s,
            message=progress.message or "",
        )
        for handle, progress in runs
    ]


def snapshot(runners: list[Any]) -> list[MonitorRow]:
    if not runners:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(runners))) as pool:
        return [row for rows in pool.map(snapshot_node, runners) for row in rows]


def render_table(rows: list[MonitorRow]) -> Any:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(title=f"mlperf-dagster monitor · {datetime.now().strftime('%H:%M:%S')}", expand=False)
    for name, justify in (
        ("node", "left"), ("run", "left"), ("scenario", "left"), ("progress", "left"), ("samples", "right"),
        ("tokens/s", "right"), ("ETA", "right"), ("elapsed", "right"), ("state", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=name != "state", min_width=12 if name == "state" else None)
    for row in rows:
        if row.run_id:
            bar = ProgressBar(total=float(row.total or 1), completed=float(row.completed if row.total else 0), width=24)
            pct = f" {100 * row.completed / row.total:3.0f}%" if row.total else ""
            samples = f"{row.completed:,}/{row.total:,}" if row.total else f"{row.completed:,}/?"
            table.add_row(
                row.node, row.run_id, f"{row.scenario} {row.mode}", bar, samples + pct, f"{row.tokens_per_s:,.0f}",
                format_duration(row.eta_s), format_duration(row.elapsed_s),
                row.state + (f": {row.message}" if row.message else ""),
            )  # fmt: skip
        else:
            table.add_row(row.node, "-", "", "", "", "", "", "", row.state + (f": {row.message}" if row.message else ""))
    return table


def build_runners(config: Any, only: list[str]) -> list[Any]:
    from resources.runners import build_runner

    names = only or config.node_names
    unknown = [n for n in names if n not in config.node_names]
    if unknown:
        raise UserError(f"no node {unknown[0]!r} in {config.source_path}; nodes: {', '.join(config.node_names)}")
    return [build_runner(config.node(name)) for name in names]


def cmd_monitor(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    config = _load(args.config)
    runners = build_runners(config, args.node)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # scripts and logs get full rows
    try:
        if args.once:
            console.print(render_table(snapshot(runners)))
            return 0
        with Live(render_table(snapshot(runners)), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                time.sleep(max(0.2, args.interval))
                live.update(render_table(snapshot(runners)))
    finally:
        for runner in runners:
            runner.close()
