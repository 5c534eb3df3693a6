"""Sensors: a report after every successful benchmark run, an alert on every failed run, regression alerts.

All three are factories taking the job definitions, so definitions.py wires them:

    build_report_on_success_sensor([benchmark_job], report_job)
    build_failure_sensor()                                   # every job of the code location
    build_regression_alert_sensor(threshold_pct=10)          # reads the `store` resource (ResultsStore)

Alerts go to the URL in the environment variable MLPERF_DAGSTER_WEBHOOK_URL when it is set, as Slack-compatible
JSON `{"text": ...}`. The URL is a secret (Slack puts the token in the path): it is read at send time, never stored
in a definition, a tag or a log line; logs show only `scheme://host/…`.

Why not `dagster.EnvVar`: EnvVar fills a resource's config field. A webhook resource would put the URL into resource
config the UI and run storage handle; reading the variable by name in the sensor's own process, at send time, keeps
the value in the environment only (docs/setup-guide.md, "Secrets").
"""


import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from jobs.failures import step_failure_message
from resources.store import ResultsStore

WEBHOOK_ENV = "MLPERF_DAGSTER_WEBHOOK_URL"
REPORT_SENSOR = "report_after_benchmark"
FAILURE_SENSOR = "alert_on_run_failure"
REGRESSION_SENSOR = "alert_on_regression"
MAX_TEXT = 3500  # Slack shows ~4k characters of a message comfortably


class WebhookError(RuntimeError):
    """Posting failed; the message never contains the URL's path or query."""


@dataclass(frozen=True)
class WebhookOutcome:
    status: str  # "posted" | "not-configured" | "failed"
    detail: str  # safe to log and store


