"""The nightly schedule: every node x scenario partition of the benchmark job, at the config's cron and timezone.

Built by a factory so definitions.py decides the job and the config decides the timing:

    build_nightly_schedule(benchmark_job, cron=cfg.schedule.cron, timezone=cfg.schedule.timezone)

Each tick yields one RunRequest per partition, with a run key made of the tick time and the partition, so a tick
evaluated twice never launches a partition twice; the queue (dagster.yaml) keeps one run per node at a time.
"""


import dagster as dg

NIGHTLY_SCHEDULE = "nightly_benchmarks"
TRIGGER_TAG = "mlperf/trigger"


def _partitions_of(job, partitions_def, context: dg.ScheduleEvaluationContext):
    if partitions_def is not None:
        return partitions_def
    found = getattr(job, "partitions_def", None)
    if found is not None:
        return found
    try:
        repo = context.repository_def  # raises when the context was built without one
    except dg.DagsterInvariantViolationError:
        return None
    return repo.get_job(job.name).partitions_def if repo is not None else None


def build_nightly_schedule(
    benchmark_job,
    *,
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    partitions_def: dg.PartitionsDefinition | None = None,
    name: str = NIGHTLY_SCHEDULE,
    running_by_default: bool = True,
) -> dg.ScheduleDefinition:
    """A schedule launching `benchmark_job` for every partition (node x scenario) at `cron` in `timezone`.

    `partitions_def` defaults to the job's own. `running_by_default=True` starts it with the Dagster daemon (build
    it only when the config has a `schedule:` section); the UI can stop it.
    """

    @dg.schedule(
        name=name,
        job=benchmark_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if running_by_default else dg.DefaultScheduleStatus.STOPPED,
        description=f"Nightly MLPerf runs: every node x scenario partition at '{cron}' ({timezone}).",
    )
    def _nightly(context: dg.ScheduleEvaluationContext):
        pdef = _partitions_of(benchmark_job, partitions_def, context)
        if pdef is None:
            return dg.SkipReason(f"job {benchmark_job.name} has no node x scenario partitions to launch")
        keys = list(pdef.get_partition_keys(dynamic_partitions_store=context.instance))
        if not keys:
            return dg.SkipReason("no node x scenario partitions configured")
        try:
            when = context.scheduled_execution_time
        except Exception:  # noqa: BLE001 - a context built by hand (tests, `dagster schedule preview`) has none
            when = None
        stamp = when.strftime("%Y-%m-%dT%H:%M") if when is not None else "manual"
        return [
            dg.RunRequest(
                run_key=f"nightly-{stamp}-{key}",
                partition_key=key,
                tags={TRIGGER_TAG: "nightly", "mlperf/scheduled_for": stamp},
            )
            for key in keys
        ]

    return _nightly
