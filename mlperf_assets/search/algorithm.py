"""The capacity search's pure core: judging a probe, bracketing then bisecting, the whole search with resume, and
the step-down after a failed confirmation. No I/O: :func:`run_search` takes the estimate and the probe as callables
(:class:`mlperf_assets.search.probes.RunnerProbes` runs them through a node's runner and the store)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from mlperf_assets.errors import UserError
from mlperf_assets.harness.benchmarks import latency_limits_ns

if TYPE_CHECKING:
    from mlperf_assets.config import SearchConfig

ESTIMATE, PROBE, CONFIRM, RESULT = "estimate", "probe", "confirm", "result"
PASS, FAIL = "pass", "fail"
# outcomes
FOUND, UNREACHABLE, UNCONFIRMED = "found", "unreachable", "unconfirmed"


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
    max_qps: float = math.inf  # the highest rate whose run LoadGen can hold (config.models.search_max_qps)
    passes: list[float] = field(default_factory=list)
    fails: list[float] = field(default_factory=list)

    @classmethod
    def from_settings(cls, s: SearchConfig, estimate: float) -> "Bracket":
        from mlperf_assets.config.models import search_max_qps

        top = search_max_qps(max(s.probe_duration_s, s.confirm_duration_s))
        return cls(start=min(max(estimate * s.start_fraction, s.min_qps), top), growth=s.growth, shrink=s.shrink,
                   tolerance=s.tolerance_pct / 100.0, max_probes=s.max_probes, min_qps=s.min_qps, max_qps=top)

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
        if hi is None:  # nothing failed yet: step up, as far as a run can hold
            return min(lo * self.growth, self.max_qps) if lo < self.max_qps else None
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


_FIGURES = ("target_qps", "ttft_p99_ns", "tpot_p99_ns", "latency_p99_ns", "ttft_limit_ns", "tpot_limit_ns",
            "latency_limit_ns", "margin", "completed_samples_per_second", "duration_s")
_VERDICTS = {ESTIMATE: (ESTIMATE,), PROBE: (PASS, FAIL), CONFIRM: (PASS, FAIL), RESULT: (FOUND, UNREACHABLE, UNCONFIRMED)}


def damage(step: Step) -> str | None:
    """Why a stored row is not one the search wrote (a figure NaN, infinite or negative, a measured step without a
    rate, an unknown verdict), or None."""
    for name in _FIGURES:
        value = getattr(step, name)
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
            return f"{name} {value!r}"
    if step.kind in (ESTIMATE, PROBE, CONFIRM) and not step.target_qps:
        return f"target_qps {step.target_qps!r}"
    if step.verdict not in _VERDICTS.get(step.kind, ()):
        return f"verdict {step.verdict!r}"
    return None


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
    on_note: Callable[[str], None] = lambda note: None,
) -> Outcome:
    """The whole search: estimate, probes, confirmation, outcome. ``stored`` steps of the same search are replayed
    (each must be what the search would do next; they are not measured again); new steps are measured with
    ``estimate``/``probe``, judged, handed to ``save`` and reported to ``on_step(step, reused)``. ``labels``: the
    columns every row carries (node, scenario, lg_model_name, benchmark, backend, dagster_run_id, settings_json).
    A damaged stored row (:func:`damage`), or a stored result the replay does not reach, is not trusted: it and the
    stored rows after it are discarded, ``on_note`` says so (as does the outcome's message), and the search measures
    again from there."""
    labels = dict(labels or {})
    margin = settings.margin_pct / 100.0
    queue = sorted(stored, key=lambda s: s.step)
    steps: list[Step] = []
    notes: list[str] = []

    def discard(nxt: Step, why: str) -> None:
        after = len(queue) - 1
        note = (f"stored step {nxt.step} ({nxt.kind}) is damaged ({why}): discarded"
                f"{f' with the {after} stored step(s) after it' if after else ''}; measured again")
        notes.append(note)
        on_note(f"search {search_id}: {note}")
        queue.clear()

    def take(kind: str, target: float | None, verdict: str | None = None) -> Step | None:
        """The stored step that comes next, if it is the one the search would do now."""
        if not queue:
            return None
        nxt = queue[0]
        if nxt.step == len(steps) and nxt.kind == kind:
            why = damage(nxt)
            if why is None and kind == RESULT and (nxt.verdict != verdict or (
                    (nxt.target_qps, target) != (None, None) and not _same_rate(nxt.target_qps, target))):
                why = f"{nxt.verdict} at {nxt.target_qps!r}, where the stored steps reach {verdict} at {target!r}"
            if why is not None:
                discard(nxt, why)
                return None
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
        kept = take(RESULT, rate, status)  # a resumed search that had finished keeps its stored result row
        if notes:
            message += " (" + "; ".join(notes) + ")"
        if kept is None:
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
    if bracket.hi is None and bracket.lo >= bracket.max_qps:
        note = (f" (every probe passed, up to {bracket.max_qps:,.2f} QPS, the highest rate whose run LoadGen can hold "
                "at these durations)")
    elif bracket.hi is None:
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

