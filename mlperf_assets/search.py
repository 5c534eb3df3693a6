"""Capacity search: the highest Server (or Interactive) ``target_qps`` that stays VALID, found automatically.

The hardest part of an MLPerf Server run is guessing ``target_qps``: too high and a 10-minute run ends INVALID,
too low and the score is thrown away. The search (``max_qps_search`` asset, ``mlperf-dagster search-qps``):

1. starts from an estimate: ``search.start_qps``, else the node's latest Offline samples/s in the store (same
   benchmark, backend and engine arguments), else a short Offline probe;
2. runs short Server probes (``search.probe_duration_s``) at ``start_fraction`` x the estimate, then *brackets*
   (x ``growth`` while probes pass, x ``shrink`` while they fail) and *bisects* (geometric midpoint) between the
   highest passing and the lowest failing rate until they are within ``tolerance_pct`` or ``max_probes`` ran;
3. judges every probe by LoadGen's own verdict (``result_validity``) and by its p99 TTFT/TPOT (or end-to-end
   latency, for gpt-j) against the limits the run itself logged (else the benchmark registry's), each kept
   ``margin_pct`` under its limit (:func:`judge`);
4. confirms the best rate with one full-length run (``confirm_duration_s``), which must be VALID with its p99s
   under the limits; an INVALID one steps down (:func:`step_down`: as far as the probes' p99 slope says its excess
   needs, at most ``step_down_pct``; just under the rate it completed when it was overloaded) and confirms again.

Interactive is LoadGen's Server scenario under the ``-interactive`` LoadGen model (tighter limits).

Every probe is a LoadGen run through the node's runner (``ledger.PartitionRun``: local, SSH, Kubernetes, Docker),
ingested into DuckDB like any run, and one ``qps_search`` row (step, target QPS, verdict, p99s, limits, duration,
run id). A search is identified by everything that shapes it (:func:`search_identity`): running it again with the
same config *resumes* it, replaying the stored steps instead of measuring them again, so Ctrl-C or a lost node
costs at most the probe in flight (and a probe still running on the node is reattached by the ledger).

Pure where it can be: :func:`judge`, :class:`Bracket` and :func:`run_search` take plain values and callables
and are tested directly; :class:`RunnerProbes` runs probes through a runner and the store (no Dagster).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mlperf_assets.config import MlperfConfig, SearchConfig
from mlperf_assets.errors import UserError
from mlperf_assets.harness.benchmarks import BENCHMARKS, LOADGEN_MODELS, latency_limits_ns
from mlperf_assets.plan import PERFORMANCE, PlannedRun, engine_args, probe_folder, run_spec

LABELS = ("Server", "Interactive")  # the search's scenarios: LoadGen Server under the plain / -interactive model
ESTIMATE, PROBE, CONFIRM, RESULT = "estimate", "probe", "confirm", "result"
PASS, FAIL = "pass", "fail"
# outcomes
FOUND, UNREACHABLE, UNCONFIRMED = "found", "unreachable", "unconfirmed"
# LoadGen Server settings a probe sets itself (the config's other Server settings pass through)
PROBE_KEYS = ("target_qps", "min_duration", "max_duration", "min_query_count", "max_query_count")
LEDGER_SUFFIX = "-search"  # ledger entries of probes: <artifact_root>/.active/<node>/<label>-search.json


class SearchError(UserError):
    """The search cannot run (no Interactive model for the benchmark, stored steps that do not fit, ...)."""


# --------------------------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Limits:
    """p99 limits in ns a Server run is judged against (None: not judged this way)."""

    ttft_ns: float | None = None
    tpot_ns: float | None = None
    latency_ns: float | None = None

    @classmethod
    def for_run(cls, row: Mapping[str, Any], lg_model_name: str | None) -> "Limits":
        """The run's own logged limits (``ttft_latency_ns`` ... of ``runs``), else the registry's for its model."""
        known = latency_limits_ns(lg_model_name) or {} if lg_model_name else {}
        tokens = row.get("ttft_latency_ns") is not None or known.get("ttft_latency_ns") is not None

        def pick(key: str) -> float | None:
            value = row.get(key)
            return float(value) if value is not None else (None if known.get(key) is None else float(known[key]))

        if tokens:
            return cls(pick("ttft_latency_ns"), pick("tpot_latency_ns"), None)
        return cls(None, None, pick("target_latency_ns"))

    def items(self) -> list[tuple[str, float]]:
        return [(name, value) for name, value in (("TTFT", self.ttft_ns), ("TPOT", self.tpot_ns),
                                                  ("latency", self.latency_ns)) if value]


@dataclass(frozen=True)
class ProbeFigures:
    """What one LoadGen run says (from the store's ``runs`` row)."""

    run_id: str | None
    result_validity: str | None
    limits: Limits
    ttft_p99_ns: float | None = None
    tpot_p99_ns: float | None = None
    latency_p99_ns: float | None = None
    completed_samples_per_second: float | None = None
    samples_per_second: float | None = None
    duration_s: float | None = None
    invalid_reason: str | None = None

    def p99(self, name: str) -> float | None:
        return {"TTFT": self.ttft_p99_ns, "TPOT": self.tpot_p99_ns, "latency": self.latency_p99_ns}[name]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def _ms(ns: float | None) -> str:
    return "?" if ns is None else f"{ns / 1e6:,.1f} ms" if ns >= 1e7 else f"{ns / 1e6:,.2f} ms"


def judge(figures: ProbeFigures, margin: float) -> Verdict:
    """Pass when LoadGen says VALID and every p99 is at most ``(1 - margin)`` x its limit; the reason names the
    first thing that failed (or the closest p99 when it passed)."""
    problems: list[str] = []
    if figures.result_validity != "VALID":
        why = f" ({figures.invalid_reason})" if figures.invalid_reason else ""
        problems.append(f"LoadGen: {figures.result_validity or 'no result'}{why}")
    closest = None
    for name, limit in figures.limits.items():
        value = figures.p99(name)
        allowed = limit * (1.0 - margin)
        if value is None:
            problems.append(f"no {name} p99 in the run")
            continue
        text = f"{name} p99 {_ms(value)} {'>' if value > allowed else '<='} {_ms(allowed)}"
        if margin:
            text += f" ({1 - margin:.0%} of {_ms(limit)})"
        if value > allowed:
            problems.append(text)
        elif closest is None or value / allowed > closest[0]:
            closest = (value / allowed, text)
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, "VALID" + (f"; {closest[1]}" if closest else ""))


