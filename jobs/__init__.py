"""Jobs, schedules and sensors of the code location."""

from .jobs import BENCHMARK_JOB, DATASET_JOB, REPORT_JOB, SUBMISSION_JOB, build_jobs

__all__ = ["BENCHMARK_JOB", "DATASET_JOB", "REPORT_JOB", "SUBMISSION_JOB", "build_jobs"]
