"""Nightly schedule, report/failure/regression sensors and the regression asset check, on real Dagster instances.

Jobs really run in process (a partitioned benchmark stand-in, a report stand-in, a job that fails); alerts go to
a webhook served by the test on 127.0.0.1; regression data sits in a real DuckDB store.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from jobs.schedules import build_nightly_schedule
from jobs.sensors import (
    WEBHOOK_ENV,
    build_failure_sensor,
    build_regression_alert_sensor,
    build_report_on_success_sensor,
    post_webhook,
    redact_url,
)
from mlperf_assets.assets.checks import build_regression_check
from resources.store import ResultsStore

NODES = ["node-a", "node-b"]
SCENARIOS = ["Offline", "Server", "SingleStream"]
PARTITIONS = dg.MultiPartitionsDefinition({"node": dg.StaticPartitionsDefinition(NODES),
                                           "scenario": dg.StaticPartitionsDefinition(SCENARIOS)})
SECRET = "T0001/B0002/xoxb-very-secret-token"


@dg.asset(partitions_def=PARTITIONS)
def scenario_run(context) -> None:
    context.log.info(f"benchmark {context.partition_key}")


@dg.asset
def benchmark_report() -> None:
    pass


@dg.op
def explode() -> None:
    raise RuntimeError("boom: the node ran out of GPU memory")


@dg.job
def broken_job() -> None:
    explode()


benchmark_job = dg.define_asset_job("benchmark_job", selection=[scenario_run])  # partitions come from the asset
report_job = dg.define_asset_job("report_job", selection=[benchmark_report])
report_sensor = build_report_on_success_sensor([benchmark_job], report_job)
failure_sensor = build_failure_sensor()
defs = dg.Definitions(assets=[scenario_run, benchmark_report], jobs=[benchmark_job, report_job, broken_job],
                      sensors=[report_sensor, failure_sensor])


class Webhook:
    """A webhook endpoint on 127.0.0.1 that records every POST (path and JSON body) and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[tuple[str, dict]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((self.path, json.loads(body)))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


# ---------------------------------------------------------------------------------------------------- schedule


def test_schedule_tick_requests_every_partition(instance) -> None:
    schedule = build_nightly_schedule(benchmark_job, partitions_def=PARTITIONS, cron="30 1 * * *",
                                      timezone="Europe/Paris")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 1 * * *", "Europe/Paris")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    when = datetime(2026, 11, 28, 0, 30, tzinfo=timezone.utc)
    repo = dg.Definitions(assets=[scenario_run], jobs=[benchmark_job], schedules=[schedule]).get_repository_def()

    def tick():
        return schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                                                repository_def=repo))

    data = tick()
    assert data.skip_message is None
    requests = data.run_requests
    assert sorted(r.partition_key for r in requests) == sorted(f"{n}|{s}" for n in NODES for s in SCENARIOS)
    assert len({r.run_key for r in requests}) == 6
    assert all(r.tags["mlperf/trigger"] == "nightly" for r in requests)
    assert [r.run_key for r in tick().run_requests] == [r.run_key for r in requests]  # a re-evaluated tick dedupes


def test_schedule_with_the_platform_definitions_and_default_config(instance) -> None:
    from jobs.schedules import NIGHTLY_SCHEDULE
    from mlperf_assets.config import load_config
    from mlperf_assets.definitions import build_definitions

    config = load_config(None, use_env_dataset=False)
    repo = build_definitions(config).get_repository_def()
    schedule = repo.get_schedule_def(NIGHTLY_SCHEDULE)  # the schedule the code location serves
    context = dg.build_schedule_context(instance=instance, repository_def=repo,
                                        scheduled_execution_time=datetime(2026, 11, 28, 4, tzinfo=timezone.utc))
    requests = schedule.evaluate_tick(context).run_requests
    # the partitions come from the config file, not from our code
    assert {r.partition_key for r in requests} == {f"{n}|{s}" for n in config.node_names for s in config.scenario_names}


# ------------------------------------------------------------------------------------------- report-on-success


def status_context(instance, result, sensor):
    event = result.get_run_success_event() if result.success else result.get_run_failure_event()
    return dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_instance=instance,
                                              dagster_run=result.dagster_run, dagster_event=event,
                                              repository_def=defs.get_repository_def())


def test_benchmark_success_requests_a_report_and_the_report_does_not_loop(instance) -> None:
    bench = defs.get_job_def("benchmark_job").execute_in_process(instance=instance, partition_key="node-a|Server")
    assert bench.success
    request = report_sensor(status_context(instance, bench, report_sensor))
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"report-after-{bench.run_id}" and request.tags["mlperf/after_run"] == bench.run_id

    report = defs.get_job_def("report_job").execute_in_process(instance=instance)
    assert report.success
    skipped = report_sensor(status_context(instance, report, report_sensor))
    assert isinstance(skipped, dg.SkipReason) and "itself" in skipped.skip_message

    # a report run already waiting in the queue will see the new results: no second request
    instance.create_run_for_job(defs.get_job_def("report_job"), status=dg.DagsterRunStatus.NOT_STARTED)
    waiting = report_sensor(status_context(instance, bench, report_sensor))
    assert isinstance(waiting, dg.SkipReason) and "already waiting" in waiting.skip_message
    assert report_sensor.default_status == dg.DefaultSensorStatus.RUNNING


# ---------------------------------------------------------------------------------------------- failure alerts


