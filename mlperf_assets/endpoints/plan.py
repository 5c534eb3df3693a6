"""The points of an MLPerf Endpoints curve, decided before any GPU time: pure (no Dagster, no runner).

Regions, coverage and accuracy bands are the checker's own (``endpoints-submission-cli``'s
``submission_checker.models.regions.compute_regions`` / ``covered_region`` and its aggregate context's
``accuracy_bands`` / ``match_accuracy_bands``), never re-derived: a plan this module accepts covers what checker
1.5.3.0 asks (Ultra Low 1-32, Low, Medium, High, one point at ``C_max``, >= 8 points with a dedicated Offline or >= 7
with an elected one, <= 32), puts one accuracy run in each mandatory band plus Offline and none at a free point, and
issues a whole number of dataset passes at every point, enough to outlast the point's minimum duration at the rate a
short probe measured. A plan that cannot pass is refused in one line (:class:`EndpointsPlanError`).

:func:`highest_concurrency` finds ``C_max`` from probes (the knee: the lowest probed concurrency whose system
tokens/s reach 0.98 of Offline's, rules 5.7), by the capacity search's bracketing idea on a doubling grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from mlperf_assets.errors import UserError
from mlperf_assets.harness.benchmarks import FULL_VALIDATION_SIZE

if TYPE_CHECKING:
    from mlperf_assets.config.endpoints import EndpointsConfig

ULTRA_LOW_MAX = 32
MAX_POINTS = 32
OFFLINE_TPS_FRACTION = 0.98  # rules 5.7: a dedicated Offline point reaches >= 0.98 x the C_max point's system_tps
DURATION_MARGIN = 1.1  # issue 10 % more than the minimum duration needs, as the client pads its own estimate
BANDS = ("ultra_low_concurrency", "low_concurrency", "med_concurrency", "high_concurrency")  # the checker's mandatory bands
OFFLINE_LABEL = "offline"
# what a point is for, by the checker's band it fills with its accuracy run (point_manifest.json's "role")
ROLES = {"ultra_low_concurrency": "mandatory_ultra_low", "low_concurrency": "mandatory_low",
         "med_concurrency": "mandatory_medium", "high_concurrency": "mandatory_high"}


class EndpointsPlanError(UserError):
    """A curve that cannot pass the checker, or cannot be planned yet: one line saying why and what to change."""


@dataclass(frozen=True)
class Point:
    """One point of the curve: what its client run is told and why the planner chose it."""

    label: str  # "c64", "offline"
    concurrency: int | None  # None: the dedicated Offline point (all queries at once)
    role: str  # mandatory_ultra_low | mandatory_low | mandatory_medium | mandatory_high | free | offline
    region: str | None  # the checker's region of the concurrency (low_latency ... margin); None for Offline
    accuracy: bool  # an accuracy run right after the performance run
    offline: str | None  # dedicated | elected | None
    load_pattern: str  # concurrency | max_throughput
    passes: int  # whole passes over the dataset
    n_samples_to_issue: int  # passes x dataset samples
    min_duration_s: float  # the rules' minimum (or the shortened curve's)
    expected_s: float | None = None  # at the probed rate, when known
    max_duration_s: float | None = None  # a probe's cap on the performance phase (the client's max_duration_ms)

    @property
    def folder_concurrency(self) -> int:
        """``r<N>``'s N in a bundle: the concurrency, the dataset size for a dedicated Offline point."""
        return self.concurrency if self.concurrency is not None else FULL_VALIDATION_SIZE


