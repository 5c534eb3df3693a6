"""The capacity search (``mlperf_assets/search.py``, ``max_qps_search``, ``mlperf-dagster search-qps``).

Pure parts first (judgement, bracketing + bisection, resume, confirmation step-down) on made-up probe results; then
real searches on the ``sim`` backend through the local runner, real LoadGen, DuckDB and a Dagster instance:

- two capacities, each found within 5% of the true maximum VALID QPS in at most 8 probes. The truth comes from the
  capacity model (``sim.modelled_max_qps``) replayed in virtual time on LoadGen's own arrival schedule (LoadGen
  draws it from fixed seeds and scales it as 1/rate, so one replay run gives it);
- an unreachable target: every rate fails, the search stops with a clear message and keeps what it tried;
- interruption (Ctrl-C) and node loss mid-probe: the stored steps stay, and the next run resumes (reattaching to
  the probe the lost node was running) instead of starting over.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlperf_assets import store
from mlperf_assets.config import SearchConfig, load_config
from mlperf_assets.harness.backends.sim import CapacityModel, modelled_max_qps, unit_schedule
from mlperf_assets.harness.dataset import load_prepared, prepare_dataset
from mlperf_assets.search import (
    CONFIRM,
    ESTIMATE,
    FOUND,
    PROBE,
    RESULT,
    UNCONFIRMED,
    UNREACHABLE,
    Bracket,
    Limits,
    ProbeFigures,
    SearchError,
    Step,
    judge,
    run_search,
    search_id_for,
    search_node,
)
from resources.runners import LocalRunner, RunUnreachable

PROJECT = Path(__file__).resolve().parents[2]
LIMITS = Limits(ttft_ns=5e8, tpot_ns=3e7)  # llama3_1-8b-interactive
log = logging.getLogger("test_qps_search")


# ------------------------------------------------------------------------------------------------ pure parts


def figures(valid: bool = True, ttft_ms: float = 100, tpot_ms: float = 20, completed: float | None = None,
            limits: Limits = LIMITS) -> ProbeFigures:
    return ProbeFigures("r", "VALID" if valid else "INVALID", limits, ttft_ms * 1e6, tpot_ms * 1e6, None,
                        completed_samples_per_second=completed, duration_s=3.0)


def test_judge_uses_loadgen_verdict_limits_and_margin():
    assert judge(figures(), 0.1).passed
    v = judge(figures(tpot_ms=28), 0.1)  # under the 30 ms limit, over the 27 ms the margin allows
    assert not v.passed and "TPOT p99 28.0 ms > 27.0 ms (90% of 30.0 ms)" in v.reason
    assert judge(figures(tpot_ms=28), 0.0).passed
    v = judge(figures(valid=False), 0.1)
    assert not v.passed and v.reason.startswith("LoadGen: INVALID")
    v = judge(ProbeFigures("r", "VALID", LIMITS, None, 1e7), 0.1)
    assert not v.passed and "no TTFT p99" in v.reason
    gptj = Limits.for_run({"target_latency_ns": None}, "gptj")  # judged end to end, from the registry
    assert gptj == Limits(None, None, 2e10)
    assert judge(ProbeFigures("r", "VALID", gptj, latency_p99_ns=1.9e10), 0.0).passed
    own = Limits.for_run({"ttft_latency_ns": 4e8, "tpot_latency_ns": None}, "llama3_1-8b")  # the run's log first
    assert own == Limits(4e8, 1e8, None)


@pytest.mark.parametrize("truth", [23.0, 47.0, 89.0, 100.0, 180.0, 224.0])
def test_bracketing_and_bisection_converge_within_tolerance(truth):
    """Within 8 probes whenever the true maximum is between a quarter and 2.5 times the first probe."""
    b = Bracket(start=90.0, tolerance=0.03, max_probes=8)
    while (q := b.next_qps()) is not None:
        b.record(q, q <= truth)
    assert b.converged() and b.lo <= truth < b.hi and b.probes <= 8
    assert b.hi / b.lo <= 1.03
    far = Bracket(start=90.0, tolerance=0.03, max_probes=8, min_qps=5.0)  # below the floor: stops, says so
    while (q := far.next_qps()) is not None:
        far.record(q, q <= 1.0)
    assert far.lo is None and far.fails == [90.0, 45.0, 22.5, 11.25, 5.625, 5.0]


def fake_probe(truth: float, calls: list, completed_cap: float | None = None):
    def probe(step: int, kind: str, qps: float) -> ProbeFigures:
        calls.append((step, kind, qps))
        ok = qps <= truth if kind == PROBE else qps <= (completed_cap or truth)
        done = min(qps, completed_cap) if completed_cap else qps
        return figures(valid=ok, tpot_ms=20 if ok else 35, completed=done)
    return probe


def test_run_search_finds_confirms_and_resumes_after_an_interrupt():
    settings = SearchConfig(tolerance_pct=3, max_probes=8)
    saved: list[Step] = []
    calls: list = []
    out = run_search(settings, search_id="s-1", estimate=lambda: (100.0, "test", None),
                     probe=fake_probe(63.0, calls), save=saved.append)
    assert out.status == FOUND and 63.0 * 0.97 <= out.qps <= 63.0 and out.probes <= 8
    assert [s.kind for s in saved][0] == ESTIMATE and saved[-2].kind == CONFIRM and saved[-1].kind == RESULT
    assert [s.step for s in saved] == list(range(len(saved)))

    # interrupted after step 3: the stored steps are replayed, not measured again
    class Stop(Exception):
        pass

    first: list[Step] = []

    def stop_after_three(step: Step, reused: bool) -> None:
        if step.step == 3:
            raise Stop

    with pytest.raises(Stop):
        run_search(settings, search_id="s-1", estimate=lambda: (100.0, "test", None), probe=fake_probe(63.0, []),
                   save=first.append, on_step=stop_after_three)
    assert [s.step for s in first] == [0, 1, 2, 3]
    calls2: list = []
    reused: list[int] = []
    again = run_search(settings, search_id="s-1", estimate=lambda: pytest.fail("estimate measured again"),
                       probe=fake_probe(63.0, calls2), stored=first, save=first.append,
                       on_step=lambda s, r: reused.append(s.step) if r else None)
    assert reused == [0, 1, 2, 3] and all(step >= 4 for step, _, _ in calls2)
    assert again.qps == out.qps and [s.target_qps for s in again.steps] == [s.target_qps for s in saved]
    # a finished search replays completely, without a single measurement
    done = run_search(settings, search_id="s-1", estimate=lambda: pytest.fail("estimate"),
                      probe=lambda *a: pytest.fail("probe"), stored=list(first))
    assert done.qps == out.qps and done.steps[-1].kind == RESULT
    # stored steps that are not what the search would do next are refused, not silently mixed in
    odd = [Step("s-1", 0, ESTIMATE, 100.0, "estimate"), Step("s-1", 1, PROBE, 55.0, "pass")]
    with pytest.raises(SearchError, match="stored step 1"):
        run_search(settings, search_id="s-1", estimate=lambda: (100.0, "t", None), probe=fake_probe(63.0, []),
                   stored=odd)


def test_failed_confirmation_steps_down_as_far_as_needed():
    """Short probes pass above the long-run capacity (a backlog needs time to grow); the failed confirmation
    completed only what the system sustains, and the next confirmation goes just under that. A confirmation over a
    latency limit steps down by what the probes' slope says, within 1% to step_down_pct."""
    settings = SearchConfig(tolerance_pct=3, max_probes=8, step_down_pct=5)
    calls: list = []
    out = run_search(settings, search_id="s-2", estimate=lambda: (100.0, "t", None),
                     probe=fake_probe(80.0, calls, completed_cap=60.0))
    confirms = [q for _, kind, q in calls if kind == CONFIRM]
    assert len(confirms) == 2 and confirms[1] == pytest.approx(0.95 * 60.0)
    assert out.status == FOUND and out.qps == pytest.approx(57.0)
    # over a latency limit by a hair: down only as far as the probes' p99 slope says (TPOT ~ rate^2 here)
    def slope_two(step: int, kind: str, qps: float) -> ProbeFigures:
        tpot = 27.0 * (qps / 80.0) ** 2 * (1.08 if kind == CONFIRM else 1.0)
        return figures(valid=tpot <= 30.0, tpot_ms=tpot, completed=qps)

    calls = []
    out = run_search(SearchConfig(margin_pct=0), search_id="s-4", estimate=lambda: (100.0, "t", None),
                     probe=lambda step, kind, qps: calls.append((kind, qps)) or slope_two(step, kind, qps))
    first, second = [q for kind, q in calls if kind == CONFIRM]
    assert 0.95 * first < second < 0.99 * first and out.status == FOUND and out.qps == second
    assert out.qps > 0.95 * 80.0 * (30 / 27 / 1.08) ** 0.5  # within 5% of the confirmation's true maximum

    def long_runs_fail(step: int, kind: str, qps: float) -> ProbeFigures:
        return figures(valid=kind == PROBE and qps <= 80.0, tpot_ms=25 if kind == PROBE else 33, completed=qps)

    never = run_search(SearchConfig(confirm_attempts=2), search_id="s-3", estimate=lambda: (100.0, "t", None),
                       probe=long_runs_fail)
    assert never.status == UNCONFIRMED and never.qps is None and "2 confirmation run(s) failed" in never.message