# --------------------------------------------------------------------------------------------- the search


@dataclass
class Bracket:
    """Bracketing, then bisection, over target QPS: the pure decision of which rate to probe next."""

    start: float
    growth: float = 1.5
    shrink: float = 0.5
    tolerance: float = 0.03
    max_probes: int = 8
    min_qps: float = 0.5
    passes: list[float] = field(default_factory=list)
    fails: list[float] = field(default_factory=list)

    @classmethod
    def from_settings(cls, s: SearchConfig, estimate: float) -> "Bracket":
        return cls(start=max(estimate * s.start_fraction, s.min_qps), growth=s.growth, shrink=s.shrink,
                   tolerance=s.tolerance_pct / 100.0, max_probes=s.max_probes, min_qps=s.min_qps)

    @property
    def lo(self) -> float | None:
        """The highest rate that passed (below the lowest failure)."""
        below = [q for q in self.passes if self.hi is None or q < self.hi]
        return max(below) if below else None

    @property
    def hi(self) -> float | None:
        return min(self.fails) if self.fails else None

    @property
    def probes(self) -> int:
        return len(self.passes) + len(self.fails)

    def record(self, qps: float, passed: bool) -> None:
        (self.passes if passed else self.fails).append(qps)

    def converged(self) -> bool:
        lo, hi = self.lo, self.hi
        return lo is not None and hi is not None and hi <= lo * (1.0 + self.tolerance)

    def next_qps(self) -> float | None:
        """The next rate to probe, or None when the search is over (converged, out of probes, or below the floor)."""
        if self.probes >= self.max_probes or self.converged():
            return None
        lo, hi = self.lo, self.hi
        if not self.probes:
            return self.start
        if lo is None:  # nothing passed yet: step down
            nxt = hi * self.shrink
            return nxt if nxt >= self.min_qps else (self.min_qps if hi > self.min_qps else None)
        if hi is None:  # nothing failed yet: step up
            return lo * self.growth
        return math.sqrt(lo * hi)

    def describe(self) -> str:
        lo, hi = self.lo, self.hi
        return f"[{'?' if lo is None else f'{lo:,.2f}'}, {'?' if hi is None else f'{hi:,.2f}'}] QPS"