@dataclass(frozen=True)
class EndpointsPlan:
    benchmark: str
    c_min: int
    c_max: int
    offline: str
    official: bool  # False: a shortened curve, UNOFFICIAL everywhere
    dataset_samples: int
    seed_set: str
    seeds: dict[str, int]  # the checker's names: scheduler_rng_seed, sample_index_rng_seed, model_seed
    target_cohort: str
    regions: dict[str, tuple[int, int]]
    points: tuple[Point, ...] = field(default_factory=tuple)

    def point(self, label: str) -> Point:
        for p in self.points:
            if p.label == label:
                return p
        raise KeyError(label)

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.points]

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.points]

    def table(self) -> str:
        """The plan as a text table (``mlperf-dagster endpoints plan``)."""
        head = (f"MLPerf Endpoints plan: {self.benchmark}, C_min {self.c_min}, C_max {self.c_max}, Offline "
                f"{self.offline}, seed set {self.seed_set} (cohort {self.target_cohort}), dataset "
                f"{self.dataset_samples} samples" + ("" if self.official else "  [SHORTENED: UNOFFICIAL]"))
        bands = "  regions: " + ", ".join(f"{k} {a}-{b}" for k, (a, b) in self.regions.items())
        cols = ("label", "concurrency", "role", "region", "accuracy", "pattern", "passes", "queries", "min s",
                "expect s")
        rows = [(p.label, "Offline" if p.concurrency is None else str(p.concurrency), p.role, p.region or "-",
                 "yes" if p.accuracy else "-", p.load_pattern, str(p.passes), f"{p.n_samples_to_issue:,}",
                 f"{p.min_duration_s:g}", "-" if p.expected_s is None else f"{p.expected_s:,.0f}")
                for p in self.points]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join([head, bands, fmt.format(*cols), *(fmt.format(*r) for r in rows)])


# ------------------------------------------------------------------------------------ the checker's own rules


def checker_regions(c_min: int, c_max: int):
    """``submission_checker``'s Regions for (C_min, C_max); EndpointsPlanError where it refuses them."""
    from submission_checker.messages import Invalid
    from submission_checker.models.regions import compute_regions

    try:
        return compute_regions(c_max, c_min)
    except Invalid as exc:
        raise EndpointsPlanError(f"C_min {c_min} / C_max {c_max}: the checker refuses these bounds ({exc})") from None


def region_of(concurrency: int, regions) -> str | None:
    from submission_checker.models.regions import classify_concurrency

    return classify_concurrency(concurrency, regions)


def coverage(concurrencies: Sequence[int], regions) -> dict[str, list[int]]:
    """Band -> the concurrencies counting towards it, as the checker attributes them (Ultra Low: 1-32)."""
    from submission_checker.models.regions import covered_region

    out: dict[str, list[int]] = {band: [] for band in BANDS}
    for c in sorted(concurrencies):
        if regions.ultra_low_concurrency.contains(c):
            out["ultra_low_concurrency"].append(c)
        band = covered_region(c, regions)
        if band in out and band != "ultra_low_concurrency":
            out[band].append(c)
    return out


def accuracy_owners(accuracy_points: Sequence[int], regions, elected: int | None = None) -> dict[str, int]:
    """Band -> the accuracy point that fills it, by the checker's own matching (elected point last)."""
    from submission_checker.models.aggregate.context import accuracy_bands, match_accuracy_bands

    candidates = [(c, accuracy_bands(c, regions), c == elected) for c in sorted(accuracy_points)]
    candidates.sort(key=lambda item: item[2])
    return match_accuracy_bands(candidates)


def min_duration_s(concurrency: int | None, regions) -> float:
    """Rules 6.2 as the checker reads them: 600 s at 1-32, 1,200 s above; a dedicated Offline point 1,200 s."""
    from submission_checker.models.regions import min_duration_ms

    if concurrency is None:
        return 1200.0
    return min_duration_ms(region_of(concurrency, regions) or "high_concurrency", concurrency, agentic=False) / 1000


def seed_set(name: str, cohort: str | None) -> tuple[dict[str, int], str]:
    """The published seed set ``name`` (the checker's registry) and the target cohort (default: its newest)."""
    from submission_checker.seed_sets import load_seed_sets

    sets = load_seed_sets()
    if name not in sets:
        raise EndpointsPlanError(f"endpoints.seed_set: {name!r} is not a published seed set (known: "
                                 f"{', '.join(sorted(sets))})")
    chosen = sets[name]
    if cohort is None:
        if not chosen.cohorts:
            raise EndpointsPlanError(f"endpoints.target_cohort: seed set {name} names no cohort; set one")
        cohort = chosen.cohorts[-1]
    elif chosen.cohorts and cohort not in chosen.cohorts:
        raise EndpointsPlanError(f"endpoints.target_cohort: {cohort} is outside seed set {name}'s adoption window "
                                 f"({', '.join(chosen.cohorts)})")
    return dict(chosen.seeds), cohort