def redact_url(url: str) -> str:
    """`https://hooks.slack.com/…`: scheme and host only (the path and query carry the secret)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme or '?'}://{host}/…"


def post_webhook(text: str, url: str | None = None, *, timeout_s: float = 10.0) -> WebhookOutcome:
    """POST `{"text": text}` to `url` (default: $MLPERF_DAGSTER_WEBHOOK_URL). Never raises for network trouble."""
    url = url if url is not None else os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return WebhookOutcome("not-configured", f"{WEBHOOK_ENV} is not set: nothing posted")
    safe = redact_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return WebhookOutcome("failed", f"{WEBHOOK_ENV} is not an http(s) URL ({safe}): nothing posted")
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    body = json.dumps({"text": text}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) checked above
            status = response.status
    except urllib.error.HTTPError as exc:
        return WebhookOutcome("failed", f"POST to {safe} answered HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return WebhookOutcome("failed", f"POST to {safe} failed: {type(reason).__name__}")
    if not 200 <= status < 300:
        return WebhookOutcome("failed", f"POST to {safe} answered HTTP {status}")
    return WebhookOutcome("posted", f"posted to {safe}")


# ------------------------------------------------------------------------------------------ report after success


def _as_list(jobs) -> list:
    if jobs is None:
        return []
    if isinstance(jobs, Sequence) and not isinstance(jobs, str):
        return list(jobs)
    return [jobs]


def build_report_on_success_sensor(
    benchmark_jobs, report_job, *, name: str = REPORT_SENSOR, minimum_interval_seconds: int = 30
) -> dg.RunStatusSensorDefinition:
    """Launch `report_job` when a run of `benchmark_jobs` succeeds.

    Never for the report job's own runs (no loop, even if someone adds it to the monitored jobs), and not while a
    report run is already queued (that one will see the new results too).
    """
    monitored = _as_list(benchmark_jobs)
    report_name = report_job.name

    @dg.run_status_sensor(
        name=name,
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=monitored,
        request_job=report_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Runs {report_name} after each successful benchmark run.",
    )
    def _report_after_success(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        if run.job_name == report_name:
            return dg.SkipReason(f"run {run.run_id} is a {report_name} run itself: no new report")
        pending = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=report_name,
                                  statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]),
            limit=1,
        )
        if pending:
            return dg.SkipReason(f"{report_name} run {pending[0].run_id} is already waiting; it will include "
                                 f"run {run.run_id}")
        return dg.RunRequest(
            run_key=f"report-after-{run.run_id}",
            tags={"mlperf/trigger": "benchmark-succeeded", "mlperf/after_run": run.run_id},
        )

    return _report_after_success


# ------------------------------------------------------------------------------------------------ failure alerts


def failure_text(context: dg.RunFailureSensorContext) -> str:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    where = f" (partition {partition})" if partition else ""
    lines = [f":rotating_light: MLPerf run failed: job {run.job_name}{where}, run {run.run_id}"]
    step_errors = []
    try:
        for event in context.get_step_failure_events():
            step_errors.append(f"step {event.step_key}: {step_failure_message(event)[:300]}")
    except Exception:  # noqa: BLE001 - the alert matters more than its detail
        pass
    if step_errors:
        lines += step_errors[:5]
    elif context.failure_event.message:
        lines.append(context.failure_event.message.strip()[:300])
    return "\n".join(lines)


def build_failure_sensor(
    monitored_jobs=None, *, name: str = FAILURE_SENSOR, minimum_interval_seconds: int = 30,
) -> dg.SensorDefinition:
    """Record every failed run (tags on the run, a line in the sensor's log) and post it to the webhook.

    `monitored_jobs=None` watches every job of the code location.
    """

    @dg.run_failure_sensor(
        name=name,
        monitored_jobs=_as_list(monitored_jobs) or None,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records failed runs and posts them to ${WEBHOOK_ENV} when set.",
    )
    def _on_failure(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        text = failure_text(context)
        outcome = post_webhook(text)
        recorded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        context.instance.add_run_tags(run.run_id, {
            "mlperf/failure_recorded_at": recorded_at,
            "mlperf/failure_alert": outcome.status,
        })
        log = context.log.warning if outcome.status == "failed" else context.log.info
        log(f"run {run.run_id} of {run.job_name} failed; alert {outcome.status}: {outcome.detail}")

    return _on_failure


# --------------------------------------------------------------------------------------------- regression alerts


def _utc(value):
    import pandas as pd

    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def regression_text(flags) -> str:
    head = f":chart_with_downwards_trend: MLPerf regression{'s' if len(flags) > 1 else ''} ({len(flags)}):"
    return "\n".join([head, *[f"• {f.message}" for f in flags[:20]]]
                     + ([f"… and {len(flags) - 20} more"] if len(flags) > 20 else []))


def build_regression_alert_sensor(
    *,
    threshold_pct: float = 10.0,
    window: int = 5,
    name: str = REGRESSION_SENSOR,
    minimum_interval_seconds: int = 300,
) -> dg.SensorDefinition:
    """Post regression flags of runs new to this sensor (the same flags the report shows) to the webhook.

    The runs come from the `store` resource (ResultsStore). The cursor is the newest run start already judged; the first tick judges only the latest run of each
    node/scenario/benchmark/backend, so switching the sensor on does not replay history. A failed post keeps the
    cursor, so the alert is retried rather than lost.
    """
    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Posts tokens/s drops and p99 TTFT/TPOT rises beyond {threshold_pct:g}% to ${WEBHOOK_ENV}.",
    )
    def _regression_alert(context: dg.SensorEvaluationContext, store: ResultsStore):
        import pandas as pd

        from mlperf_assets.reporting.regression import detect_regressions, latest_run_ids
        from mlperf_assets.store import StoreError

        if not store.exists():
            return dg.SkipReason(f"no results store at {store.path} yet")
        try:
            summary = store.summary()
        except StoreError as exc:
            return dg.SkipReason(f"results store unavailable: {exc}")
        if summary.empty:
            return dg.SkipReason("the results store holds no runs yet")
        starts = pd.to_datetime(summary["started_at"], errors="coerce", utc=True)
        newest = starts.max()
        if pd.isna(newest):
            return dg.SkipReason("no run has a start time to order by")
        flags = detect_regressions(summary, threshold_pct, window=window)
        if context.cursor:
            since = _utc(context.cursor)
            fresh = [f for f in flags if f.started_at and _utc(f.started_at) > since]
        else:
            latest = latest_run_ids(summary)
            fresh = [f for f in flags if f.run_id in latest]
        cursor = newest.isoformat()
        if not fresh:
            context.update_cursor(cursor)
            return dg.SkipReason("no new regression")
        outcome = post_webhook(regression_text(fresh))
        for flag in fresh:
            context.log.warning(f"regression: {flag.message}")
        if outcome.status == "failed":
            context.log.warning(f"regression alert not delivered: {outcome.detail}; will retry")
            return dg.SkipReason(f"{len(fresh)} regression(s); alert not delivered ({outcome.detail})")
        context.update_cursor(cursor)
        return dg.SkipReason(f"{len(fresh)} regression(s) flagged; alert {outcome.status}")

    return _regression_alert
