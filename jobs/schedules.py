"""The nightly schedule: every node x scenario partition of the benchmark job, at the config's cron and timezone.

Built by a factory so definitions.py decides the job and the config decides the timing:

    build_nightly_schedule(benchmark_job, partitions_def=node_scenario_partitions(cfg),
                           cron=cfg.schedule.cron, timezone=cfg.schedule.timezone)

Each tick yields one RunRequest per partition, with a run key made of the tick time and the partition, so a tick
evaluated twice never launches a partition twice; the queue (dagster.yaml) keeps one run per node at a time.
"""


import dagster as dg

NIGHTLY_SCHEDULE = "nightly_benchmarks"
TRIGGER_TAG = "mlperf/trigger"


def build_nightly_schedule(
    benchmark_job,
    *,
    partitions_def: dg.PartitionsDefinition,
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    name: str = NIGHTLY_SCHEDULE,
    running_by_default: bool = True,
) -> dg.ScheduleDefinition:
    """A schedule launching `benchmark_job` for every partition (node x scenario) at `cron` in `timezone`.

    `partitions_def` is the job's node x scenario partitions (the ones its assets were built with).
    `running_by_default=True` starts it with the Dagster daemon (build it only when the config has a `schedule:`
    section); the UI can stop it.
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
        keys = list(partitions_def.get_partition_keys(dynamic_partitions_store=context.instance))
        if not keys:
            return dg.SkipReason("no node x scenario partitions configured")
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
        return [
            dg.RunRequest(
                run_key=f"nightly-{stamp}-{key}",
                partition_key=key,
                tags={TRIGGER_TAG: "nightly", "mlperf/scheduled_for": stamp},
            )
            for key in keys
        ]

    return _nightly
