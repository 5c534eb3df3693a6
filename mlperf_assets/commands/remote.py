"""``mlperf-dagster render`` and ``monitor``: what the nodes' runners launch and run, seen from the orchestrator."""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlperf_assets.commands._shared import load_cli_config
from mlperf_assets.errors import UserError

RENDER_HELP = """\
Print what a node's runner would launch for one scenario (nothing is started; no cluster, engine or GPU is
needed). What it prints depends on the node's runner:

  kubernetes  the Job manifest, as YAML: nvidia.com/gpu = the node's gpus (vLLM's tensor_parallel_size set to each
              engine replica's share), the node's nodeSelector, tolerations and CPU/memory requests, one benchmark
              pod per machine (pod anti-affinity), HF_TOKEN read from the node's Secret by reference, the run folder
              on the node's PVC (or an emptyDir the runner collects from). Labels: mlperf-dagster/run-id, /node,
              /scenario, /mode.
  docker      the container, as YAML: the Docker SDK's containers.create() keywords (image, the command: the
              harness under its exit-code supervisor, the GPU device request, ipc, shm_size, network, volumes, user,
              and the labels the runner finds the run by after a restart). Environment variables listed in the
              node's `env` appear by name only: their values are read from the orchestrator's environment at start.
  ssh         the shell command sent to the node, quoted as it is sent (a workdir below the login's home is
              resolved by asking the node; nothing is written there).
  local       the command run on this machine, as one shell command (it runs without a shell, in the run folder).

examples:
  mlperf-dagster render --config config/examples/kubernetes.yaml --node k8s-a100 --scenario Offline
  mlperf-dagster render --config cfg.yaml --node k8s-a100 --scenario Server --mode accuracy --runner kubernetes \\
      | kubectl apply --dry-run=server -f -
  mlperf-dagster render --config config/examples/docker.yaml --node docker-h100 --scenario Offline
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
    from mlperf_assets.config import RUNNER_KINDS
    from mlperf_assets.harness.benchmarks import MODES, SCENARIOS

    p = subparsers.add_parser(
        "render", help="print what a node's runner would launch (Job manifest, container, command line)",
        description=RENDER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--config", help="config file (default: $MLPERF_DAGSTER_CONFIG or the embedded config/config.yaml)")
    p.add_argument("--node", required=True, help="name of a node in the config")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--mode", default="performance", choices=MODES)
    p.add_argument("--runner", choices=RUNNER_KINDS,
                   help="refuse a node with another runner (a guard for scripts: --runner kubernetes | kubectl ...)")
    p.add_argument("--run-id", help="run id to render (default: a timestamped example id)")
    p.add_argument("--dataset", help="prepared dataset file the run would get (default: the config's prepared dataset "
                   "path; the Kubernetes manifest carries its sha256, a placeholder hash if it does not exist yet)")
    p.set_defaults(func=cmd_render)

    m = subparsers.add_parser(
        "monitor", help="live progress of the runs in progress on every node",
        description=MONITOR_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    m.add_argument("--config", help="config file (default: $MLPERF_DAGSTER_CONFIG or the embedded config/config.yaml)")
    m.add_argument("--node", action="append", default=[], help="only this node (repeatable)")
    m.add_argument("--once", action="store_true", help="print one snapshot and exit")
    m.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh interval (default: 2)")
    m.set_defaults(func=cmd_monitor)


# ---------------------------------------------------------------------------------------------- render
def _render_target(args: argparse.Namespace) -> tuple[Any, Any]:
    """(node model, RunSpec) for ``render``: the named node (of ``--runner``'s kind when given) and the spec a run of
    ``--scenario`` / ``--mode`` gets."""
    from mlperf_assets.plan import build_spec, prepared_dataset_path

    config = load_cli_config(args.config)
    try:
        node = config.node(args.node)
    except KeyError:
        raise UserError(f"no node {args.node!r} in {config.source_path}; nodes: {', '.join(config.node_names)}") from None
    if args.runner and node.runner != args.runner:
        raise UserError(f"node {node.name} in {config.source_path} has runner: {node.runner}, not {args.runner}")
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


def cmd_render(args: argparse.Namespace) -> int:
    from resources.runners import build_runner
    from resources.runners.base import RunnerError

    node, spec = _render_target(args)
    runner = build_runner(node)
    try:
        text = runner.render(spec)
    except (RunnerError, ValueError) as exc:
        raise UserError(str(exc)) from None
    finally:
        runner.close()
    sys.stdout.write(text)
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

    config = load_cli_config(args.config)
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