def test_search_ids_resume_or_start_fresh():
    assert search_id_for("abc", [], fresh=False) == "abc-1"
    assert search_id_for("abc", ["abc-1", "abc-2", "xyz-9"], fresh=False) == "abc-2"
    assert search_id_for("abc", ["abc-1", "abc-2"], fresh=True) == "abc-3"


# ------------------------------------------------------------------------------------------------ real searches

FAST = {"max_num_seqs": 512, "prefill_tokens_per_s": 2e7, "decode_step_ms": 10, "decode_ms_per_seq": 0.05,
        "output_tokens": 16}
SLOW = {**FAST, "decode_ms_per_seq": 0.1}  # each sequence costs twice as much: about half the rate
SEARCH = {"probe_duration_s": 2.5, "confirm_duration_s": 4, "min_queries": 600, "tolerance_pct": 3, "max_probes": 8,
          "margin_pct": 0}


@pytest.fixture(scope="module")
def dataset(stories_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("searchds") / "prepared.json"
    return prepare_dataset("stories", stories_dir, out, benchmark="llama3.1-8b", tokenizer="byte", max_samples=20)


@pytest.fixture(scope="module")
def loadgen_schedule(dataset, tmp_path_factory):
    """LoadGen's Server arrival schedule at rate 1 (gaps, sample indices), from one fast replay run."""
    out = tmp_path_factory.mktemp("schedule") / "run"
    r = subprocess.run([sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", "Server", "--mode",
                        "performance", "--backend", "replay", "--dataset", str(dataset), "--output-dir", str(out),
                        "--target-qps", "2000", "--min-duration-ms", "4000", "--lg-model-name",
                        "llama3_1-8b-interactive"], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return unit_schedule([s["issue_ns"] for s in rows], [s["qsl_idx"] for s in rows], 2000.0)


def true_max(engine: dict, dataset: Path, schedule) -> float:
    """The highest rate at which a run of the confirmation's length keeps p99 TTFT and TPOT under the Interactive
    limits, by the capacity model on LoadGen's schedule: the true maximum VALID QPS the search must find."""
    ds = load_prepared(dataset)
    return modelled_max_qps(
        CapacityModel(**engine), ttft_limit_s=0.5, tpot_limit_s=0.030,
        duration_s=SEARCH["confirm_duration_s"], min_queries=SEARCH["min_queries"],
        prompt_tokens=[len(ds.prompt_token_ids(i)) for i in range(len(ds))],
        reference_tokens=[len(ds.reference_token_ids(i)) for i in range(len(ds))], schedules=[schedule])


def write_config(folder: Path, dataset: Path, engine: dict, **search) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "storage": {"artifact_root": "artifacts", "duckdb_path": "mlperf.duckdb", "report_dir": "report"},
        "dataset": {"source": "local", "path": str(dataset)},
        "benchmark": {"model": "llama3.1-8b", "checkpoint": None, "backend": "sim", "engine": engine,
                      "scenarios": {"Server": {}}, "accuracy": False, "progress_interval_s": 0.5},
        "nodes": [{"name": "local", "runner": "local"}],
        "search": {**SEARCH, **search},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def fast_polls(monkeypatch):
    monkeypatch.setattr(LocalRunner, "poll_interval_s", 0.2)


@pytest.mark.slow
def test_cli_search_finds_the_fast_capacity(dataset, loadgen_schedule, tmp_path, monkeypatch, capsys, fast_polls):
    """`mlperf-dagster search-qps` on a real Dagster instance: the Offline estimate probe, the probes, the
    confirmation, every step in DuckDB, the suggestion printed last and written as YAML."""
    from mlperf_assets.cli import main

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    path = write_config(tmp_path / "fast", dataset, FAST)
    assert main(["search-qps", "--config", str(path), "--scenario", "Interactive"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    config = load_config(path)
    steps = store.read_qps_search(config.storage.duckdb_path)
    kinds = [s["kind"] for s in steps]
    probes = kinds.count(PROBE)
    truth = true_max(FAST, dataset, loadgen_schedule)
    found = steps[-1]["target_qps"]
    print(f"fast: found {found:.1f} QPS, true max {truth:.1f}, {probes} probes")
    assert steps[-1]["verdict"] == FOUND and kinds[0] == ESTIMATE and "Offline probe" in steps[0]["reason"]
    assert probes <= 8 and abs(found - truth) / truth <= 0.05, (found, truth)
    assert printed[-1].strip() == f"benchmark.scenarios.Server.target_qps: {found:.2f}"
    assert printed[-2].strip() == "benchmark.lg_model_name: llama3_1-8b-interactive"
    assert any("step 1 probe at" in line for line in printed)
    # every probe is a LoadGen run in run_summary, labelled a simulation
    ids = [s["run_id"] for s in steps if s["kind"] in (ESTIMATE, PROBE, CONFIRM)]
    _, rows = store.query_rows(config.storage.duckdb_path, "SELECT s.run_id, s.backend_kind, r.lg_model_name FROM "
                               "run_summary s JOIN runs r USING (run_id) WHERE list_contains(?, s.run_id)", [ids])
    assert len(rows) == len(ids) and {r[1] for r in rows} == {"simulation"}
    assert {r[2] for r in rows} == {"llama3_1-8b-interactive", "llama3_1-8b"}  # the Offline estimate: the default
    suggestion = yaml.safe_load((config.storage.report_dir / "qps_search_local_Interactive.yaml").read_text())
    assert suggestion["benchmark"]["scenarios"]["Server"]["target_qps"] == pytest.approx(found, abs=0.01)
    # the report draws the search and keeps the probes out of the latest results
    from mlperf_assets.reporting import build_report

    report = build_report(config.storage.duckdb_path, tmp_path / "report")
    assert "qps_search" in report.charts_drawn and report.n_runs == kinds.count(CONFIRM)


@pytest.mark.slow
def test_search_finds_the_slow_capacity(dataset, loadgen_schedule, tmp_path, fast_polls):
    """Half the capacity, found through ``search_node`` and the local runner (no Dagster), from a given estimate."""
    config = load_config(write_config(tmp_path, dataset, SLOW, start_qps=500))
    runner = LocalRunner(config.node("local"))
    result = search_node(config, "local", "Interactive", runner, dataset, dagster_run_id="test-slow", log=log)
    truth = true_max(SLOW, dataset, loadgen_schedule)
    out = result.outcome
    print(f"slow: found {out.qps:.1f} QPS, true max {truth:.1f}, {out.probes} probes")
    assert out.status == FOUND and out.probes <= 8 and abs(out.qps - truth) / truth <= 0.05, (out.qps, truth)


@pytest.mark.slow
def test_probes_are_not_padded_to_whole_multiples_of_the_loaded_samples(dataset, tmp_path):
    """llama3.1-8b's Server runs have sample_concatenate_permutation on (mlperf.conf): LoadGen pads a schedule to whole
    multiples of the loaded samples. Probes turn it off so they last probe_duration_s; the confirmation keeps it.
    Real LoadGen (replay backend) on the probe and confirmation specs as the search builds them: 5 QPS for 1 s
    against 20 loaded samples."""
    from mlperf_assets.loadgen_logs import parse_detail_log
    from mlperf_assets.search import probe_settings
    from mlperf_assets.harness.args import RunSpec

    config = load_config(write_config(tmp_path, dataset, FAST, probe_duration_s=1, confirm_duration_s=1,
                                      min_queries=1))
    assert probe_settings(config, ESTIMATE, 1.0)["sample_concatenate_permutation"] is False
    generated = {}
    for kind in (PROBE, CONFIRM):
        spec = RunSpec(run_id=f"pad-{kind}", node="local", scenario="Server", mode="performance",
                       benchmark="llama3.1-8b", backend="replay", dataset_path=str(dataset),
                       settings=probe_settings(config, kind, 5.0), lg_model_name="llama3_1-8b")
        out = tmp_path / kind
        r = subprocess.run(spec.harness_argv(sys.executable, str(out)), capture_output=True, text=True, cwd=PROJECT,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        detail = parse_detail_log(out / "mlperf_log_detail.txt")
        generated[kind] = (detail.get("effective_sample_concatenate_permutation"), detail.get("generated_query_count"))
    assert generated[CONFIRM] == (True, 20)  # ~5 queries padded to the 20 loaded samples: 4 s instead of 1
    padded, count = generated[PROBE]
    assert padded is False and count < 20, generated


@pytest.mark.slow
def test_unreachable_target_stops_with_a_clear_message(dataset, tmp_path, fast_polls):
    """Every step takes 40 ms, more than the 30 ms Interactive TPOT limit at any load: the search steps down to
    search.min_qps, says so, and keeps every probe it ran."""
    import dagster as dg

    from mlperf_assets.assets.dataset import DATASET_KEY
    from mlperf_assets.assets.search import build_max_qps_search
    from mlperf_assets.definitions import build_resources

    engine = {**FAST, "decode_step_ms": 40}
    config = load_config(write_config(tmp_path, dataset, engine, start_qps=400, min_qps=150, probe_duration_s=1.5,
                                      min_queries=300))
    asset = build_max_qps_search(config)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset, dg.AssetSpec(DATASET_KEY)], partition_key=dg.MultiPartitionKey({"node": "local", "scenario": "Interactive"}), instance=instance,
            resources=build_resources(config), raise_on_error=False, selection=[asset.key])
        assert not result.success
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
        text = failure.event_specific_data.error.message
    assert "unreachable: no rate passed. Even the lowest, 150.00 QPS, failed" in text
    assert "TPOT p99" in text and "search.min_qps 150" in text
    steps = store.read_qps_search(config.storage.duckdb_path)
    probes = [s for s in steps if s["kind"] == PROBE]
    assert [round(s["target_qps"], 2) for s in probes] == [360.0, 180.0, 150.0]
    assert all(s["verdict"] == "fail" and s["tpot_p99_ns"] > 3e7 for s in probes)
    assert steps[-1]["kind"] == RESULT and steps[-1]["verdict"] == UNREACHABLE
    _, rows = store.query_rows(config.storage.duckdb_path, "SELECT count(*) FROM run_summary WHERE "
                               "list_contains(?, run_id)", [[s["run_id"] for s in probes]])
    assert rows[0][0] == 3


class LosesTheNode(LocalRunner):
    """The node stops answering once a probe is running (the probe itself keeps going)."""

    def poll(self, handle):
        progress = super().poll(handle)
        raise RunUnreachable(f"node {self.node}: connection lost (test) while {handle.run_id} was {progress.state}")


@pytest.mark.slow
def test_interrupt_and_node_loss_resume_instead_of_starting_over(dataset, tmp_path, fast_polls):
    config = load_config(write_config(tmp_path, dataset, SLOW, start_qps=500, tolerance_pct=10, max_probes=4))
    db = config.storage.duckdb_path

    class CtrlC(KeyboardInterrupt):
        pass

    def interrupt_at_step_two(step, reused):
        if step.step == 2:
            raise CtrlC

    with pytest.raises(CtrlC):
        search_node(config, "local", "Interactive", LocalRunner(config.node("local")), dataset,
                    dagster_run_id="run-1", log=log, on_step=interrupt_at_step_two)
    kept = store.read_qps_search(db)
    assert [s["step"] for s in kept] == [0, 1, 2]  # the estimate and two probes survive the interrupt

    from resources.runners.ledger import PartitionRunError, read_active

    with pytest.raises(PartitionRunError, match="connection lost"):
        search_node(config, "local", "Interactive", LosesTheNode(config.node("local")), dataset,
                    dagster_run_id="run-2", log=log)
    record = read_active(config.storage.artifact_root, "local", "Interactive-search")
    assert record is not None  # the probe in flight is remembered, not forgotten
    lost_run = record.run_id
    assert [s["step"] for s in store.read_qps_search(db)] == [0, 1, 2]

    seen: list[tuple[int, bool]] = []
    result = search_node(config, "local", "Interactive", LocalRunner(config.node("local")), dataset,
                         dagster_run_id="run-3", log=log, on_step=lambda s, r: seen.append((s.step, r)))
    assert seen[:3] == [(0, True), (1, True), (2, True)] and (3, False) in seen
    steps = store.read_qps_search(db)
    assert steps[3]["run_id"] == f"{lost_run}-performance"  # the lost node's probe was reattached and collected
    assert result.outcome.status == FOUND and result.reused == 3
    assert [s["step"] for s in steps] == list(range(len(steps)))
    ids = [s["run_id"] for s in steps if s["run_id"]]
    assert len(ids) == len(set(ids))
    _, rows = store.query_rows(db, "SELECT count(*) FROM runs WHERE node = 'local'")
    assert rows[0][0] == len(ids)  # nothing measured twice