# ------------------------------------------------------------------------------------------- choosing points


def _geo_mid(lo: int, hi: int) -> int:
    return max(lo, min(hi, round(math.sqrt(lo * hi))))


def auto_points(c_min: int, c_max: int) -> list[int]:
    """C_min, one point inside Low and Medium, C_max, and three free points spread between them (log scale)."""
    regions = checker_regions(c_min, c_max)
    chosen = {c_min, c_max}
    for band in (regions.low_concurrency, regions.med_concurrency):
        if band.start <= band.end:
            chosen.add(_geo_mid(band.start, band.end))
    candidates = sorted({2 ** k for k in range(0, 20) if c_min < 2 ** k < c_max} |
                        {round(math.sqrt(a * b)) for a in chosen for b in chosen if a < b} - chosen)
    while len(chosen) < 7 and candidates:
        best = max(candidates, key=lambda c: min(abs(math.log(c) - math.log(x)) for x in chosen))
        chosen.add(best)
        candidates.remove(best)
    return sorted(chosen)


def check_curve(concurrencies: Sequence[int], c_max: int, offline: str) -> tuple[Any, int, dict[str, int]]:
    """(regions, C_min, accuracy owner per band) for a curve of ``concurrencies`` (the Offline point not counted);
    EndpointsPlanError naming the first rule it breaks."""
    if not concurrencies:
        raise EndpointsPlanError("endpoints.points: no concurrency points")
    if max(concurrencies) != c_max:
        raise EndpointsPlanError(f"endpoints.points: the highest point is {max(concurrencies)}, but C_max is {c_max}: "
                                 "the curve needs one point exactly at C_max (points above it are margin points and "
                                 "cover nothing)")
    c_min = min(min(concurrencies), ULTRA_LOW_MAX)
    regions = checker_regions(c_min, c_max)
    covered = coverage(concurrencies, regions)
    missing = [band for band in BANDS if not covered[band]]
    if missing:
        bounds = {"ultra_low_concurrency": regions.ultra_low_concurrency, "low_concurrency": regions.low_concurrency,
                  "med_concurrency": regions.med_concurrency, "high_concurrency": regions.high_concurrency}
        raise EndpointsPlanError(
            "endpoints.points: no point in " + ", ".join(f"{b} ({bounds[b]})" for b in missing)
            + f" for C_min {c_min}, C_max {c_max} (the checker's regions)")
    count = len(concurrencies) + (1 if offline == "dedicated" else 0)
    need = 8 if offline == "dedicated" else 7
    if count < need:
        raise EndpointsPlanError(f"endpoints.points: {count} points with a {offline} Offline; the rules need at "
                                 f"least {need} (1 Ultra Low + 3 region + 3 free" +
                                 (" + 1 Offline)" if offline == "dedicated" else ", C_max elected as Offline)"))
    if count > MAX_POINTS:
        raise EndpointsPlanError(f"endpoints.points: {count} points; the rules allow at most {MAX_POINTS}")
    owners = _assign_accuracy(concurrencies, regions, c_max if offline == "elected" else None)
    return regions, c_min, owners