def failed_run(instance):
    result = defs.get_job_def("broken_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return result


def failure_context(instance, result):
    return status_context(instance, result, failure_sensor).for_run_failure()


def test_failed_run_is_recorded_and_posted(instance, webhook, monkeypatch, caplog, capsys) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, webhook.url)
    caplog.set_level(logging.DEBUG)
    result = failed_run(instance)
    failure_sensor(failure_context(instance, result))

    assert len(webhook.posts) == 1
    path, body = webhook.posts[0]
    assert path == f"/services/{SECRET}" and set(body) == {"text"}
    assert "broken_job" in body["text"] and result.run_id in body["text"]
    assert "boom: the node ran out of GPU memory" in body["text"]
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["mlperf/failure_alert"] == "posted" and "mlperf/failure_recorded_at" in tags
    # the URL's secret part appears nowhere: not in tags, logs or output
    captured = capsys.readouterr()
    for text in (json.dumps(dict(tags)), caplog.text, captured.out, captured.err):
        assert "very-secret" not in text


def test_failure_without_webhook_is_still_recorded(instance, monkeypatch) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    result = failed_run(instance)
    failure_sensor(failure_context(instance, result))
    assert instance.get_run_by_id(result.run_id).tags["mlperf/failure_alert"] == "not-configured"


def test_webhook_errors_never_raise_nor_leak() -> None:
    failing = Webhook(status=500)
    try:
        outcome = post_webhook("hello", failing.url)
        assert outcome.status == "failed" and "HTTP 500" in outcome.detail and "secret" not in outcome.detail
        assert failing.posts == [(f"/services/{SECRET}", {"text": "hello"})]
    finally:
        failing.close()
    port_closed = f"http://127.0.0.1:{failing.server.server_address[1]}/services/{SECRET}"
    outcome = post_webhook("hello", port_closed, timeout_s=2)
    assert outcome.status == "failed" and "secret" not in outcome.detail
    assert post_webhook("x", "file:///etc/passwd").status == "failed"
    assert redact_url(f"https://user:pw@hooks.example.com:8443/services/{SECRET}?x=1") == "https://hooks.example.com:8443/…"


# ------------------------------------------------------------------------------------------ regression alerts


@pytest.fixture
def regression_db(tmp_path: Path, mlperf_logs_dir: Path) -> Path:
    """One real Server run, then four more nights of it under new ids: steady, steady, steady, then -30 %."""
    from mlperf_assets import store

    db = tmp_path / "r.duckdb"
    folder = mlperf_logs_dir / "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server" / "performance"
    store.ingest_path(db, folder, node="gpu-1", backend="vllm", benchmark="llama3.1-8b")
    add_night(db, 1, 1.0)
    add_night(db, 2, 1.01)
    add_night(db, 3, 0.99)
    return db


def add_night(db: Path, night: int, factor: float) -> None:
    from mlperf_assets import store

    with store.open_for_write(db) as conn:
        conn.execute(f"""INSERT INTO runs SELECT * REPLACE (
                'night-{night}' AS run_id, 'night-{night}' AS group_id, '/nights/{night}' AS source_path,
                started_at + to_days({night}) AS started_at,
                tokens_per_second * {factor} AS tokens_per_second,
                completed_tokens_per_second * {factor} AS completed_tokens_per_second)
            FROM runs WHERE run_id NOT LIKE 'night-%'""")


def test_regression_alert_sensor_posts_new_flags_once(instance, webhook, monkeypatch, regression_db) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, webhook.url)
    sensor = build_regression_alert_sensor(threshold_pct=10)
    store = {"store": ResultsStore(path=str(regression_db))}
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=store))
    assert webhook.posts == [] and "no new regression" in first.skip_message

    add_night(regression_db, 4, 0.7)
    second = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=store))
    assert len(webhook.posts) == 1
    text = webhook.posts[0][1]["text"]
    assert "gpu-1" in text and "tokens/s fell 30.0%" in text and "night-4" in text
    assert "1 regression" in second.skip_message

    third = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=second.cursor, resources=store))
    assert len(webhook.posts) == 1 and "no new regression" in third.skip_message  # posted once


def test_regression_alert_waits_for_a_store(instance, tmp_path: Path) -> None:
    sensor = build_regression_alert_sensor()
    store = {"store": ResultsStore(path=str(tmp_path / "missing.duckdb"))}
    assert "no results store" in sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=store)).skip_message


def test_regression_check_warns(instance, regression_db) -> None:
    check = build_regression_check("benchmark_report", threshold_pct=10)
    store = {"store": ResultsStore(path=str(regression_db))}
    ok = dg.materialize([benchmark_report, check], instance=instance, resources=store)
    (evaluation,) = ok.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN

    add_night(regression_db, 4, 0.7)
    bad = dg.materialize([benchmark_report, check], instance=instance, resources=store)
    assert bad.success  # WARN never blocks
    (evaluation,) = bad.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["regressions"].value == 1
    assert "night-4" in evaluation.metadata["flags"].value
    assert evaluation.check_name == "no_performance_regression"


def test_regression_check_reads_the_store_resource(instance, regression_db) -> None:
    add_night(regression_db, 4, 0.5)
    check = build_regression_check("benchmark_report")
    result = dg.materialize([benchmark_report, check], instance=instance,
                            resources={"store": ResultsStore(path=str(regression_db))})
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["regressions"].value == 1