@dataclass
class Step:
    """One ``qps_search`` row (see ``store.QPS_SEARCH_COLUMNS``)."""

    search_id: str
    step: int
    kind: str
    target_qps: float | None
    verdict: str | None = None
    reason: str | None = None
    node: str | None = None
    scenario: str | None = None
    lg_model_name: str | None = None
    benchmark: str | None = None
    backend: str | None = None
    result_validity: str | None = None
    ttft_p99_ns: float | None = None
    tpot_p99_ns: float | None = None
    latency_p99_ns: float | None = None
    ttft_limit_ns: float | None = None
    tpot_limit_ns: float | None = None
    latency_limit_ns: float | None = None
    margin: float | None = None
    completed_samples_per_second: float | None = None
    duration_s: float | None = None
    run_id: str | None = None
    dagster_run_id: str | None = None
    settings_json: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def load(self) -> float | None:
        """The highest p99 / limit of the judged latencies (1.0: at a limit); None when none was measured."""
        pairs = [(self.ttft_p99_ns, self.ttft_limit_ns), (self.tpot_p99_ns, self.tpot_limit_ns),
                 (self.latency_p99_ns, self.latency_limit_ns)]
        ratios = [value / limit for value, limit in pairs if value and limit]
        return max(ratios) if ratios else None

    def row(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("ttft_p99_ns", "tpot_p99_ns", "latency_p99_ns", "ttft_limit_ns", "tpot_limit_ns",
                    "latency_limit_ns"):
            if out[key] is not None:
                out[key] = int(out[key])
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Step":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    def describe(self) -> str:
        what = {ESTIMATE: "estimate", PROBE: "probe", CONFIRM: "confirm", RESULT: "result"}[self.kind]
        qps = "-" if self.target_qps is None else f"{self.target_qps:,.2f} QPS"
        if self.kind == ESTIMATE:
            return f"step {self.step} {what}: {qps} ({self.reason})"
        if self.kind == RESULT:
            reason = self.reason or ""
            return reason if reason.startswith(f"{self.verdict}:") else f"{self.verdict}: {reason}"
        return f"step {self.step} {what} at {qps}: {self.verdict} ({self.reason})"


@dataclass(frozen=True)
class Outcome:
    status: str  # found | unreachable | unconfirmed
    qps: float | None  # the confirmed rate (found), else None
    message: str
    steps: list[Step]

    @property
    def probes(self) -> int:
        return sum(s.kind == PROBE for s in self.steps)


EstimateFn = Callable[[], tuple[float, str, "str | None"]]  # () -> (samples/s, where it came from, run id)
ProbeFn = Callable[[int, str, float], ProbeFigures]  # (step, kind, target qps) -> figures


def _same_rate(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)


def run_search(
    settings: SearchConfig,
    *,
    search_id: str,
    estimate: EstimateFn,
    probe: ProbeFn,
    stored: Sequence[Step] = (),
    save: Callable[[Step], None] = lambda step: None,
    on_step: Callable[[Step, bool], None] = lambda step, reused: None,
    labels: Mapping[str, Any] | None = None,
) -> Outcome:
    """The whole search: estimate, probes, confirmation, outcome. ``stored`` steps of the same search are replayed
    (each must be what the search would do next; they are not measured again); new steps are measured with
    ``estimate``/``probe``, judged, handed to ``save`` and reported to ``on_step(step, reused)``. ``labels``: the
    columns every row carries (node, scenario, lg_model_name, benchmark, backend, dagster_run_id, settings_json)."""
    labels = dict(labels or {})
    margin = settings.margin_pct / 100.0
    queue = sorted(stored, key=lambda s: s.step)
    steps: list[Step] = []

    def take(kind: str, target: float | None) -> Step | None:
        """The stored step that comes next, if it is the one the search would do now."""
        if not queue:
            return None
        nxt = queue[0]
        by_rate = kind in (PROBE, CONFIRM)
        if nxt.step != len(steps) or nxt.kind != kind or (by_rate and not _same_rate(nxt.target_qps, target)):
            raise SearchError(
                f"search {search_id}: stored step {nxt.step} ({nxt.kind} at {nxt.target_qps}) is not what the search "
                f"does next ({kind} at {target}); run it again with a fresh search (search-qps --fresh)")
        queue.pop(0)
        steps.append(nxt)
        on_step(nxt, True)
        return nxt

    def record(step: Step) -> Step:
        save(step)
        steps.append(step)
        on_step(step, False)
        return step

    def new_step(kind: str, target: float | None, **kw: Any) -> Step:
        return Step(search_id=search_id, step=len(steps), kind=kind, target_qps=target, margin=margin, **labels, **kw)

    def measure(kind: str, target: float, judged_margin: float) -> Step:
        figures = probe(len(steps), kind, target)
        verdict = judge(figures, judged_margin)
        lim = figures.limits
        return record(new_step(
            kind, target, verdict=PASS if verdict.passed else FAIL, reason=verdict.reason,
            result_validity=figures.result_validity, ttft_p99_ns=figures.ttft_p99_ns, tpot_p99_ns=figures.tpot_p99_ns,
            latency_p99_ns=figures.latency_p99_ns, ttft_limit_ns=lim.ttft_ns, tpot_limit_ns=lim.tpot_ns,
            latency_limit_ns=lim.latency_ns, completed_samples_per_second=figures.completed_samples_per_second,
            duration_s=figures.duration_s, run_id=figures.run_id))

    def finish(status: str, rate: float | None, message: str) -> Outcome:
        if take(RESULT, rate) is None:  # a resumed search that had finished keeps its stored result row
            record(new_step(RESULT, rate, verdict=status, reason=message))
        return Outcome(status, rate, message, steps)

    # 1. the estimate
    first = take(ESTIMATE, None)
    if first is None:
        rate, source, run_id = estimate()
        if not rate or rate <= 0 or not math.isfinite(rate):
            raise SearchError(f"search {search_id}: no usable estimate ({source}: {rate!r} samples/s)")
        first = record(new_step(ESTIMATE, float(rate), verdict=ESTIMATE, reason=source, run_id=run_id))
    bracket = Bracket.from_settings(settings, first.target_qps or 0.0)

    # 2. probes
    while (target := bracket.next_qps()) is not None:
        step = take(PROBE, target) or measure(PROBE, target, margin)
        bracket.record(target, step.passed)

    tried = ", ".join(f"{s.target_qps:,.2f} ({s.verdict})" for s in steps if s.kind == PROBE)
    if bracket.lo is None:
        lowest = min((s for s in steps if s.kind == PROBE), key=lambda s: s.target_qps or 0.0, default=None)
        why = f": {lowest.reason}" if lowest is not None else ""
        floor = (f"; the next step would go below search.min_qps {settings.min_qps:g}"
                 if bracket.probes < bracket.max_probes else f"; all {bracket.max_probes} probes (search.max_probes) used")
        message = (f"unreachable: no rate passed. Even the lowest, {lowest.target_qps if lowest else 0:,.2f} QPS, "
                   f"failed{why}{floor}. Tried: {tried}. The node cannot hold the scenario's latency limits at any "
                   "probed load: check the limits, the engine settings, or lower search.min_qps")
        return finish(UNREACHABLE, None, message)
    note = ""
    if bracket.hi is None:
        note = f" (every probe passed; the budget of {bracket.max_probes} probes ran out before a failure)"
    elif not bracket.converged():
        note = f" (bracket {bracket.describe()} still wider than {settings.tolerance_pct:g}% after {bracket.probes} probes)"

    # 3. confirmation runs
    rate = bracket.lo
    for _ in range(settings.confirm_attempts):
        step = take(CONFIRM, rate) or measure(CONFIRM, rate, 0.0)
        if step.passed:
            message = (f"{rate:,.2f} QPS confirmed by a {settings.confirm_duration_s:g} s run ({step.reason}) after "
                       f"{bracket.probes} probes{note}")
            return finish(FOUND, rate, message)
        rate = step_down(rate, step, steps, bracket, settings.step_down_pct / 100.0)
    message = (f"unconfirmed: {settings.confirm_attempts} confirmation run(s) failed (last: {steps[-1].reason}); "
               f"probes passed up to {bracket.lo:,.2f} QPS but full-length runs do not hold it: lengthen "
               "search.probe_duration_s or raise search.confirm_attempts")
    return finish(UNCONFIRMED, None, message)


def step_down(rate: float, failed: Step, steps: Sequence[Step], bracket: Bracket, most: float) -> float:
    """The next confirmation rate after ``failed`` (a confirmation at ``rate``) was INVALID.

    - Overloaded (it completed less than ``rate x (1 - most)``: an overloaded Server run completes what the node
      sustains): just under what it completed.
    - Over a latency limit by a known amount: as far down as the probes' own slope says that takes (how fast the
      p99 rose between the highest passing and the lowest failing probe), 1% more, and between 1% and ``most``.
    - Otherwise (no slope, no latency figure): ``most`` lower."""
    keep = 1.0 - most
    completed = failed.completed_samples_per_second
    if completed and 0 < completed < keep * rate:
        return keep * completed
    by_rate = {s.target_qps: s for s in steps if s.kind == PROBE}
    lo, hi = by_rate.get(bracket.lo), by_rate.get(bracket.hi)
    over = failed.load()
    loads = (lo.load(), hi.load()) if lo is not None and hi is not None else (None, None)
    if over and over > 1.0 and loads[0] and loads[1] and loads[1] > loads[0] and hi.target_qps > lo.target_qps:
        slope = math.log(loads[1] / loads[0]) / math.log(hi.target_qps / lo.target_qps)
        factor = math.exp(-math.log(over) / slope) * 0.99
        return rate * min(0.99, max(keep, factor))
    return rate * keep


# --------------------------------------------------------------------------------------------- identity


def search_lg_model_name(config: MlperfConfig, label: str) -> str:
    """The LoadGen model a search of ``label`` runs: Server = the config's (or the benchmark's default) non-interactive
    model; Interactive = the benchmark's ``-interactive`` model (SearchError if it has none)."""
    b = config.benchmark
    if label == "Server":
        name = b.lg_model_name or BENCHMARKS[b.model].default_lg_model_name
        if LOADGEN_MODELS[name].server_scenario_label != "Server":
            name = BENCHMARKS[b.model].default_lg_model_name
        return name
    if label == "Interactive":
        for m in LOADGEN_MODELS.values():
            if m.benchmark == b.model and m.server_scenario_label == "Interactive":
                return m.name
        raise SearchError(f"benchmark {b.model} has no Interactive LoadGen model (only llama3.1-8b does)")
    raise SearchError(f"unknown search scenario {label!r}: expected one of {', '.join(LABELS)}")


def search_labels(config: MlperfConfig) -> list[str]:
    """The search scenarios of the config's benchmark: Server, and Interactive where the registry has it."""
    out = ["Server"]
    if any(m.benchmark == config.benchmark.model and m.server_scenario_label == "Interactive"
           for m in LOADGEN_MODELS.values()):
        out.append("Interactive")
    return out


def base_server_settings(config: MlperfConfig) -> dict[str, Any]:
    """The config's Server settings a probe keeps (all but rate, duration and query counts)."""
    server = config.benchmark.scenarios.Server
    settings = server.as_settings() if server is not None else {}
    return {k: v for k, v in settings.items() if k not in PROBE_KEYS}


# Probes are not padded: with sample_concatenate_permutation on (mlperf.conf, for llama3.1-8b and gpt-j) LoadGen
# rounds a schedule up to whole multiples of the loaded samples (13,368 on the full dataset), which would make a 60 s
# probe at 40 QPS (2,400 queries) run 13,368 queries, about 5.6 x longer. The confirmation keeps the official setting.
UNPADDED = {"sample_concatenate_permutation": False}


def probe_settings(config: MlperfConfig, kind: str, target_qps: float) -> dict[str, Any]:
    """LoadGen settings of one probe (``kind`` probe or confirm) or of the Offline estimate probe."""
    s = config.search
    if kind == ESTIMATE:
        return {"target_qps": 1.0, "min_duration": int(s.offline_probe_duration_s * 1000),
                "min_query_count": s.offline_probe_queries, **UNPADDED}
    duration = s.probe_duration_s if kind == PROBE else s.confirm_duration_s
    out = {**base_server_settings(config), "target_qps": float(target_qps), "min_duration": int(duration * 1000)}
    if s.min_queries:
        out["min_query_count"] = s.min_queries
    if kind == PROBE:
        out.update(UNPADDED)
    return out


def search_identity(config: MlperfConfig, node: str, label: str, dataset: Path) -> dict[str, Any]:
    """Everything that shapes a search's steps: the same identity resumes the stored search."""
    try:
        st = dataset.stat()
        ds = {"path": str(dataset), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except OSError:
        ds = {"path": str(dataset)}
    return {
        "node": node, "scenario": label, "lg_model_name": search_lg_model_name(config, label),
        "benchmark": config.benchmark.model, "backend": config.benchmark.backend,
        "engine_args": engine_args(config, node), "dataset": ds, "server_settings": base_server_settings(config),
        "search": config.search.model_dump(),
    }


def identity_digest(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def search_id_for(digest: str, existing: Sequence[str], fresh: bool) -> str:
    """``<digest>-<n>``: the newest search of this identity (resumed), or a new one (``fresh``, or none yet)."""
    numbers = [int(s.rsplit("-", 1)[1]) for s in existing if s.startswith(digest + "-") and s.rsplit("-", 1)[1].isdigit()]
    latest = max(numbers, default=0)
    return f"{digest}-{latest + 1 if fresh or not latest else latest}"


# --------------------------------------------------------------------------------------------- the suggestion


def suggestion_lines(label: str, lg_model_name: str, qps: float) -> list[str]:
    """The config lines that accept the result (dotted keys)."""
    lines = [f"benchmark.scenarios.Server.target_qps: {qps:.2f}"]
    if label == "Interactive":
        lines.insert(0, f"benchmark.lg_model_name: {lg_model_name}")
    return lines


def suggestion_yaml(node: str, label: str, lg_model_name: str, outcome: Outcome, search_id: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"# max_qps_search {search_id}: node {node}, {label} (LoadGen model {lg_model_name}), {stamp}",
            f"# {outcome.message}"]
    if outcome.qps is None:
        return "\n".join([*head, "# no suggestion: the search found no rate to confirm", ""])
    body = ["benchmark:"]
    if label == "Interactive":
        body.append(f"  lg_model_name: {lg_model_name}")
    body += ["  scenarios:", "    Server:", f"      target_qps: {outcome.qps:.2f}"]
    note = ["# Accept it by merging these lines into your config (target_qps is one value for every node)."]
    return "\n".join([*head, *note, *body, ""])


def suggestion_path(config: MlperfConfig, node: str, label: str) -> Path:
    return config.storage.report_dir / f"qps_search_{node}_{label}.yaml"


# ------------------------------------------------------------------------------------- probes through a runner


class ProbePlan:
    """One probe as ``ledger.PartitionRun`` runs it (a :class:`mlperf_assets.plan.RunPlan`): one performance run of
    LoadGen scenario ``scenario`` with the probe's settings and LoadGen model, recorded in the ledger as
    ``<label>-search`` (so it never disturbs, nor is mistaken for, a scenario_run's record), and collected into
    :func:`mlperf_assets.plan.probe_folder` (``<artifact_root>/.search/<node>/<label>/<run_id>``: outside every
    scenario's folder)."""

    def __init__(self, config: MlperfConfig, node: str, label: str, dataset: Path, *, run_id: str, scenario: str,
                 settings: Mapping[str, Any], lg_model_name: str | None) -> None:
        self.config, self.node, self.dataset = config, node, dataset
        self.scenario = label  # the MLPerf label searched, for messages
        self.ledger_key = label + LEDGER_SUFFIX
        self._run_id, self._scenario, self._settings, self._lg = run_id, scenario, dict(settings), lg_model_name

    @property
    def artifact_root(self) -> Path:
        return self.config.storage.artifact_root

    @property
    def timeout_s(self) -> float | None:
        return self.config.benchmark.run_timeout_s

    def new_run_id(self, dagster_run_id: str) -> str:
        return self._run_id

    def runs(self, run_id: str) -> list[PlannedRun]:
        spec = run_spec(self.config, run_id=run_id, node=self.node, scenario=self._scenario, mode=PERFORMANCE,
                        dataset=self.dataset, settings=self._settings, lg_model_name=self._lg)
        return [PlannedRun(PERFORMANCE, spec, PERFORMANCE)]

    def run_folder(self, run_id: str) -> Path:
        return probe_folder(self.config, self.node, self.scenario, run_id)

    def staging_folder(self, run_id: str) -> Path:
        return self.run_folder(run_id).with_name(f".staging-{run_id}")


_FIGURE_COLUMNS = ("result_validity", "invalid_reason", "ttft_p99_ns", "tpot_p99_ns", "latency_p99_ns",
                   "ttft_latency_ns", "tpot_latency_ns", "target_latency_ns", "samples_per_second",
                   "completed_samples_per_second", "started_at", "finished_at", "lg_model_name")


class RunnerProbes:
    """Estimates and probes of one search through the node's runner and the DuckDB store (no Dagster).

    ``log``: where the ledger reports (a Dagster context's log or a ``logging.Logger``); ``on_progress(kind,
    progress)``: every observation of the probe in flight."""

    def __init__(self, config: MlperfConfig, node: str, label: str, runner: Any, dataset: Path, *, search_id: str,
                 dagster_run_id: str, log: Any, on_progress: Callable[[str, Any], None] | None = None) -> None:
        self.config, self.node, self.label, self.runner, self.dataset = config, node, label, runner, dataset
        self.search_id, self.dagster_run_id, self.log, self.on_progress = search_id, dagster_run_id, log, on_progress
        self.lg_model_name = search_lg_model_name(config, label)
        self.db = config.storage.duckdb_path

    # ---- the estimate
    def estimate(self) -> tuple[float, str, str | None]:
        s = self.config.search
        if s.start_qps:
            return s.start_qps, "search.start_qps in the config", None
        stored = self.latest_offline()
        if stored is not None:
            return stored
        figures = self.run(0, ESTIMATE, 0.0)
        rate = figures.samples_per_second or 0.0
        return rate, f"Offline probe ({s.offline_probe_queries} samples): {rate:,.2f} samples/s", figures.run_id

    def latest_offline(self) -> tuple[float, str, str] | None:
        """The node's latest Offline performance run of this benchmark, backend and engine arguments."""
        from mlperf_assets import store

        if not Path(self.db).is_file():
            return None
        b = self.config.benchmark
        wanted = engine_args(self.config, self.node)
        _, rows = store.query_rows(
            self.db,
            "SELECT s.run_id, s.samples_per_second, s.started_at, p.engine_args_json FROM run_summary s "
            "LEFT JOIN provenance p USING (run_id) WHERE s.node = ? AND s.scenario = 'Offline' "
            "AND s.mode = 'performance' AND s.backend = ? AND s.benchmark = ? AND s.samples_per_second > 0 "
            "ORDER BY s.started_at DESC NULLS LAST LIMIT 20",
            [self.node, b.backend, _submission_name(b.model)])
        for run_id, rate, started, engine_json in rows:
            try:
                engine = json.loads(engine_json) if engine_json else {}
            except ValueError:
                engine = {}
            if all(_same_value(engine.get(k), v) for k, v in wanted.items()):
                return float(rate), f"latest Offline run {run_id} ({started}): {float(rate):,.2f} samples/s", run_id
        return None

    # ---- one LoadGen run
    def run(self, step: int, kind: str, target_qps: float) -> ProbeFigures:
        """Run, collect and ingest one probe (``kind`` estimate: an Offline run); its figures from the store."""
        from mlperf_assets import store
        from resources.runners.ledger import PartitionRun

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}-{self.node}-{self.label}-qps-{self.search_id}-{step:02d}"
        scenario = "Offline" if kind == ESTIMATE else "Server"
        plan = ProbePlan(self.config, self.node, self.label, self.dataset, run_id=run_id, scenario=scenario,
                         settings=probe_settings(self.config, kind, target_qps),
                         lg_model_name=self.lg_model_name if kind != ESTIMATE else None)
        forward = self.on_progress
        session = PartitionRun(self.runner, plan, log=self.log, dagster_run_id=self.dagster_run_id)
        result = session.run((lambda mode, progress: forward(kind, progress)) if forward else None)
        Path(self.db).parent.mkdir(parents=True, exist_ok=True)
        ingested = store.ingest_path(self.db, result.folder, node=self.node, dagster_run_id=self.dagster_run_id)
        perf = [r.run_id for r in ingested if r.mode == "performance"]
        if not perf:
            raise SearchError(f"probe {result.run_id}: no performance run was ingested from {result.folder}")
        cols, rows = store.query_rows(self.db, f"SELECT {', '.join(_FIGURE_COLUMNS)} FROM runs WHERE run_id = ?",
                                      [perf[0]])
        row = dict(zip(cols, rows[0]))
        started, finished = row.get("started_at"), row.get("finished_at")
        duration = (finished - started).total_seconds() if started and finished else None
        return ProbeFigures(
            run_id=perf[0], result_validity=row.get("result_validity"),
            limits=Limits.for_run(row, row.get("lg_model_name") or self.lg_model_name),
            ttft_p99_ns=row.get("ttft_p99_ns"), tpot_p99_ns=row.get("tpot_p99_ns"),
            latency_p99_ns=row.get("latency_p99_ns"),
            completed_samples_per_second=row.get("completed_samples_per_second"),
            samples_per_second=row.get("samples_per_second"), duration_s=duration,
            invalid_reason=row.get("invalid_reason"))


def _submission_name(benchmark: str) -> str:
    from mlperf_assets.harness.benchmarks import submission_name

    return submission_name(benchmark) or benchmark


def _same_value(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


@dataclass(frozen=True)
class SearchRun:
    """What :func:`search_node` did: the outcome, the search id, and where the suggestion was written."""

    search_id: str
    outcome: Outcome
    suggestion_file: Path
    lg_model_name: str
    reused: int  # stored steps replayed instead of measured


def search_node(
    config: MlperfConfig,
    node: str,
    label: str,
    runner: Any,
    dataset: Path,
    *,
    dagster_run_id: str,
    log: Any,
    fresh: bool = False,
    on_step: Callable[[Step, bool], None] | None = None,
    on_progress: Callable[[str, Any], None] | None = None,
) -> SearchRun:
    """Find (or resume) the search of ``node`` x ``label`` for this config, store every step, write the suggestion."""
    from mlperf_assets import store
    from mlperf_assets.harness.files import write_atomic

    identity = search_identity(config, node, label, dataset)
    digest = identity_digest(identity)
    db = config.storage.duckdb_path
    db.parent.mkdir(parents=True, exist_ok=True)
    store.init_db(db)  # creates or migrates: the qps_search table exists from here on
    existing = sorted({r["search_id"] for r in store.read_qps_search(db, "search_id LIKE ?", [digest + "-%"])})
    search_id = search_id_for(digest, existing, fresh)
    stored = [Step.from_row(r) for r in store.read_qps_search(db, "search_id = ?", [search_id])]
    probes = RunnerProbes(config, node, label, runner, dataset, search_id=search_id, dagster_run_id=dagster_run_id,
                          log=log, on_progress=on_progress)
    reused = [0]

    def saw(step: Step, was_stored: bool) -> None:
        reused[0] += was_stored
        if on_step is not None:
            on_step(step, was_stored)

    outcome = run_search(
        config.search, search_id=search_id, estimate=probes.estimate,
        probe=lambda step, kind, qps: probes.run(step, kind, qps), stored=stored,
        save=lambda step: store.save_qps_search_step(db, step.row()), on_step=saw,
        labels={"node": node, "scenario": label, "lg_model_name": probes.lg_model_name,
                "benchmark": config.benchmark.model, "backend": config.benchmark.backend,
                "dagster_run_id": dagster_run_id, "settings_json": json.dumps(identity, sort_keys=True, default=str)},
    )
    path = suggestion_path(config, node, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, suggestion_yaml(node, label, probes.lg_model_name, outcome, search_id))
    return SearchRun(search_id, outcome, path, probes.lg_model_name, reused[0])


def probe_run_ids(db_path: str | Path) -> set[str]:
    """Run ids of the search's short probes (and estimate probes): runs the report leaves out of the latest results
    (the confirmation runs stay: they are full-length runs at the chosen rate)."""
    from mlperf_assets import store

    rows = store.read_qps_search(db_path, "kind IN ('probe', 'estimate') AND run_id IS NOT NULL")
    return {str(r["run_id"]) for r in rows}


def drop_probe_runs(source: Any, summary: Any) -> Any:
    """``summary`` (a run_summary DataFrame) without the search's short probes and estimate probes: they stay in
    the store, but are not a node's latest result (nor history for its regression checks). ``source``: an open
    DuckDB connection or the store's path. Unchanged for a store without capacity searches."""
    import duckdb

    if summary.empty or "run_id" not in summary.columns:
        return summary
    if isinstance(source, (str, Path)):
        ids = probe_run_ids(source)
    else:
        try:
            rows = source.execute(
                "SELECT run_id FROM qps_search WHERE kind IN ('probe', 'estimate') AND run_id IS NOT NULL").fetchall()
        except duckdb.Error:  # a store made before the qps_search table
            return summary
        ids = {str(r[0]) for r in rows}
    return summary[~summary["run_id"].astype(str).isin(ids)] if ids else summary


def search_charts(db_path: str | Path, colors: Mapping[str, str] | None = None) -> list:
    """The report's capacity-search chart (``charts.qps_search_chart``), or [] when the store holds no search."""
    import pandas as pd

    from mlperf_assets import charts
    from mlperf_assets import store

    rows = store.read_qps_search(db_path)
    return [charts.qps_search_chart(pd.DataFrame(rows), colors)] if rows else []
