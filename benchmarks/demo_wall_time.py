"""`mlperf-dagster demo` wall time, and Dagster's overhead per partition versus calling the harness directly.

1. Runs `mlperf-dagster demo` as a user would (a subprocess), on the default config's settings but with its
   results and Dagster home in a temporary folder (the project's results/ are left alone). Target: < 90 s.
2. For every scenario, the same work without Dagster, by hand: the harness's performance run and accuracy run
   (two processes, same settings, same prepared dataset), ingestion of both folders into DuckDB, and ROUGE
   scoring: the "baseline" a user scripting it would pay. The demo's per-partition times (from the run's
   Dagster event log) minus that baseline is the orchestration overhead (runner polling, Dagster events and
   storage, asset metadata, the copy into the artifact store).

    .venv/bin/python benchmarks/demo_wall_time.py [--quick]     (--quick: Offline only, skips the full demo)

Needs the CNN/DM stories in ../shared/testdata (or MLPERF_DAGSTER_DATASET).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
BIN = Path(sys.executable).parent
DEFAULT_STORIES = PROJECT.parent / "shared" / "testdata" / "cnn_dailymail" / "stories"
STORIES = Path(os.environ.get("MLPERF_DAGSTER_DATASET", DEFAULT_STORIES))


def make_config(folder: Path, scenarios: list[str]) -> Path:
    """config/config.yaml with storage moved into ``folder`` (and only ``scenarios``)."""
    raw = yaml.safe_load((PROJECT / "config" / "config.yaml").read_text())
    raw["storage"] = {"artifact_root": "out/artifacts", "duckdb_path": "out/mlperf.duckdb", "report_dir": "out/report"}
    raw["benchmark"]["scenarios"] = {s: raw["benchmark"]["scenarios"][s] for s in scenarios}
    raw.pop("schedule", None)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_demo(config_path: Path, home: Path) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    started = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "mlperf-dagster"), "demo", "--config", str(config_path), "--dataset", str(STORIES), "--no-progress"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"demo failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def partition_seconds(home: Path) -> dict[str, tuple[float, float]]:
    """Per benchmark_job run (scenario -> (wall seconds, seconds outside any step)), from the Dagster records.
    "Outside any step" is Dagster's own bookkeeping: planning, run start/end events, resource setup."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    out = {}
    for record in instance.get_run_records(dg.RunsFilter(job_name="benchmark_job")):
        scenario = record.dagster_run.tags["dagster/partition/scenario"]
        wall = record.end_time - record.start_time
        steps = instance.get_run_step_stats(record.dagster_run.run_id)
        in_steps = sum((s.end_time or 0) - (s.start_time or 0) for s in steps)
        out[scenario] = (wall, wall - in_steps)
    instance.dispose()
    return out


def direct(config_path: Path, scenario: str, work: Path) -> dict[str, float]:
    """The same partition by hand: two harness processes, ingestion, ROUGE. Seconds per step."""
    from mlperf_assets import store
    from mlperf_assets.accuracy import evaluate_accuracy_log
    from mlperf_assets.config import load_config
    from mlperf_assets.plan import build_spec, prepared_dataset_path

    config = load_config(config_path, dataset_override=str(STORIES))
    dataset = prepared_dataset_path(config)
    times = {}
    run_id = f"direct-{scenario}-{time.time_ns()}"
    for mode in ("performance", "accuracy"):
        spec = build_spec(config, run_id=run_id, node="local", scenario=scenario, mode=mode, dataset=dataset)
        out = work / run_id / mode
        started = time.perf_counter()
        subprocess.run(spec.harness_argv(sys.executable, str(out)), check=True, capture_output=True)
        times[mode] = time.perf_counter() - started
    started = time.perf_counter()
    store.ingest_path(work / "direct.duckdb", work / run_id)
    times["ingest"] = time.perf_counter() - started
    started = time.perf_counter()
    evaluate_accuracy_log(work / run_id / "accuracy" / "mlperf_log_accuracy.json", dataset)
    times["rouge"] = time.perf_counter() - started
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Offline only")
    parser.add_argument("--repeats", type=int, default=2, help="direct runs per scenario (median taken)")
    args = parser.parse_args()
    if not STORIES.is_dir():
        sys.exit(f"{STORIES} is absent: set MLPERF_DAGSTER_DATASET to a folder of .story files")
    scenarios = ["Offline"] if args.quick else ["Offline", "Server", "SingleStream"]
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as tmp:
        tmp = Path(tmp)
        config = make_config(tmp, scenarios)
        home = tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_bytes((PROJECT / "dagster.yaml").read_bytes())
        demo_s = run_demo(config, home)
        parts = partition_seconds(home)
        print(f"mlperf-dagster demo ({', '.join(scenarios)}; performance + accuracy each): {demo_s:.1f} s wall "
              f"(target < 90 s: {'met' if demo_s < 90 else 'MISSED'})")  # fmt: skip
        print()
        print(f"{'scenario':<13} {'partition s':>11} {'bookkeeping':>11} {'direct s':>9} {'harness':>8} {'ingest':>7} "
              f"{'rouge':>6} {'overhead s':>10} {'ratio':>6}")  # fmt: skip
        overheads = []
        direct(config, scenarios[0], tmp / "direct")  # warm-up: imports, DuckDB creation (the demo paid them earlier)
        for scenario in scenarios:
            runs = [direct(config, scenario, tmp / "direct") for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            harness = med["performance"] + med["accuracy"]
            total = harness + med["ingest"] + med["rouge"]
            part, bookkeeping = parts[scenario]
            overheads.append(part - total)
            print(f"{scenario:<13} {part:>11.2f} {bookkeeping:>11.2f} {total:>9.2f} {harness:>8.2f} {med['ingest']:>7.2f} "
                  f"{med['rouge']:>6.2f} {part - total:>10.2f} {part / total:>5.2f}x")  # fmt: skip
        print()
        print(f"Dagster overhead per partition: {statistics.mean(overheads):.2f} s on average "
              "(partition wall time minus the same harness runs, ingestion and scoring done directly);")
        print("bookkeeping = the part of a partition's run spent outside any step (planning, run events, resources).")
        print("The machine is shared: rerun for the spread; the overhead is the difference of two noisy figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