def _assign_accuracy(concurrencies: Sequence[int], regions, elected: int | None) -> dict[str, int]:
    """One accuracy point per mandatory band, chosen so the checker's matching fills every band with them and no
    other: the C_max point for High, C_min for Ultra Low, the Low and Medium points nearest their band's middle."""
    covered = coverage(concurrencies, regions)
    picks: list[int] = []
    for band in ("high_concurrency", "ultra_low_concurrency", "low_concurrency", "med_concurrency"):
        options = [c for c in covered[band] if c not in picks]
        if band == "high_concurrency" and max(concurrencies) in options:
            picks.append(max(concurrencies))
        elif band == "ultra_low_concurrency" and min(concurrencies) in options:
            picks.append(min(concurrencies))
        elif options:
            bounds = getattr(regions, band) if band != "ultra_low_concurrency" else regions.ultra_low_concurrency
            mid = math.sqrt(max(bounds.start, 1) * max(bounds.end, 1))
            picks.append(min(options, key=lambda c: abs(math.log(c) - math.log(mid))))
    owners = accuracy_owners(picks, regions, elected)
    if set(owners) != set(BANDS) or len(set(owners.values())) != len(picks):
        raise EndpointsPlanError(f"endpoints.points: cannot give each mandatory band its own accuracy point "
                                 f"(points {sorted(concurrencies)}): add a point inside each of Ultra Low, Low, "
                                 "Medium and High that no other band shares")
    return owners


# ---------------------------------------------------------------------------------------------- sizing


def passes_for(rate_samples_per_s: float | None, min_duration: float, dataset_samples: int, floor: int = 1) -> int:
    """Whole dataset passes so a run at ``rate`` lasts ``min_duration`` (x 1.1); at least ``floor``."""
    if not rate_samples_per_s:
        return floor
    return max(floor, math.ceil(min_duration * DURATION_MARGIN * rate_samples_per_s / dataset_samples))


def plan_curve(cfg: EndpointsConfig, dataset_samples: int, *, rates: Mapping[Any, float] | None = None,
               c_max: int | None = None) -> EndpointsPlan:
    """The curve for ``cfg``: points, regions, accuracy, queries. ``rates``: samples/s per concurrency (the key
    ``None`` or ``"offline"`` for Offline) from probes; ``c_max``: a highest concurrency found by probes (the
    config's ``highest_concurrency`` wins)."""
    official = not cfg.shortened
    if official and dataset_samples != FULL_VALIDATION_SIZE:
        raise EndpointsPlanError(f"an official curve issues the full CNN/DM validation set ({FULL_VALIDATION_SIZE:,} "
                                 f"samples) but the prepared dataset has {dataset_samples:,}: remove "
                                 "dataset.max_samples, or set endpoints.shortened: true for an unofficial smoke curve")
    points_cfg = cfg.points
    c_max = cfg.highest_concurrency or (max(points_cfg) if isinstance(points_cfg, list) else c_max)
    if c_max is None:
        raise EndpointsPlanError("endpoints: no highest concurrency yet: set endpoints.highest_concurrency, list the "
                                 "points, or let `mlperf-dagster endpoints run` find it from short probes")
    concurrencies = list(points_cfg) if isinstance(points_cfg, list) else auto_points(cfg.lowest_concurrency, c_max)
    if any(c > c_max for c in concurrencies):
        raise EndpointsPlanError(f"endpoints.points: {max(concurrencies)} is above highest_concurrency {c_max}")
    regions, c_min, owners = check_curve(concurrencies, c_max, cfg.offline)
    seeds, cohort = seed_set(cfg.seed_set, cfg.target_cohort)
    accuracy = set(owners.values())
    role_of = {c: ROLES[band] for band, c in owners.items()}
    rates = dict(rates or {})
    points: list[Point] = []
    missing_rates: list[str] = []

    def sized(concurrency: int | None) -> tuple[int, float, float | None]:
        minimum = (cfg.min_duration_s or 0.0) if cfg.shortened else min_duration_s(concurrency, regions)
        rate = rates.get(concurrency if concurrency is not None else OFFLINE_LABEL, rates.get(None))
        if concurrency is None:
            rate = rates.get(OFFLINE_LABEL, rates.get(None))
        if cfg.passes is not None:
            n = cfg.passes
        elif cfg.shortened:
            n = passes_for(rate, minimum, dataset_samples)
        elif rate is None:
            missing_rates.append("Offline" if concurrency is None else f"c{concurrency}")
            n = 1
        else:
            n = passes_for(rate, minimum, dataset_samples)
        return n, minimum, (n * dataset_samples / rate) if rate else None

    for c in concurrencies:
        elected = cfg.offline == "elected" and c == c_max
        n, minimum, expected = sized(c)
        points.append(Point(label=f"c{c}", concurrency=c, role=role_of.get(c, "free"), region=region_of(c, regions),
                            accuracy=c in accuracy, offline="elected" if elected else None,
                            load_pattern="concurrency", passes=n, n_samples_to_issue=n * dataset_samples,
                            min_duration_s=minimum, expected_s=expected))
    if cfg.offline == "dedicated":
        n, minimum, expected = sized(None)
        points.append(Point(label=OFFLINE_LABEL, concurrency=None, role="offline", region=None, accuracy=True,
                            offline="dedicated", load_pattern="max_throughput", passes=n,
                            n_samples_to_issue=n * dataset_samples, min_duration_s=minimum, expected_s=expected))
    if missing_rates:
        raise EndpointsPlanError(f"endpoints: no probe rate for {', '.join(missing_rates)}, so the queries per point "
                                 "cannot be sized to outlast the minimum duration: `mlperf-dagster endpoints run` probes "
                                 "them first (endpoints.probe_s each), or set endpoints.passes")
    return EndpointsPlan(
        benchmark=cfg.benchmark, c_min=c_min, c_max=c_max, offline=cfg.offline, official=official,
        dataset_samples=dataset_samples, seed_set=cfg.seed_set, seeds=seeds, target_cohort=cohort,
        regions={name: (getattr(regions, name).start, getattr(regions, name).end)
                 for name in ("low_latency", "low_concurrency", "med_concurrency", "high_concurrency", "margin")},
        points=tuple(points),
    )


