"""PNG rendering for the report: skip pictures whose data did not change, draw the others in worker processes.

Each chart's PNG is named by what it shows: a hash of the chart's plotly figure (every value, label and colour
the picture draws), the chart key, the DPI and this module's `RENDER_VERSION` with matplotlib's version. Drawn
PNGs are kept content-addressed in `<report dir>/.png-cache/<hash>.png`; a chart whose hash is there is copied
from it instead of drawn again, and entries the current report does not use are removed, so the cache holds one
report's pictures.

The pictures still to draw, heaviest first, are taken one at a time by forked worker processes (fork: the charts'
drawing functions are inherited, nothing is pickled) while the caller goes on building the dashboard; in
`RenderJob.finish` the caller takes the ones left too, then waits for the workers and draws in-process whatever a
worker did not deliver. Where fork is unavailable, or with one worker, everything is drawn in-process. Pure: no
Dagster.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mlperf_assets.charts import Chart
from mlperf_assets.harness.files import write_atomic

CACHE_DIR = ".png-cache"
RENDER_VERSION = "2"  # bump when a chart's matplotlib drawing changes without its data changing
DPI = 100
# Relative drawing cost, to balance the workers (text-heavy multi-panel charts cost most).
_COST = {"rouge_vs_target": 3.0, "latency_percentiles": 2.5, "server_ttft_tpot": 2.5, "throughput_over_time": 2.0,
         "latency_distribution": 2.0, "published_context": 1.5, "throughput_timeline": 1.5}


def default_workers() -> int:
    """Worker processes for PNGs: the CPUs this process may use, at most 4 (env MLPERF_DAGSTER_REPORT_WORKERS)."""
    env = os.environ.get("MLPERF_DAGSTER_REPORT_WORKERS", "").strip()
    if env.isdigit():
        return max(1, int(env))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def chart_hash(chart: Chart, figure_json: str, dpi: int = DPI) -> str:
    import matplotlib

    digest = hashlib.sha256()
    for part in (RENDER_VERSION, matplotlib.__version__, str(dpi), chart.key, chart.title, figure_json):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


@dataclass
class RenderJob:
    out_dir: Path
    targets: dict[str, Path]  # chart key -> <key>.png
    cached: dict[str, Path]  # chart key -> cache file (present, or being drawn)
    todo: list[Chart]  # heaviest first
    workers: list = field(default_factory=list)  # worker processes
    next_index: object | None = None  # shared counter: the next chart of `todo` to take
    reused: list[str] = field(default_factory=list)
    drawn_in_process: list[str] = field(default_factory=list)

    def finish(self, timeout_s: float = 600) -> dict[str, Path]:
        """Draw what no worker has taken yet, wait for the workers, draw what they did not deliver, put every PNG in
        place; chart key -> path."""
        if self.next_index is not None:
            _take_and_draw(self.todo, self.cached, self.next_index)
        for process in self.workers:
            process.join(timeout_s)
            if process.is_alive():
                process.kill()
                process.join()
        for chart in self.todo:
            cache = self.cached[chart.key]
            if not cache.is_file():  # no worker, or one failed: draw it here
                write_atomic(cache, chart.png(DPI))
                self.drawn_in_process.append(chart.key)
        paths = {}
        for key, target in self.targets.items():
            write_atomic(target, self.cached[key].read_bytes())
            paths[key] = target
        keep = {p.name for p in self.cached.values()}
        for stale in (self.out_dir / CACHE_DIR).glob("*.png"):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
        return paths


def start(charts: list[Chart], out_dir: Path, figure_json: dict[str, str], workers: int | None = None) -> RenderJob:
    """Begin writing `<out_dir>/<key>.png` for each available chart; returns the job to `finish()`."""
    out_dir = Path(out_dir)
    cache_dir = out_dir / CACHE_DIR
    cache_dir.mkdir(exist_ok=True)
    targets, cached, todo = {}, {}, []
    reused = []
    for chart in charts:
        if not chart.available or not chart.can_render:
            continue
        encoded = figure_json.get(chart.key)
        if encoded is None:
            encoded = _encode(chart)
        cache = cache_dir / f"{chart.key}-{chart_hash(chart, encoded)}.png"
        targets[chart.key] = out_dir / f"{chart.key}.png"
        cached[chart.key] = cache
        if cache.is_file():
            reused.append(chart.key)
        else:
            todo.append(chart)
    todo.sort(key=lambda c: -_COST.get(c.key, 2.0))
    job = RenderJob(out_dir=out_dir, targets=targets, cached=cached, todo=todo, reused=reused)
    n = min(default_workers() if workers is None else max(1, workers), len(todo))
    if n > 1 and _can_fork():
        import gc
        import multiprocessing

        import matplotlib.backends.backend_agg  # noqa: F401 - imported once here, not in every worker
        import matplotlib.figure  # noqa: F401

        context = multiprocessing.get_context("fork")
        job.next_index = context.Value("i", 0)
        gc.freeze()  # the parent's objects stay out of the workers' collections (and their pages shared)
        try:
            for _ in range(n):
                process = context.Process(target=_take_and_draw, args=(todo, cached, job.next_index), daemon=True)
                process.start()
                job.workers.append(process)
        finally:
            gc.unfreeze()
    return job


def _take_and_draw(todo: list[Chart], cached: dict[str, Path], next_index) -> None:
    """Take the next chart nobody has taken, draw it and write its cache file, until none is left (in a worker, and
    in the caller once its own work is done). A failure leaves that file absent: `finish` draws it again."""
    while True:
        with next_index.get_lock():
            i = next_index.value
            next_index.value = i + 1
        if i >= len(todo):
            return
        write_atomic(cached[todo[i].key], todo[i].png(DPI))


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _encode(chart: Chart) -> str:
    from mlperf_assets.reporting.dashboard import figure_json

    return figure_json(chart.figure_dict) if chart.figure_dict is not None else ""


def clear_cache(out_dir: Path) -> None:
    shutil.rmtree(Path(out_dir) / CACHE_DIR, ignore_errors=True)