# ------------------------------------------------------------------------------- the highest concurrency

PROBE_PREFIX = "probe-"  # a probe's label: probe-c64, probe-offline (never a point of the curve)


def probe_point(cfg: EndpointsConfig, dataset_samples: int, concurrency: int | None) -> tuple[EndpointsPlan, Point]:
    """A short probe at ``concurrency`` (None: Offline, all queries at once): enough queries to keep the load up for
    ``probe_s`` (a pass, or 8 per slot), cut at ``probe_s`` by the client itself; no accuracy. With a one-point plan
    carrying the seed set, for the client's job."""
    seeds, cohort = seed_set(cfg.seed_set, cfg.target_cohort)
    label = PROBE_PREFIX + (OFFLINE_LABEL if concurrency is None else f"c{concurrency}")
    queries = max(dataset_samples, 8 * (concurrency or 0))
    point = Point(label=label, concurrency=concurrency, role="probe", region=None, accuracy=False, offline=None,
                  load_pattern="max_throughput" if concurrency is None else "concurrency", passes=1,
                  n_samples_to_issue=queries, min_duration_s=0.0, max_duration_s=cfg.probe_s)
    plan = EndpointsPlan(benchmark=cfg.benchmark, c_min=cfg.lowest_concurrency, c_max=concurrency or 0,
                         offline=cfg.offline, official=False, dataset_samples=dataset_samples, seed_set=cfg.seed_set,
                         seeds=seeds, target_cohort=cohort, regions={}, points=(point,))
    return plan, point


def needs_probes(cfg: EndpointsConfig) -> bool:
    """Whether planning needs probes first: no highest concurrency, or an official curve without ``passes``."""
    open_c_max = cfg.highest_concurrency is None and not isinstance(cfg.points, list)
    return open_c_max or (not cfg.shortened and cfg.passes is None)


def plan_with_probes(cfg: EndpointsConfig, dataset_samples: int, probe: Callable[[int | None], KneeStep],
                     log: Callable[[str], Any] = lambda _m: None) -> tuple[EndpointsPlan, list[KneeStep]]:
    """The curve, probing first where it must: C_max by :func:`highest_concurrency` when the config leaves it open,
    then the samples/s of every planned point not probed yet (for sizing an official curve's queries)."""
    steps: list[KneeStep] = []
    c_max = None
    if cfg.highest_concurrency is None and not isinstance(cfg.points, list):
        c_max, steps = highest_concurrency(probe)
        log(f"highest concurrency (C_max) {c_max}: the first probed to reach {OFFLINE_TPS_FRACTION:.0%} of "
            f"Offline's system tokens/s ({', '.join(_step_text(s) for s in steps)})")
    rates: dict[Any, float] = {(OFFLINE_LABEL if s.concurrency is None else s.concurrency): s.samples_per_s
                               for s in steps}
    if not cfg.shortened and cfg.passes is None:
        top = cfg.highest_concurrency or c_max or max(cfg.points)  # type: ignore[arg-type]
        wanted = list(cfg.points) if isinstance(cfg.points, list) else auto_points(cfg.lowest_concurrency, top)
        for c in [*wanted, *([None] if cfg.offline == "dedicated" else [])]:
            key = OFFLINE_LABEL if c is None else c
            if key not in rates:
                step = probe(c)
                steps.append(step)
                rates[key] = step.samples_per_s
    return plan_curve(cfg, dataset_samples, rates=rates, c_max=c_max), steps


def _step_text(step: KneeStep) -> str:
    where = "Offline" if step.concurrency is None else f"c{step.concurrency}"
    return f"{where} {step.system_tps:,.1f} tok/s"


@dataclass(frozen=True)
class KneeStep:
    concurrency: int | None  # None: the Offline probe
    system_tps: float
    samples_per_s: float


def highest_concurrency(probe: Callable[[int | None], KneeStep], *, start: int = 64, limit: int = 16384,
                        fraction: float = OFFLINE_TPS_FRACTION, max_probes: int = 12) -> tuple[int, list[KneeStep]]:
    """C_max: the lowest concurrency (> 32) whose probe reaches ``fraction`` of the Offline probe's system tokens/s.
    The capacity search's own bracketing then bisection (``search.algorithm.Bracket``) with concurrency as its rate:
    a probe still below the target "passes" (the curve is not saturated yet), one reaching it "fails"; doubling from
    ``start``, halving towards 33, then bisecting to within 1/8. ``probe(c)`` runs one short probe (``None``:
    Offline). Returns (C_max, steps)."""
    from mlperf_assets.search.algorithm import Bracket

    steps = [probe(None)]
    target = fraction * steps[0].system_tps
    bracket = Bracket(start=float(max(start, ULTRA_LOW_MAX + 1)), growth=2.0, shrink=0.5, tolerance=0.125,
                      max_probes=max_probes, min_qps=float(ULTRA_LOW_MAX + 1), max_qps=float(limit))
    probed: set[int] = set()
    while (rate := bracket.next_qps()) is not None:
        c = round(rate)
        if c in probed:  # bisection down to whole concurrencies
            break
        probed.add(c)
        step = probe(c)
        steps.append(step)
        bracket.record(float(c), passed=step.system_tps < target)
    if bracket.hi is None:
        raise EndpointsPlanError(f"no concurrency up to {round(bracket.lo or limit)} reached {fraction:.0%} of "
                                 f"Offline's system tokens/s ({target:,.1f}): set endpoints.highest_concurrency")
    return round(bracket.hi), steps


def config_problem(cfg: EndpointsConfig) -> str | None:
    """What the planner refuses in the config alone (points, bounds, seed set; no dataset, no probes), for
    ``validate-config``; None when it plans, or when the checker package (the ``[endpoints]`` extra) is missing."""
    import importlib.util

    if importlib.util.find_spec("submission_checker") is None:
        return None
    try:
        seed_set(cfg.seed_set, cfg.target_cohort)
        c_max = cfg.highest_concurrency or (max(cfg.points) if isinstance(cfg.points, list) else None)
        if c_max is not None:
            points = list(cfg.points) if isinstance(cfg.points, list) else auto_points(cfg.lowest_concurrency, c_max)
            check_curve(points, c_max, cfg.offline)
    except EndpointsPlanError as exc:
        return str(exc)
    return None
