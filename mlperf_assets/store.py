"""The DuckDB results store: schema (numbered migrations), ingest of LoadGen run folders, accuracy results, queries.

Guarantees:

* Every run folder is parsed completely, and every value checked against its column, before anything is
  written; bad input raises :class:`~mlperf_assets.loadgen_logs.LogFormatError` (naming the file, and the line
  and key of a value no column can hold) and leaves the database untouched.
* One ingest is one transaction: all its runs are stored or none (a full disk, a value DuckDB refuses: the
  transaction is rolled back and :class:`StoreError` says so in one line). Each run first loses its earlier
  rows, so re-ingesting replaces. Run ids do not depend on the path (see ``loadgen_logs.content_key``): the same
  run folder through a symlink, another relative path or a copy is one row.
* GPU telemetry (``telemetry.jsonl``, migration 6) is read and checked with the run, before the database is
  opened, and written in the same transaction. It is auxiliary, like a verification file of no known form: a
  malformed file (not JSON lines, a wrong type, NaN/Infinity, a value out of range) is left out whole, with one
  line naming file and line in the run's ``parse_notes`` and the ingest's ``skipped``, and the run's LoadGen
  results are stored as ever; a last line cut short (the run was killed mid-write) is dropped with a note.
* Nothing reaches the database file before a commit (no optimistic writes; every commit goes through the WAL),
  so a failed ingest leaves it byte-identical.
* Writers are serialized by a file lock beside the database (``<db>.lock``); waiting longer than the timeout
  raises :class:`StoreLockedError`. A DuckDB file held open by a process that does not use the lock is
  reported the same way.

Units everywhere: latencies in nanoseconds (``*_ns``), throughput per second, times naive UTC.
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from mlperf_assets.harness.run_folder import PROGRESS, RUN_MANIFEST, SAMPLES, TELEMETRY
from mlperf_assets.loadgen_logs import (
    ACCURACY_INT_METRICS,
    LogFormatError,
    NoRunsFoundError,
    ParsedRun,
    Skipped,
    content_key,
    discover_runs,
    headline,
    parse_runs,
)
from mlperf_assets.numbers import NumberError, as_float, as_int, checked_int, fits

if TYPE_CHECKING:  # heavy imports stay inside functions
    import duckdb
    import pandas

__all__ = [
    "IngestReport",
    "IngestedRun",
    "LogFormatError",
    "NoRunsFoundError",
    "RUN_SUMMARY_COLUMNS",
    "SCHEMA_VERSION",
    "StoreError",
    "StoreLockedError",
    "StoreValueError",
    "ingest_path",
    "ingest_parsed",
    "query",
    "query_rows",
    "save_accuracy",
]


class StoreError(RuntimeError):
    """The database cannot be used (missing, newer schema, not a DuckDB file)."""


class StoreLockedError(StoreError):
    """Another writer holds the database; the message says which file and how long we waited."""


class StoreValueError(StoreError):
    """A parsed value no column can hold (the parser checks the known ones; this is the store's own check)."""


# --------------------------------------------------------------------------------------------- schema

_FIGURE_COLS = [
    f"{m}_{s}_ns" for m in ("latency", "ttft", "tpot") for s in ("min", "max", "mean", "p50", "p90", "p95", "p97", "p99", "p999")
]

RUNS_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"),
    ("group_id", "VARCHAR NOT NULL"),
    ("harness_run_id", "VARCHAR"),
    ("dagster_run_id", "VARCHAR"),
    ("source_path", "VARCHAR NOT NULL"),
    ("source_kind", "VARCHAR"),
    ("node", "VARCHAR"),
    ("backend", "VARCHAR"),
    ("backend_kind", "VARCHAR"),
    ("benchmark", "VARCHAR"),
    ("lg_model_name", "VARCHAR"),
    ("division", "VARCHAR"),
    ("submitter", "VARCHAR"),
    ("system", "VARCHAR"),
    ("scenario", "VARCHAR"),
    ("scenario_label", "VARCHAR"),
    ("mode", "VARCHAR"),
    ("compliance_test", "VARCHAR"),
    ("loadgen_mode", "VARCHAR"),
    ("result_validity", "VARCHAR"),
    ("invalid_reason", "VARCHAR"),
    ("perf_constraints_met", "BOOLEAN"),
    ("min_duration_met", "BOOLEAN"),
    ("min_queries_met", "BOOLEAN"),
    ("early_stopping_met", "BOOLEAN"),
    ("samples_per_second", "DOUBLE"),
    ("scheduled_samples_per_second", "DOUBLE"),
    ("completed_samples_per_second", "DOUBLE"),
    ("tokens_per_second", "DOUBLE"),
    ("completed_tokens_per_second", "DOUBLE"),
    ("tokens_per_second_inferred", "BOOLEAN"),
    ("token_throughput_with_loadgen_overhead", "DOUBLE"),
    ("qps_with_loadgen_overhead", "DOUBLE"),
    *[(c, "BIGINT") for c in _FIGURE_COLS],
    ("query_count", "BIGINT"),
    ("samples_per_query", "BIGINT"),
    ("target_qps", "DOUBLE"),
    ("target_latency_ns", "BIGINT"),
    ("ttft_latency_ns", "BIGINT"),
    ("tpot_latency_ns", "BIGINT"),
    ("min_duration_ms", "BIGINT"),
    ("min_query_count", "BIGINT"),
    ("performance_sample_count", "BIGINT"),
    ("qsl_total_count", "BIGINT"),
    ("num_errors", "INTEGER"),
    ("num_warnings", "INTEGER"),
    ("loadgen_version", "VARCHAR"),
    ("sut_name", "VARCHAR"),
    ("test_datetime", "TIMESTAMP"),
    ("started_at", "TIMESTAMP"),
    ("finished_at", "TIMESTAMP"),
    ("exit_status", "VARCHAR"),
    ("accuracy_log_state", "VARCHAR"),
    ("accuracy_log_samples", "BIGINT"),
    ("accuracy_log_unique_samples", "BIGINT"),
    ("compliance_passed", "BOOLEAN"),
    ("figures_source", "VARCHAR"),
    ("parse_notes", "VARCHAR"),
    ("ingested_at", "TIMESTAMP"),
]
RUNS_COLUMN_NAMES = [c for c, _ in RUNS_COLUMNS]

# The public view. Keep in step with the README (a public interface: add columns, never rename).
RUN_SUMMARY_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "key: '<harness run_id>-<mode>' for harness runs, else 'lg-<hash of the run's mlperf_log_detail.txt>' "
               "(or of its summary; a verification folder: its files and its scenario's logs): one row per run, "
               "whatever path it was ingested from"),
    ("source_path", "absolute path of the run folder (as given, at its latest ingest)"),
    ("node", "node name (harness manifest or --node)"),
    ("benchmark", "submission benchmark name, e.g. llama3.1-8b, gptj-99"),
    ("scenario", "LoadGen's effective scenario: Offline | Server | SingleStream"),
    ("scenario_label", "submission scenario: Interactive for llama3_1-8b-interactive runs, else = scenario"),
    ("mode", "performance | accuracy | ranging | compliance"),
    ("compliance_test", "TEST06 etc. for compliance runs"),
    ("result_validity", "VALID | INVALID (NULL for accuracy runs)"),
    ("samples_per_second", "samples/s: Offline Samples per second, Server Completed samples per second, SingleStream QPS w/o loadgen overhead"),
    ("tokens_per_second", "tokens/s: Offline Tokens per second, Server Completed tokens per second, SingleStream "
                          "TPS w/o loadgen overhead (gpt-j: the inferred figure)"),
    ("completed_samples_per_second", "samples/s completed (Server)"),
    ("completed_tokens_per_second", "tokens/s completed (Server; SingleStream: the detail log's "
                                    "result_completed_tokens_per_second, no summary line; gpt-j inferred)"),
    ("tokens_per_second_inferred", "true when tokens/s is LoadGen's inferred figure (gpt-j)"),
    ("latency_p50_ns", "ns"),
    ("latency_p90_ns", "ns (SingleStream headline)"),
    ("latency_p99_ns", "ns"),
    ("ttft_p50_ns", "time to first token, ns"),
    ("ttft_p99_ns", "ns (Server constraint)"),
    ("tpot_p50_ns", "time per output token, ns"),
    ("tpot_p99_ns", "ns (Server constraint)"),
    ("min_duration_met", "boolean"),
    ("loadgen_version", "e.g. '5.1.0 @ 50de99161e'"),
    ("started_at", "UTC; harness start or LoadGen test_datetime"),
    ("finished_at", "UTC; harness end or last LoadGen event"),
    ("backend", "backend name (harness manifest or --backend)"),
    ("backend_kind", "model | baseline | harness-ceiling"),
    ("dagster_run_id", "Dagster run that produced it, when known"),
    ("harness_run_id", "harness run_id shared by the performance and accuracy runs of one materialization"),
    ("submitter", "from a submission tree path"),
    ("system", "from a submission tree path"),
    ("compliance_passed", "compliance verdict: TEST06 verify_accuracy.txt, TEST01 verify_accuracy.txt and "
                          "verify_performance.txt, TEST04 verify_performance.txt (all must pass)"),
    ("rouge1", "accuracy of this run's scenario folder / harness run, ROUGE-1 x100"),
    ("rouge2", "ROUGE-2 x100"),
    ("rougeL", "ROUGE-L x100"),
    ("rougeLsum", "ROUGE-Lsum x100"),
    ("gen_len", "total characters generated"),
    ("gen_num", "number of predictions scored"),
    ("accuracy_passed", "all accuracy targets met (NULL when no checks were recorded)"),
]

_RUN_SUMMARY_SELECT = ",\n  ".join(
    f'a."{c}"' if c in ("rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "gen_num", "accuracy_passed") else f"r.{c}"
    for c, _ in RUN_SUMMARY_COLUMNS
)


def _accuracy_summary_sql(groups_param: bool = False) -> str:
    """One row per group (scenario folder / harness run): the preferred accuracy result set, pivoted.

    A result belongs to the group of the run it names, or, when no such run exists (yet), to a group named by
    its run_id (a harness run_id). Scored results (``save_accuracy``) win over parsed ``accuracy.txt``; then the
    newest. With ``groups_param`` the SQL takes one list parameter of group ids to refresh."""
    where = "WHERE coalesce(r.group_id, a.run_id) IN (SELECT unnest(?::VARCHAR[]))" if groups_param else ""
    return f"""
    WITH acc AS (
        SELECT a.*, coalesce(r.group_id, a.run_id) AS grp
        FROM accuracy_results a LEFT JOIN runs r ON r.run_id = a.run_id {where}
    ), pick AS (
        SELECT grp, run_id, source, row_number() OVER (
            PARTITION BY grp ORDER BY (source = 'accuracy.txt'), max_at DESC, run_id) AS rk
        FROM (SELECT grp, run_id, source, max(computed_at) AS max_at FROM acc GROUP BY ALL)
    )
    SELECT acc.grp AS group_id,
        any_value(acc.run_id) AS accuracy_run_id,
        any_value(acc.source) AS accuracy_source,
        max(value) FILTER (WHERE metric = 'rouge1') AS "rouge1",
        max(value) FILTER (WHERE metric = 'rouge2') AS "rouge2",
        max(value) FILTER (WHERE metric = 'rougeL') AS "rougeL",
        max(value) FILTER (WHERE metric = 'rougeLsum') AS "rougeLsum",
        CAST(max(value) FILTER (WHERE metric = 'gen_len') AS BIGINT) AS gen_len,
        CAST(max(value) FILTER (WHERE metric = 'gen_num') AS BIGINT) AS gen_num,
        CASE WHEN count(passed) = 0 THEN NULL ELSE bool_and(passed) END AS accuracy_passed
    FROM acc JOIN pick ON pick.grp = acc.grp AND pick.run_id = acc.run_id AND pick.source = acc.source AND pick.rk = 1
    GROUP BY acc.grp"""


def refresh_accuracy(conn: "duckdb.DuckDBPyConnection", groups: Sequence[str] | None = None) -> None:
    """Recompute ``accuracy_latest`` (what run_summary joins) for ``groups``, or all groups. Call inside the
    writing transaction so the table never disagrees with ``accuracy_results``."""
    if groups is None:
        conn.execute("DELETE FROM accuracy_latest")
        conn.execute(f"INSERT INTO accuracy_latest {_accuracy_summary_sql()}")
        return
    groups = sorted({g for g in groups if g})
    if not groups:
        return
    conn.execute("DELETE FROM accuracy_latest WHERE group_id IN (SELECT unnest(?::VARCHAR[]))", [groups])
    conn.execute(f"INSERT INTO accuracy_latest {_accuracy_summary_sql(groups_param=True)}", [groups])

_MIGRATION_1 = [
    f"CREATE TABLE runs ({', '.join(f'{c} {t}' for c, t in RUNS_COLUMNS)}, PRIMARY KEY (run_id))",
    """CREATE TABLE detail_events (run_id VARCHAR NOT NULL, seq INTEGER, line_no INTEGER, key VARCHAR,
        value_json VARCHAR, value_num DOUBLE, value_str VARCHAR, time_ms DOUBLE, event_type VARCHAR,
        is_error BOOLEAN, is_warning BOOLEAN, src_file VARCHAR, src_line INTEGER)""",
    "CREATE TABLE settings (run_id VARCHAR NOT NULL, kind VARCHAR, key VARCHAR, value_json VARCHAR)",
    """CREATE TABLE accuracy_results (run_id VARCHAR NOT NULL, source VARCHAR NOT NULL, metric VARCHAR NOT NULL,
        value DOUBLE, value_text VARCHAR, target DOUBLE, target_json VARCHAR, passed BOOLEAN, hash VARCHAR,
        computed_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE provenance (run_id VARCHAR NOT NULL, manifest_json VARCHAR, harness_version VARCHAR,
        loadgen_version VARCHAR, backend_versions_json VARCHAR, engine_args_json VARCHAR, dataset_json VARCHAR,
        host_json VARCHAR, gpus_json VARCHAR, files_json VARCHAR, user_conf VARCHAR)""",
    """CREATE TABLE sample_timings (run_id VARCHAR NOT NULL, qsl_idx BIGINT, issue_ns BIGINT,
        first_token_ns BIGINT, complete_ns BIGINT, output_tokens INTEGER)""",
    """CREATE TABLE progress (run_id VARCHAR NOT NULL, seq INTEGER, time TIMESTAMP, elapsed_s DOUBLE,
        issued BIGINT, completed BIGINT, total BIGINT, output_tokens BIGINT, tokens_per_s DOUBLE, final BOOLEAN)""",
    """CREATE TABLE accuracy_log_samples (run_id VARCHAR NOT NULL, seq_id BIGINT, qsl_idx BIGINT,
        data_bytes INTEGER, token_count INTEGER)""",
    f"CREATE VIEW accuracy_summary AS {_accuracy_summary_sql()}",
    f"CREATE TABLE accuracy_latest AS SELECT * FROM ({_accuracy_summary_sql()}) LIMIT 0",
    f"""CREATE VIEW run_summary AS
    SELECT
      {_RUN_SUMMARY_SELECT}
    FROM runs r LEFT JOIN accuracy_latest a ON a.group_id = r.group_id""",
    "CREATE INDEX sample_timings_run ON sample_timings (run_id)",
    "CREATE INDEX detail_events_run ON detail_events (run_id)",
]

CHILD_TABLES = ("detail_events", "settings", "provenance", "sample_timings", "progress", "accuracy_log_samples",
                "telemetry", "run_telemetry")  # the last two: migration 6


def _rekey_by_content(conn: "duckdb.DuckDBPyConnection") -> None:
    """Migration 2: runs ingested without a harness manifest were keyed by a hash of their path
    (``lg-<sha1(source_path)>``), so one run reached through a symlink, another path or a copy was stored once
    per path. Re-key them by content (``loadgen_logs.content_key`` over the file hashes kept in
    ``provenance.files_json``), keep the most recently ingested row of each run, and move every child row and
    accuracy result to the new key."""
    rows = conn.execute(
        "SELECT r.run_id, r.source_path, p.files_json FROM runs r JOIN provenance p USING (run_id) "
        "WHERE r.harness_run_id IS NULL ORDER BY r.ingested_at DESC NULLS LAST, r.run_id"
    ).fetchall()
    keep: dict[str, str] = {}  # new id -> the old id whose rows survive
    drop: list[tuple[str, str]] = []  # (old id of an older copy, new id)
    for old_id, source_path, files_json in rows:
        try:
            files = json.loads(files_json) if files_json else None
        except json.JSONDecodeError:
            files = None
        if not isinstance(files, list) or not files:
            continue
        new_id = content_key([f for f in files if isinstance(f, dict)], source_path)
        if new_id in keep:
            drop.append((old_id, new_id))  # an older copy of the same run
        else:
            keep[new_id] = old_id
    # the child tables of this schema version (a later migration's tables do not exist yet on an old store)
    existing = {t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    children = tuple(t for t in CHILD_TABLES if t in existing)
    tables = ("runs", *children, "accuracy_results")
    for old_id, new_id in drop:
        # scores recorded on an older copy survive when the kept copy has none
        survivor = keep[new_id]
        if not conn.execute("SELECT count(*) FROM accuracy_results WHERE run_id = ? AND source = 'scored'",
                            [survivor]).fetchone()[0]:
            conn.execute("UPDATE accuracy_results SET run_id = ? WHERE run_id = ? AND source = 'scored'",
                         [survivor, old_id])
        for t in tables:
            conn.execute(f"DELETE FROM {t} WHERE run_id = ?", [old_id])
    for new_id, old_id in keep.items():
        if new_id == old_id:
            continue
        conn.execute("INSERT INTO runs SELECT * REPLACE (? AS run_id) FROM runs WHERE run_id = ?", [new_id, old_id])
        conn.execute("DELETE FROM runs WHERE run_id = ?", [old_id])
        for t in (*children, "accuracy_results"):
            conn.execute(f"UPDATE {t} SET run_id = ? WHERE run_id = ?", [new_id, old_id])
    if keep or drop:
        refresh_accuracy(conn)


Migration = tuple[int, str, list[Any]]  # statements: SQL strings, or callables taking the connection

# One row per step of a capacity search (mlperf_assets/search/): the estimate (step 0), the probes, the
# confirmation runs and the outcome (kind 'result'). Latencies in ns; the probe's LoadGen run is runs.run_id.
QPS_SEARCH_COLUMNS: list[tuple[str, str]] = [
    ("search_id", "VARCHAR NOT NULL"), ("step", "INTEGER NOT NULL"),
    ("kind", "VARCHAR NOT NULL"),  # estimate | probe | confirm | result
    ("node", "VARCHAR"), ("scenario", "VARCHAR"),  # scenario: Server | Interactive (the search's label)
    ("lg_model_name", "VARCHAR"), ("benchmark", "VARCHAR"), ("backend", "VARCHAR"),
    ("target_qps", "DOUBLE"), ("verdict", "VARCHAR"),  # pass | fail (probe, confirm); the status for 'result'
    ("reason", "VARCHAR"), ("result_validity", "VARCHAR"),
    ("ttft_p99_ns", "BIGINT"), ("tpot_p99_ns", "BIGINT"), ("latency_p99_ns", "BIGINT"),
    ("ttft_limit_ns", "BIGINT"), ("tpot_limit_ns", "BIGINT"), ("latency_limit_ns", "BIGINT"),
    ("margin", "DOUBLE"), ("completed_samples_per_second", "DOUBLE"), ("duration_s", "DOUBLE"),
    ("run_id", "VARCHAR"), ("dagster_run_id", "VARCHAR"), ("settings_json", "VARCHAR"),
    ("recorded_at", "TIMESTAMP NOT NULL"),
]
_MIGRATION_3_QPS_SEARCH = (
    f"CREATE TABLE IF NOT EXISTS qps_search ({', '.join(f'{c} {t}' for c, t in QPS_SEARCH_COLUMNS)}, PRIMARY KEY (search_id, step))"
)

# Numbered migrations: never edit an applied one; append (N, description, statements).
# What each run ran on (migration 4): from the submission tree's systems/<system>.json, or the GPU list in a harness
# run's run_manifest.json (loadgen_logs.system_context); one row per run, written with the run.
RUN_SYSTEMS_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"),
    ("system_source", "VARCHAR"),
    ("system_json", "VARCHAR"),
    ("system_name", "VARCHAR"),
    ("accelerator", "VARCHAR"),
    ("accelerators_per_node", "INTEGER"),
    ("number_of_nodes", "INTEGER"),
    ("host_processor", "VARCHAR"),
    ("framework", "VARCHAR"),
    ("division", "VARCHAR"),
    ("round", "VARCHAR"),
    ("system_note", "VARCHAR"),
]
RUN_SYSTEMS_COLUMN_NAMES = [c for c, _ in RUN_SYSTEMS_COLUMNS]

# Columns migration 4 appends to run_summary (their SQL, and their documentation).
RUN_SUMMARY_SYSTEM_COLUMNS: list[tuple[str, str, str]] = [
    ("accelerator", "s.accelerator",
     "accelerator model: the results tree's systems JSON (accelerator_model_name), or the GPUs a harness run used "
     "(run_manifest.json: its telemetry's GPU list, else nvidia-smi's); NULL when unknown (system_note says why)"),
    ("accelerators_per_node", "s.accelerators_per_node", "accelerators per node (systems JSON, or the GPUs the run "
                                                         "used)"),
    ("number_of_nodes", "s.number_of_nodes", "nodes of the system (systems JSON; 1 for harness runs)"),
    ("tokens_per_second_per_accelerator",
     "CASE WHEN s.accelerators_per_node > 0 THEN (CASE WHEN r.scenario = 'Server' "
     "THEN coalesce(r.completed_tokens_per_second, r.tokens_per_second) "
     "ELSE coalesce(r.tokens_per_second, r.completed_tokens_per_second) END) "
     "/ (s.accelerators_per_node * greatest(coalesce(s.number_of_nodes, 1), 1)) END",
     "the scored tokens/s (Server: completed) / (accelerators_per_node x number_of_nodes)"),
    ("host_processor", "s.host_processor", "host CPU model (systems JSON host_processor_model_name)"),
    ("framework", "s.framework", "software framework (systems JSON), or the harness backend and its version"),
    ("division", "coalesce(r.division, s.division)", "closed | open: from the results tree path, else systems JSON"),
    ("round", "s.round", "MLPerf round from the path (inference_results_v5.1/..., <source>-v5.1__...), e.g. v5.1"),
    ("system_source", "s.system_source", "where accelerator came from: systems JSON | run_manifest.json (telemetry) | "
                                        "run_manifest.json (nvidia-smi)"),
    ("system_note", "s.system_note",
     "why the accelerator is unknown (systems JSON missing or malformed, no GPU listed), else NULL"),
]


def _backfill_run_systems(conn: "duckdb.DuckDBPyConnection") -> None:
    """Migration 4 on a store that already holds runs: their systems rows, from the files still on disk."""
    from mlperf_assets.loadgen_logs import system_context

    conn.execute("DELETE FROM run_systems WHERE run_id NOT IN (SELECT run_id FROM runs)")
    rows = conn.execute(
        "SELECT r.run_id, r.source_path, p.manifest_json FROM runs r LEFT JOIN provenance p USING (run_id)"
    ).fetchall()
    for run_id, source_path, manifest_json in rows:
        try:
            manifest = json.loads(manifest_json) if manifest_json else None
        except json.JSONDecodeError:
            manifest = None
        _write_system(conn, run_id, system_context(source_path, manifest if isinstance(manifest, dict) else None))


def _write_system(conn: "duckdb.DuckDBPyConnection", run_id: str, system: dict[str, Any] | None) -> None:
    """The ingest hook of migration 4: replace one run's ``run_systems`` row (inside the caller's transaction)."""
    conn.execute("DELETE FROM run_systems WHERE run_id = ?", [run_id])
    if system:
        values = [run_id, *(system.get(c) for c in RUN_SYSTEMS_COLUMN_NAMES[1:])]
        conn.execute(f"INSERT INTO run_systems ({', '.join(RUN_SYSTEMS_COLUMN_NAMES)}) "
                     f"VALUES ({', '.join('?' for _ in values)})", values)


_MIGRATION_4_SYSTEMS = [
    # IF NOT EXISTS, and the backfill replaces rows: re-applying the migration (a store whose schema_version was
    # rolled back by hand) does no harm
    f"CREATE TABLE IF NOT EXISTS run_systems ({', '.join(f'{c} {t}' for c, t in RUN_SYSTEMS_COLUMNS)}, "
    "PRIMARY KEY (run_id))",
    _backfill_run_systems,
    f"""CREATE OR REPLACE VIEW run_summary AS
    SELECT
      {_RUN_SUMMARY_SELECT},
      {", ".join(f"{sql} AS {name}" for name, sql, _ in RUN_SUMMARY_SYSTEM_COLUMNS)}
    FROM runs r LEFT JOIN accuracy_latest a ON a.group_id = r.group_id LEFT JOIN run_systems s ON s.run_id = r.run_id""",
]
# run_summary's documented columns, as migration 4 leaves the view (migration 1 above used the list before this)
RUN_SUMMARY_COLUMNS.extend((name, doc) for name, _, doc in RUN_SUMMARY_SYSTEM_COLUMNS)


SUBMISSION_CHECKS_COLUMNS = [
    ("check_id", "VARCHAR"),  # one checker run over one tree
    ("checked_at", "TIMESTAMP"),
    ("tree", "VARCHAR"),  # the submission tree's folder
    ("node", "VARCHAR"),
    ("system", "VARCHAR"),  # systems/<system>.json
    ("benchmark", "VARCHAR"),
    ("scenario", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("passed", "BOOLEAN"),  # the checker listed the result under Results (not NoResults)
    ("metric", "DOUBLE"),  # the checker's scored figure, when it passed
    ("expected_errors", "VARCHAR"),  # JSON list: the checker's lines the run's smoke settings explain
    ("unexpected_errors", "VARCHAR"),  # JSON list: every other error line (fails the asset check)
    ("summary", "VARCHAR"),  # the checker's SUMMARY line
]
_MIGRATION_5_SUBMISSION_CHECKS = (
    f"CREATE TABLE IF NOT EXISTS submission_checks ({', '.join(f'{c} {t}' for c, t in SUBMISSION_CHECKS_COLUMNS)}, "
    "PRIMARY KEY (check_id, system, benchmark, scenario))"
)


# GPU and engine telemetry (migration 6): the harness's telemetry.jsonl, one row per GPU per tick and one per engine
# tick, wide (NULL where a column does not apply), and one row per run of what run_manifest.json says about it.
TELEMETRY_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"),
    ("t_s", "DOUBLE"),  # seconds since the sampler started
    ("t_test_s", "DOUBLE"),  # seconds since LoadGen's test started (the test_start marker); NULL without one
    ("source", "VARCHAR"),  # gpu | engine
    ("gpu", "INTEGER"),  # NVML index; NULL for engine rows
    ("gpu_util_pct", "DOUBLE"),
    ("mem_util_pct", "DOUBLE"),
    ("mem_used_mib", "DOUBLE"),
    ("power_w", "DOUBLE"),
    ("energy_j", "DOUBLE"),  # NVML's energy counter (since the driver loaded)
    ("sm_clock_mhz", "INTEGER"),
    ("mem_clock_mhz", "INTEGER"),
    ("temperature_c", "DOUBLE"),
    ("kv_cache_usage_pct", "DOUBLE"),
    ("requests_running", "INTEGER"),
    ("requests_waiting", "INTEGER"),
    ("prompt_tokens_per_s", "DOUBLE"),
    ("generation_tokens_per_s", "DOUBLE"),
]
TELEMETRY_COLUMN_NAMES = [c for c, _ in TELEMETRY_COLUMNS]
RUN_TELEMETRY_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"),
    ("enabled", "BOOLEAN"),  # false: the run was made with telemetry switched off
    ("nvml", "BOOLEAN"),  # false: no GPU telemetry (a CPU node; reason says why)
    ("reason", "VARCHAR"),
    ("interval_s", "DOUBLE"),
    ("driver", "VARCHAR"),
    ("gpu_count", "INTEGER"),
    ("gpus_json", "VARCHAR"),
    ("test_start_s", "DOUBLE"),  # the markers of telemetry.jsonl (t_s)
    ("test_end_s", "DOUBLE"),
    ("window_s", "DOUBLE"),
    ("energy_j", "DOUBLE"),  # GPU energy over the timed window, all GPUs
    ("energy_source", "VARCHAR"),  # nvml_energy_counter | power_integral
    ("mean_gpu_util_pct", "DOUBLE"),
    ("mean_power_w", "DOUBLE"),
    ("peak_mem_used_mib", "DOUBLE"),
    ("mean_kv_cache_usage_pct", "DOUBLE"),
    ("peak_kv_cache_usage_pct", "DOUBLE"),
    ("gpu_rows", "BIGINT"),  # as the manifest counts them
    ("engine_rows", "BIGINT"),
    ("stored_rows", "BIGINT"),  # rows of telemetry.jsonl stored in `telemetry` (0 when the file was left out)
    ("window_output_tokens", "BIGINT"),  # output tokens of the timed window (see _window_output_tokens)
    ("window_output_tokens_source", "VARCHAR"),  # progress.jsonl final line | samples.jsonl | run_manifest.json
    ("note", "VARCHAR"),  # what was left out of telemetry.jsonl, and why
]
RUN_TELEMETRY_COLUMN_NAMES = [c for c, _ in RUN_TELEMETRY_COLUMNS]

# Columns migration 6 appends to run_summary (their SQL, and their documentation).
RUN_SUMMARY_TELEMETRY_COLUMNS: list[tuple[str, str, str]] = [
    ("energy_per_output_token_j", "t.energy_j / nullif(t.window_output_tokens, 0)",
     "GPU energy per output token, J: run_manifest.json telemetry energy_j (all GPUs, LoadGen's timed window) / "
     "the output tokens generated in that window (the final progress.jsonl line's output_tokens, else the sum of "
     "samples.jsonl output_tokens, else run_manifest.json output_tokens); NULL without GPU telemetry"),
    ("mean_gpu_util_pct", "t.mean_gpu_util_pct", "mean GPU utilisation over the timed window, % (all GPUs)"),
    ("mean_gpu_power_w", "t.mean_power_w", "mean GPU power over the timed window, W (run_manifest.json telemetry "
                                           "mean_power_w)"),
    ("energy_j", "t.energy_j", "GPU energy over the timed window, J (NVML energy counter, else power integral)"),
    ("peak_kv_cache_usage_pct", "t.peak_kv_cache_usage_pct", "peak KV-cache use of the engine, % (vLLM metrics)"),
]

# What a telemetry value may be: (column, kind, low, high); kind int -> stored as INTEGER (an integral float too).
_TELEMETRY_RANGES: dict[str, tuple[str, float, float]] = {
    "gpu_util_pct": ("float", 0, 100), "mem_util_pct": ("float", 0, 100), "mem_used_mib": ("float", 0, 1e8),
    "power_w": ("float", 0, 1e5), "energy_j": ("float", 0, 1e18), "sm_clock_mhz": ("int", 0, 1e5),
    "mem_clock_mhz": ("int", 0, 1e5), "temperature_c": ("float", -100, 300), "kv_cache_usage_pct": ("float", 0, 100),
    "requests_running": ("int", 0, 2**31 - 1), "requests_waiting": ("int", 0, 2**31 - 1),
    "prompt_tokens_per_s": ("float", 0, 1e12), "generation_tokens_per_s": ("float", 0, 1e12),
}
_GPU_FIELDS = ("gpu_util_pct", "mem_util_pct", "mem_used_mib", "power_w", "energy_j", "sm_clock_mhz", "mem_clock_mhz",
               "temperature_c")
_ENGINE_FIELDS = ("kv_cache_usage_pct", "requests_running", "requests_waiting", "prompt_tokens_per_s",
                  "generation_tokens_per_s")
_NUMBER_TYPES = {int, float, type(None)}
_MAX_T_S = 1e8  # about three years of sampling: anything beyond is a broken clock
_MAX_GPUS = 4096  # NVML indices 0..4095 (the rows' 'gpu' range)
# What run_manifest.json's telemetry summary may hold: the rows' ranges, summed over the GPUs where the summary sums
# them (energy_j, mean_power_w); a window is > 0 (checked apart). Out of range: stored as NULL with a note.
_SUMMARY_RANGES: dict[str, tuple[float, float]] = {
    "interval_s": (0, _MAX_T_S), "window_s": (0, _MAX_T_S), "energy_j": _TELEMETRY_RANGES["energy_j"][1:],
    "mean_gpu_util_pct": (0, 100), "mean_power_w": (0, _TELEMETRY_RANGES["power_w"][2] * _MAX_GPUS),
    "peak_mem_used_mib": _TELEMETRY_RANGES["mem_used_mib"][1:], "mean_kv_cache_usage_pct": (0, 100),
    "peak_kv_cache_usage_pct": (0, 100),
}


class TelemetryFormatError(ValueError):
    """telemetry.jsonl is not what the harness writes; the message names the file and line."""


@dataclass
class RunTelemetry:
    """One run's telemetry, parsed and checked: the rows for ``telemetry`` (column lists) and the ``run_telemetry``
    row; ``notes``: what was left out (a cut-short last line, an unusable file)."""

    columns: dict[str, list[Any]]
    info: dict[str, Any]
    notes: list[str]
    skipped: str | None = None  # why the whole file was left out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_telemetry_jsonl(path: str | os.PathLike) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """The records of a telemetry.jsonl as (line number, object), and notes. A last line cut short (the run was
    killed mid-write: no newline after it) is left out with a note; any other line that is not a JSON object (NaN
    and Infinity included) raises :class:`TelemetryFormatError` naming the file and line."""
    from mlperf_assets.loadgen_logs import jsonl_records

    path = Path(path)
    try:
        records, cut_short = jsonl_records(path, lenient_tail=True, parse_constant=_reject_constant,
                                           bad_line="not a JSON line")
    except LogFormatError as exc:
        raise TelemetryFormatError(str(exc)) from None
    notes = [] if cut_short is None else [
        f"{path.name}: the last line ({cut_short}) is cut short (the run was stopped mid-write); it was left out"]
    return records, notes


def _telemetry_columns(path: Path, records: list[tuple[int, dict[str, Any]]]) -> tuple[dict[str, Any], dict]:
    """Check every record and turn the rows into Arrow columns (t_test_s from the test_start marker), column by
    column (~10k rows per run); a bad value is then looked up row by row to name its line."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    marks: dict[str, float] = {}
    header: dict[str, Any] = {}
    ignored = 0
    rows: list[dict[str, Any]] = []
    line_of: list[int] = []
    for n, o in records:
        event = o.get("event")
        if event is None:
            rows.append(o)
            line_of.append(n)
            continue
        t = o.get("t_s")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 <= t <= _MAX_T_S:
            raise TelemetryFormatError(f"{path}:{n}: 't_s' must be seconds since the sampler started ({t!r})")
        if event == "header":
            header = o
        elif event in ("test_start", "test_end"):
            marks.setdefault(event, float(t))
        else:
            ignored += 1  # an event this version does not know: kept out, not an error

    def bad(i: int, why: str) -> TelemetryFormatError:
        return TelemetryFormatError(f"{path}:{line_of[i]}: {why}")

    sources = [o.get("source") for o in rows]
    is_gpu = np.fromiter((s == "gpu" for s in sources), dtype=bool, count=len(rows))
    is_engine = np.fromiter((s == "engine" for s in sources), dtype=bool, count=len(rows))
    neither = np.flatnonzero(~(is_gpu | is_engine))
    if neither.size:
        raise bad(int(neither[0]), f"neither an event nor a 'gpu'/'engine' row (source {sources[neither[0]]!r})")

    def numbers(key: str, low: float, high: float, use: np.ndarray | None) -> np.ndarray:
        """The column as float64 (NaN: missing, or not this row's kind); TelemetryFormatError names the first bad
        line."""
        values = [o.get(key) for o in rows]
        if not set(map(type, values)) <= _NUMBER_TYPES:  # a bool, a string, a list...: find the first
            i, v = next((i, v) for i, v in enumerate(values) if type(v) not in _NUMBER_TYPES)
            raise bad(i, f"{key!r} is not a number ({v!r})")
        try:
            arr = np.array(values, dtype=np.float64)  # None -> NaN
        except OverflowError:  # an integer beyond a double
            i = next(i for i, v in enumerate(values) if isinstance(v, int) and abs(v) > 2**1000)
            raise bad(i, f"{key!r} = {values[i]!r} is outside {low:g}..{high:g}") from None
        if use is not None:
            arr = np.where(use, arr, np.nan)
        with np.errstate(invalid="ignore"):
            wrong = np.flatnonzero(~np.isnan(arr) & ~((arr >= low) & (arr <= high)))
        if wrong.size:
            raise bad(int(wrong[0]), f"{key!r} = {values[wrong[0]]!r} is outside {low:g}..{high:g}")
        return arr

    t_s = numbers("t_s", 0, _MAX_T_S, None)
    missing = np.flatnonzero(np.isnan(t_s))
    if missing.size:
        raise bad(int(missing[0]), f"'t_s' must be seconds since the sampler started ({rows[missing[0]].get('t_s')!r})")
    gpu = numbers("gpu", 0, 4095, is_gpu)
    unindexed = np.flatnonzero(is_gpu & (np.isnan(gpu) | (gpu != np.floor(gpu))))
    if unindexed.size:
        raise bad(int(unindexed[0]), f"'gpu' must be a GPU index ({rows[unindexed[0]].get('gpu')!r})")
    gpu_index = [o.get("gpu") for o in rows]
    if any(not isinstance(g, int) for g, on in zip(gpu_index, is_gpu) if on):  # 1.0 is not an index either
        i = next(i for i, (g, on) in enumerate(zip(gpu_index, is_gpu)) if on and not isinstance(g, int))
        raise bad(i, f"'gpu' must be a GPU index ({gpu_index[i]!r})")

    def arrow(values: np.ndarray, kind: str) -> Any:
        mask = np.isnan(values)
        if kind == "int":
            return pa.array(np.where(mask, 0, np.round(values)).astype(np.int64), mask=mask).cast(pa.int32())
        return pa.array(values, mask=mask, type=pa.float64())

    cols: dict[str, Any] = {"t_s": pa.array(t_s, type=pa.float64())}
    start = marks.get("test_start")
    cols["t_test_s"] = (pa.nulls(len(rows), pa.float64()) if start is None
                        else pc.round(pa.array(t_s - start, type=pa.float64()), 6))
    cols["source"] = pa.array(sources, type=pa.string())
    cols["gpu"] = arrow(gpu, "int")
    for key in _GPU_FIELDS + _ENGINE_FIELDS:
        kind, low, high = _TELEMETRY_RANGES[key]
        cols[key] = arrow(numbers(key, low, high, is_gpu if key in _GPU_FIELDS else is_engine), kind)
    return {c: cols[c] for c in TELEMETRY_COLUMN_NAMES[1:]}, {"header": header, "marks": marks, "ignored": ignored}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _summary_figure(summary: dict[str, Any], key: str, notes: list[str],
                    where: str = f"{RUN_MANIFEST} telemetry") -> float | None:
    """A figure of run_manifest.json's telemetry summary, or None: not a finite number (NaN, a string), or outside
    what it can be (negative energy, 500 % utilisation, a window of 0 s), which adds a note naming it."""
    value = _finite(summary.get(key))
    low, high = _SUMMARY_RANGES[key]
    if value is not None and not (low <= value <= high and (value > 0 or key not in ("window_s", "interval_s"))):
        bound = "> 0" if value <= 0 and key in ("window_s", "interval_s") else f"within {low:g}..{high:g}"
        notes.append(f"{where} {key} = {summary.get(key)!r} is not {bound}; stored as NULL")
        return None
    return value


def _summary_count(summary: dict[str, Any], key: str, notes: list[str]) -> int | None:
    """A row count of the telemetry summary (gpu_rows, engine_rows): an integer >= 0 that fits BIGINT, else None
    (a negative one with a note)."""
    value = summary.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not fits(value, 64):
        return None
    if value < 0:
        notes.append(f"{RUN_MANIFEST} telemetry {key} = {value!r} is not a count; stored as NULL")
        return None
    return value


def _window_output_tokens(parsed: ParsedRun, notes: list[str]) -> tuple[int | None, str | None]:
    """Output tokens generated in LoadGen's timed window, the one the energy figure covers (the telemetry's
    test_start..test_end markers bracket LoadGen's StartTest). The final progress.jsonl line counts every output
    token the SUT produced for LoadGen's queries, all of which are issued and completed inside StartTest: exactly
    that window. (LoadGen's tokens/s x a duration would need LoadGen's own duration, which is shorter than the
    marker window by the test's setup and teardown.) Without a final progress line: the sum of samples.jsonl; without
    either (a folder that kept only the logs and the manifest): the manifest's ``output_tokens``, the same count
    the harness takes for the final progress line when LoadGen returns. A count that is not one (negative) is
    passed over with a note."""
    candidates: list[tuple[Any, str]] = []
    final = [p for p in parsed.progress if p.get("final") is True]
    if final:
        candidates.append((final[-1].get("output_tokens"), f"{PROGRESS} final line"))
    st = parsed.samples
    if st is not None and st.output_tokens and all(v is not None for v in st.output_tokens):
        candidates.append((sum(st.output_tokens), SAMPLES))  # type: ignore[arg-type]
    manifest = parsed.manifest if isinstance(parsed.manifest, dict) else {}
    candidates.append((manifest.get("output_tokens"), f"{RUN_MANIFEST} output_tokens"))
    for raw, source in candidates:
        tokens = as_int(raw)
        if tokens is None:
            continue
        if tokens < 0 or not fits(tokens, 64):
            notes.append(f"{source}: output_tokens = {raw!r} is not a token count; not used for energy per token")
            continue
        return tokens, source
    return None, None


def read_telemetry(parsed: ParsedRun) -> RunTelemetry | None:
    """The run's telemetry.jsonl and run_manifest.json ``telemetry`` summary, checked; None when the run has
    neither (submission logs, runs from before telemetry). A malformed telemetry.jsonl does not fail the ingest:
    like a verification file of no known form, the file is left out (no rows) with one line naming file and line,
    in the run's parse_notes and the ingest's skipped list; the LoadGen results are stored as ever."""
    manifest = parsed.manifest if isinstance(parsed.manifest, dict) else {}
    summary = manifest.get("telemetry")
    path = Path(parsed.folder) / TELEMETRY
    has_file = path.is_file()
    if summary is None and not has_file:
        return None
    summary = summary if isinstance(summary, dict) else {}
    notes: list[str] = []
    skipped = None
    columns: dict[str, Any] = {"t_s": []}
    extra: dict[str, Any] = {"header": {}, "marks": {}, "ignored": 0}
    if has_file:
        try:
            records, notes = parse_telemetry_jsonl(path)
            columns, extra = _telemetry_columns(path, records)
        except TelemetryFormatError as exc:
            skipped = str(exc)
            notes = [f"{TELEMETRY} left out: {exc}"]
        if extra["ignored"]:
            notes.append(f"{TELEMETRY}: {extra['ignored']} event line(s) of unknown kinds left out")
    if summary.get("error"):
        notes.append(f"the telemetry sampler stopped: {summary['error']}")
    header, marks = extra["header"], extra["marks"]
    gpus = summary.get("gpus") if isinstance(summary.get("gpus"), list) else header.get("gpus")
    nvml = summary.get("nvml", header.get("nvml"))
    reason = summary.get("reason", header.get("reason"))
    start, end = marks.get("test_start"), marks.get("test_end")
    window = _summary_figure(summary, "window_s", notes)
    if summary.get("window_s") is None and start is not None and end is not None:
        window = end - start
        if window <= 0:
            notes.append(f"{TELEMETRY}: test_end ({end:g} s) is not after test_start ({start:g} s); window stored "
                         "as NULL")
            window = None
    tokens, tokens_source = _window_output_tokens(parsed, notes)
    figures = {k: _summary_figure(summary, k, notes) for k in _SUMMARY_RANGES if k != "window_s"}
    info = {
        "enabled": summary.get("enabled") is not False,
        "nvml": nvml if isinstance(nvml, bool) else None,
        "reason": None if reason is None else str(reason),
        "interval_s": figures["interval_s"] if "interval_s" in summary else
        _summary_figure(header, "interval_s", notes, f"{TELEMETRY} header"),
        "driver": None if header.get("driver") is None else str(header.get("driver")),
        "gpu_count": len(gpus) if isinstance(gpus, list) else None,
        "gpus_json": json.dumps(gpus) if isinstance(gpus, list) else None,
        "test_start_s": start,
        "test_end_s": end,
        "window_s": window,
        "energy_j": figures["energy_j"],
        "energy_source": None if summary.get("energy_source") is None else str(summary.get("energy_source")),
        **{k: figures[k] for k in ("mean_gpu_util_pct", "mean_power_w", "peak_mem_used_mib",
                                   "mean_kv_cache_usage_pct", "peak_kv_cache_usage_pct")},
        "gpu_rows": _summary_count(summary, "gpu_rows", notes),
        "engine_rows": _summary_count(summary, "engine_rows", notes),
        "stored_rows": len(columns["t_s"]),
        "window_output_tokens": tokens,
        "window_output_tokens_source": tokens_source,
        "note": "; ".join(notes) or None,
    }
    for key in ("gpu_rows", "engine_rows", "window_output_tokens"):
        if info[key] is not None and not fits(info[key], 64):
            info[key] = None
    return RunTelemetry(columns=columns, info=info, notes=notes, skipped=skipped)


def _write_telemetry(conn: "duckdb.DuckDBPyConnection", run_id: str, tel: RunTelemetry | None) -> None:
    """The ingest hook of migration 6 (inside the caller's transaction; the run's earlier rows are gone already)."""
    import pyarrow as pa

    if tel is None:
        return
    values = [run_id, *(tel.info.get(c) for c in RUN_TELEMETRY_COLUMN_NAMES[1:])]
    conn.execute(f"INSERT INTO run_telemetry ({', '.join(RUN_TELEMETRY_COLUMN_NAMES)}) "
                 f"VALUES ({', '.join('?' for _ in values)})", values)
    n = len(tel.columns["t_s"])
    if not n:
        return
    _arrow_insert(conn, "telemetry", {
        "run_id": ([run_id] * n, pa.string()),
        **{c: (tel.columns[c], None) for c in TELEMETRY_COLUMN_NAMES[1:]},  # Arrow arrays already
    })


def _run_summary_view_sql() -> str:
    """run_summary as migration 6 leaves it: migration 4's columns, then the telemetry ones."""
    return f"""CREATE OR REPLACE VIEW run_summary AS
    SELECT
      {_RUN_SUMMARY_SELECT},
      {", ".join(f"{sql} AS {name}" for name, sql, _ in RUN_SUMMARY_SYSTEM_COLUMNS)},
      {", ".join(f"{sql} AS {name}" for name, sql, _ in RUN_SUMMARY_TELEMETRY_COLUMNS)}
    FROM runs r LEFT JOIN accuracy_latest a ON a.group_id = r.group_id LEFT JOIN run_systems s ON s.run_id = r.run_id
      LEFT JOIN run_telemetry t ON t.run_id = r.run_id"""


_MIGRATION_6_TELEMETRY = [
    f"CREATE TABLE IF NOT EXISTS telemetry ({', '.join(f'{c} {t}' for c, t in TELEMETRY_COLUMNS)})",
    f"CREATE TABLE IF NOT EXISTS run_telemetry ({', '.join(f'{c} {t}' for c, t in RUN_TELEMETRY_COLUMNS)}, "
    "PRIMARY KEY (run_id))",
    "CREATE INDEX IF NOT EXISTS telemetry_run ON telemetry (run_id)",
    _run_summary_view_sql(),
]
RUN_SUMMARY_COLUMNS.extend((name, doc) for name, _, doc in RUN_SUMMARY_TELEMETRY_COLUMNS)

# MLPerf Endpoints (migration 7): one row per measured point (mlperf_assets/endpoints/results.py computes every figure
# as the Endpoints checker does), its accuracy (the client's own scores and our re-score), and the checker's findings
# per checked bundle.
ENDPOINT_POINTS_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"), ("label", "VARCHAR"), ("node", "VARCHAR"), ("benchmark", "VARCHAR"),
    ("concurrency", "BIGINT"), ("load_pattern", "VARCHAR"), ("region", "VARCHAR"), ("role", "VARCHAR"),
    ("official", "BOOLEAN"),  # False: a shortened (smoke) curve's point, never an MLPerf Endpoints result
    ("accuracy_point", "BOOLEAN"), ("n_samples_issued", "BIGINT"), ("n_samples_completed", "BIGINT"),
    ("n_samples_failed", "BIGINT"), ("duration_ns", "BIGINT"), ("duration_s", "DOUBLE"), ("output_tokens", "BIGINT"),
    ("system_tps", "DOUBLE"), ("tps_per_user", "DOUBLE"), ("qps", "DOUBLE"), ("client_tps", "DOUBLE"),
    ("tpot_p50_ms", "DOUBLE"), ("tpot_p90_ms", "DOUBLE"), ("tpot_p99_ms", "DOUBLE"), ("ttft_p50_ms", "DOUBLE"),
    ("ttft_p90_ms", "DOUBLE"), ("ttft_p99_ms", "DOUBLE"), ("latency_p90_ms", "DOUBLE"),
    ("steady_state_status", "VARCHAR"), ("steady_state_verdict", "VARCHAR"), ("steady_state_window_s", "DOUBLE"),
    ("seed_set", "VARCHAR"), ("scheduler_rng_seed", "UBIGINT"), ("sample_index_rng_seed", "UBIGINT"),
    ("model_seed", "UBIGINT"), ("client_commit", "VARCHAR"), ("client_version", "VARCHAR"),
    ("client_git_sha", "VARCHAR"), ("server_url", "VARCHAR"), ("server_model", "VARCHAR"),
    ("gpu_energy_j", "DOUBLE"), ("energy_j_per_token", "DOUBLE"),  # the point's GPU telemetry, where recorded
    ("run_folder", "VARCHAR"), ("ingested_at", "TIMESTAMP"),
]
ENDPOINT_ACCURACY_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR NOT NULL"), ("source", "VARCHAR NOT NULL"),  # client | ours
    ("dataset", "VARCHAR"), ("metric", "VARCHAR NOT NULL"), ("value", "DOUBLE"), ("target_min", "DOUBLE"),
    ("target_max", "DOUBLE"), ("passed", "BOOLEAN"), ("n_samples", "BIGINT"),
]
ENDPOINT_CHECKS_COLUMNS: list[tuple[str, str]] = [
    ("check_id", "VARCHAR NOT NULL"), ("checked_at", "TIMESTAMP"), ("bundle", "VARCHAR"), ("seq", "INTEGER"),
    ("rule", "VARCHAR"), ("severity", "VARCHAR"), ("message", "VARCHAR"), ("fix", "VARCHAR"), ("path", "VARCHAR"),
    ("spec_ref", "VARCHAR"),
]


def _create(table: str, columns: list[tuple[str, str]], key: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{c} {t}' for c, t in columns)}, PRIMARY KEY ({key}))"


_MIGRATION_7_ENDPOINTS = [
    _create("endpoint_points", ENDPOINT_POINTS_COLUMNS, "run_id"),
    _create("endpoint_accuracy", ENDPOINT_ACCURACY_COLUMNS, "run_id, source, dataset, metric"),
    _create("endpoint_checks", ENDPOINT_CHECKS_COLUMNS, "check_id, seq"),
]

MIGRATIONS: list[Migration] = [
    (1, "initial schema: runs, detail_events, settings, accuracy_results, provenance, sample_timings, progress, "
        "accuracy_log_samples, accuracy_latest; views accuracy_summary, run_summary", _MIGRATION_1),
    (2, "runs without a harness manifest keyed by content (one row per run, whatever path it came from)",
        [_rekey_by_content]),
    (3, "qps_search: every step of a capacity search (max_qps_search), keyed by search id and step",
        [_MIGRATION_3_QPS_SEARCH]),
    (4, "run_systems: accelerator, count, host CPU, framework, division and round of each run (systems JSON, or "
        "the harness manifest's GPU list); run_summary gains them and tokens/s per accelerator",
        _MIGRATION_4_SYSTEMS),
    (5, "submission_checks: the MLCommons submission checker's verdict per result of each checked tree",
        [_MIGRATION_5_SUBMISSION_CHECKS]),
    (6, "telemetry: GPU and engine samples of each harness run (telemetry.jsonl); run_telemetry: its summary "
        "(run_manifest.json); run_summary gains energy per output token, mean GPU utilisation and power, energy "
        "and peak KV-cache use", _MIGRATION_6_TELEMETRY),
    (7, "MLPerf Endpoints: endpoint_points (one row per measured point, figures as the Endpoints checker computes "
        "them), endpoint_accuracy (the client's and our accuracy scores), endpoint_checks (the checker's findings)",
        _MIGRATION_7_ENDPOINTS),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _migrate(conn: "duckdb.DuckDBPyConnection", db_path: Path) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, description VARCHAR, applied_at TIMESTAMP)"
    )
    current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{db_path}: schema version {current} is newer than this code understands ({SCHEMA_VERSION}); upgrade mlperf-dagster"
        )
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            for step in statements:
                step(conn) if callable(step) else conn.execute(step)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, description, _utcnow()])
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback_quietly(conn)
            if isinstance(exc, Exception):
                raise _write_failure(exc, db_path, f"migrating the schema to version {version}") from None
            raise


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# ----------------------------------------------------------------------------------------- connections


def _is_lock_error(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "lock" in msg and ("conflicting" in msg or "could not set" in msg)


def _connect_retrying(db_path: Path, *, read_only: bool, timeout_s: float) -> "duckdb.DuckDBPyConnection":
    import duckdb

    deadline = time.monotonic() + max(timeout_s, 0.0)
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=read_only)
        except duckdb.IOException as exc:
            if _is_lock_error(exc):
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{db_path}: database is held open by another process (waited {timeout_s:g} s): "
                        f"{str(exc).splitlines()[0]}"
                    ) from None
                time.sleep(0.05)
                continue
            raise _open_failure(db_path, exc) from None
        except duckdb.Error as exc:
            raise _open_failure(db_path, exc) from None


def _open_failure(db_path: Path, exc: Exception) -> StoreError:
    msg = _first_line(exc)
    if "no space left on device" in msg.lower() or "file too large" in msg.lower():
        return StoreError(f"{db_path}: no space left on device (or file size limit) while opening the database: "
                          f"{msg}; nothing was stored")
    return StoreError(f"{db_path}: cannot open as a DuckDB database: {msg}")


def _keep_file_until_commit(conn: "duckdb.DuckDBPyConnection") -> None:
    """Nothing reaches the database file before a transaction commits: DuckDB writes large appends (a row group,
    ~120k rows: the telemetry of a few runs) straight into the file ahead of the commit ("optimistic writes"), so a
    failed ingest would leave the file changed (the same data, other bytes). Appends stay in memory until the
    commit, and every commit is written to the WAL first (a large one would otherwise skip the WAL and be written
    into the file directly, where a full disk can stop it halfway); the checkpoint that moves it into the file
    comes after the commit succeeded."""
    conn.execute("SET enable_optimistic_write = false")
    conn.execute("SET auto_checkpoint_skip_wal_threshold = 4611686018427387904")


def lock_path(db_path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(db_path) + ".lock")


@contextmanager
def open_for_write(db_path: str | os.PathLike, *, lock_timeout_s: float = 30) -> Iterator["duckdb.DuckDBPyConnection"]:
    """Hold the writer lock, open (creating and migrating) the database, yield the connection.

    A database this call created is removed again when anything fails before the caller's work is done (a full
    disk while creating it, a failed first ingest): a failed command leaves the disk as it found it."""
    from filelock import FileLock, Timeout

    db_path = Path(os.path.abspath(db_path))
    if not db_path.parent.is_dir():
        raise StoreError(f"{db_path}: folder {db_path.parent} does not exist")
    lock = FileLock(str(lock_path(db_path)), timeout=lock_timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise StoreLockedError(
            f"{db_path}: another writer holds {lock_path(db_path)} (waited {lock_timeout_s:g} s); try again when it finishes"
        ) from None
    except OSError as exc:
        raise StoreError(f"{db_path}: cannot create the lock file {lock_path(db_path)}: {exc.strerror or exc}") from None
    created = not db_path.exists()
    done = False
    try:
        conn = _connect_retrying(db_path, read_only=False, timeout_s=lock_timeout_s)
        try:
            _keep_file_until_commit(conn)
            _migrate(conn, db_path)
            yield conn
            done = True
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a checkpoint on close failed: what was committed is in the WAL
                pass
    finally:
        try:
            if created and not done:
                for leftover in (db_path, Path(f"{db_path}.wal")):
                    leftover.unlink(missing_ok=True)
        finally:
            lock.release()


# --------------------------------------------------------------------------------------------- writes


@dataclass(frozen=True)
class IngestedRun:
    run_id: str
    source_path: str
    scenario: str | None
    scenario_label: str | None
    mode: str
    result_validity: str | None
    benchmark: str | None
    headline: str


def _arrow_insert(conn: "duckdb.DuckDBPyConnection", table: str, columns: dict[str, tuple[Sequence[Any], Any]]) -> None:
    """Bulk insert column lists through an Arrow table (one vectorized INSERT, no per-row Python)."""
    import pyarrow as pa

    n = len(next(iter(columns.values()))[0])
    if n == 0:
        return
    tbl = pa.table({name: values if isinstance(values, pa.Array) else pa.array(values, type=typ)
                    for name, (values, typ) in columns.items()})
    conn.register("_bulk_rows", tbl)
    try:
        cols = ", ".join(columns)
        conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _bulk_rows")
    finally:
        try:
            conn.unregister("_bulk_rows")
        except Exception:  # noqa: BLE001 - the transaction is aborted: the INSERT's own error is the one to report
            pass


def _event_columns(run_id: str, parsed: ParsedRun) -> dict[str, tuple[Sequence[Any], Any]]:
    import pyarrow as pa

    ev = parsed.events
    vnum: list[float | None] = []
    vstr: list[str | None] = []
    vjson: list[str] = []
    for e in ev:
        v = e.value
        vjson.append(json.dumps(v))
        if isinstance(v, bool):
            vnum.append(float(v))
            vstr.append(None)
        elif isinstance(v, (int, float)):
            vnum.append(as_float(v))  # an integer beyond a double's range keeps its exact text in value_json
            vstr.append(None)
        elif isinstance(v, str):
            vnum.append(None)
            vstr.append(v)
        else:
            vnum.append(None)
            vstr.append(None)
    return {
        "run_id": ([run_id] * len(ev), pa.string()),
        "seq": ([e.seq for e in ev], pa.int32()),
        "line_no": ([e.line_no for e in ev], pa.int32()),
        "key": ([e.key for e in ev], pa.string()),
        "value_json": (vjson, pa.string()),
        "value_num": (vnum, pa.float64()),
        "value_str": (vstr, pa.string()),
        "time_ms": ([e.time_ms for e in ev], pa.float64()),
        "event_type": ([e.event_type for e in ev], pa.string()),
        "is_error": ([e.is_error for e in ev], pa.bool_()),
        "is_warning": ([e.is_warning for e in ev], pa.bool_()),
        "src_file": ([e.src_file for e in ev], pa.string()),
        "src_line": ([e.src_line for e in ev], pa.int32()),
    }


def _accuracy_rows(run_id: str, source: str, results: dict[str, Any], checks: dict[str, dict] | None,
                   hash_: str | None, raw: dict[str, str] | None = None) -> list[list[Any]]:
    now = _utcnow()
    rows = []
    checks = checks or {}
    for metric in list(results) + [m for m in checks if m not in results]:
        v = results.get(metric, checks.get(metric, {}).get("value"))
        try:
            num = float(v) if v is not None and not isinstance(v, bool) else None
        except (TypeError, ValueError, OverflowError):
            num = None
        try:  # run_summary keeps gen_len/gen_num as BIGINT: refuse what it cannot cast, before writing
            checked_int(num) if metric in ACCURACY_INT_METRICS else None
        except NumberError as exc:
            raise StoreValueError(f"accuracy of {run_id}: {metric!r} {exc}") from None
        if num is not None and not math.isfinite(num):
            raise StoreValueError(f"accuracy of {run_id}: {metric!r} {v!r} is not a finite number")
        chk = checks.get(metric) or {}
        target = chk.get("target")
        target_num = float(target) if isinstance(target, (int, float)) and not isinstance(target, bool) else None
        passed = chk.get("passed")
        bounds = {k: x for k, x in chk.items() if k not in ("value", "passed")}  # target, max, ...
        rows.append([
            run_id, source, metric, num, (raw or {}).get(metric, None if v is None else str(v)),
            target_num, json.dumps(bounds, default=str) if bounds else None,
            None if passed is None else bool(passed), hash_, now,
        ])
    return rows


def _published_checks(benchmark: str | None, results: dict[str, Any]) -> dict[str, dict] | None:
    """Pass/fail of a parsed ``accuracy.txt`` against the MLPerf targets, for the benchmarks we know targets of
    (llama3.1-8b, -edge, gpt-j); None for other models or when a metric is missing."""
    from mlperf_assets.accuracy import AccuracyError, check_results, resolve_target

    if not benchmark:
        return None
    try:
        return check_results(results, resolve_target(benchmark))
    except (AccuracyError, KeyError, TypeError, ValueError):
        return None


def _write_run_rows(conn: "duckdb.DuckDBPyConnection", parsed: ParsedRun) -> list[str | None]:
    """Replace one run's rows, inside the caller's transaction. Returns the accuracy groups to refresh."""
    import pyarrow as pa

    row = dict(parsed.row)
    row["ingested_at"] = _utcnow()
    telemetry = getattr(parsed, "telemetry", None)
    if telemetry is not None and telemetry.notes:
        row["parse_notes"] = "; ".join([*([row["parse_notes"]] if row.get("parse_notes") else []), *telemetry.notes])
    run_id = row["run_id"]
    m = parsed.manifest or {}
    backend = m.get("backend") if isinstance(m.get("backend"), dict) else {}
    stale_groups = _drop_earlier_versions(conn, parsed) if not row.get("harness_run_id") else []
    for t in CHILD_TABLES:
        conn.execute(f"DELETE FROM {t} WHERE run_id = ?", [run_id])
    conn.execute("DELETE FROM accuracy_results WHERE run_id = ? AND source = 'accuracy.txt'", [run_id])
    old_group = conn.execute("SELECT group_id FROM runs WHERE run_id = ?", [run_id]).fetchone()
    conn.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
    conn.execute(
        f"INSERT INTO runs ({', '.join(RUNS_COLUMN_NAMES)}) VALUES ({', '.join('?' * len(RUNS_COLUMN_NAMES))})",
        [row.get(c) for c in RUNS_COLUMN_NAMES],
    )
    _write_system(conn, run_id, getattr(parsed, "system", None))
    _write_telemetry(conn, run_id, telemetry)
    if parsed.events:
        _arrow_insert(conn, "detail_events", _event_columns(run_id, parsed))
    if parsed.settings:
        s = parsed.settings
        _arrow_insert(conn, "settings", {
            "run_id": ([run_id] * len(s), pa.string()),
            "kind": ([k for k, _, _ in s], pa.string()),
            "key": ([k for _, k, _ in s], pa.string()),
            "value_json": ([v for _, _, v in s], pa.string()),
        })
    conn.execute(
        "INSERT INTO provenance VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            json.dumps(m) if m else None,
            m.get("harness_version"),
            row.get("loadgen_version"),
            json.dumps(backend.get("versions")) if backend.get("versions") is not None else None,
            json.dumps(backend.get("engine_args")) if backend.get("engine_args") is not None else None,
            json.dumps(m["dataset"]) if m.get("dataset") is not None else None,
            json.dumps(m["host"]) if m.get("host") is not None else None,
            json.dumps(m["gpus"]) if m.get("gpus") is not None else None,
            json.dumps(parsed.files),
            parsed.user_conf,
        ],
    )
    if parsed.accuracy_txt is not None:
        at = parsed.accuracy_txt
        conn.executemany(
            "INSERT INTO accuracy_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _accuracy_rows(run_id, "accuracy.txt", at.results, _published_checks(row.get("benchmark"), at.results),
                           at.hash, at.raw),
        )
    st = parsed.samples
    if st is not None and st.qsl_idx:
        n = len(st.qsl_idx)
        _arrow_insert(conn, "sample_timings", {
            "run_id": ([run_id] * n, pa.string()),
            "qsl_idx": (st.qsl_idx, pa.int64()),
            "issue_ns": (st.issue_ns, pa.int64()),
            "first_token_ns": (st.first_token_ns, pa.int64()),
            "complete_ns": (st.complete_ns, pa.int64()),
            "output_tokens": (st.output_tokens, pa.int32()),
        })
    if parsed.progress:
        from mlperf_assets.loadgen_logs import _parse_time

        pr = parsed.progress

        def col(k: str) -> list[Any]:
            return [p.get(k) for p in pr]

        _arrow_insert(conn, "progress", {
            "run_id": ([run_id] * len(pr), pa.string()),
            "seq": (list(range(len(pr))), pa.int32()),
            "time": ([_parse_time(p.get("time")) for p in pr], pa.timestamp("us")),
            "elapsed_s": ([as_float(v) for v in col("elapsed_s")], pa.float64()),
            "issued": ([as_int(v) for v in col("issued")], pa.int64()),
            "completed": ([as_int(v) for v in col("completed")], pa.int64()),
            "total": ([as_int(v) for v in col("total")], pa.int64()),
            "output_tokens": ([as_int(v) for v in col("output_tokens")], pa.int64()),
            "tokens_per_s": ([as_float(v) for v in col("tokens_per_s")], pa.float64()),
            "final": ([bool(v) if v is not None else None for v in col("final")], pa.bool_()),
        })
    al = parsed.accuracy_log
    if al is not None and al.qsl_idx:
        n = len(al.qsl_idx)
        _arrow_insert(conn, "accuracy_log_samples", {
            "run_id": ([run_id] * n, pa.string()),
            "seq_id": (al.seq_id, pa.int64()),
            "qsl_idx": (al.qsl_idx, pa.int64()),
            "data_bytes": (al.data_bytes, pa.int32()),
            "token_count": (al.token_count, pa.int32()),
        })
    return [row["group_id"], run_id, old_group[0] if old_group else None, *stale_groups]


def _drop_earlier_versions(conn: "duckdb.DuckDBPyConnection", parsed: ParsedRun) -> list[str | None]:
    """Remove what an earlier ingest of this same folder stored under another run id (its content changed since,
    e.g. an ``accuracy.txt`` was added): content keys make copies one run, and this keeps one folder one run.
    The same folder is the same real path; scored accuracy results follow the run to its new id."""
    run_id, folder = parsed.row["run_id"], Path(parsed.row["source_path"])
    pattern = "%/" + folder.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    candidates = conn.execute(
        "SELECT run_id, source_path, group_id FROM runs WHERE harness_run_id IS NULL AND run_id <> ? "
        "AND (source_path = ? OR source_path LIKE ? ESCAPE '\\')",
        [run_id, str(folder), pattern],
    ).fetchall()
    real = os.path.realpath(folder)
    groups: list[str | None] = []
    for old_id, source_path, group in candidates:
        if source_path != str(folder) and os.path.realpath(source_path) != real:
            continue
        for t in CHILD_TABLES:
            conn.execute(f"DELETE FROM {t} WHERE run_id = ?", [old_id])
        conn.execute("DELETE FROM accuracy_results WHERE run_id = ? AND source <> 'scored'", [old_id])
        conn.execute("UPDATE accuracy_results SET run_id = ? WHERE run_id = ?", [run_id, old_id])
        conn.execute("DELETE FROM runs WHERE run_id = ?", [old_id])
        groups += [group, old_id]
    return groups


def _write_runs(conn: "duckdb.DuckDBPyConnection", db_path: Path, runs: list[ParsedRun]) -> None:
    """All runs in one transaction: every run stored, or (any failure, a full disk included) none."""
    conn.execute("BEGIN TRANSACTION")
    current: ParsedRun | None = None
    try:
        groups: list[str | None] = []
        for current in runs:
            groups += _write_run_rows(conn, current)
        current = None
        conn.execute("DELETE FROM run_systems WHERE run_id NOT IN (SELECT run_id FROM runs)")  # replaced copies
        refresh_accuracy(conn, groups)
        conn.execute("COMMIT")
    except BaseException as exc:
        _rollback_quietly(conn)
        if not isinstance(exc, Exception):
            raise
        what = f"storing {current.row['source_path']}" if current is not None else "committing the ingest"
        raise _write_failure(exc, db_path, what) from None


def _rollback_quietly(conn: "duckdb.DuckDBPyConnection") -> None:
    """ROLLBACK when a transaction is still open. After a failed COMMIT DuckDB has already rolled back and a
    second ROLLBACK only raises 'no transaction is active': that must not hide the first error."""
    try:
        conn.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - nothing left to roll back, or the connection is gone
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _write_failure(exc: Exception, db_path: Path, what: str) -> Exception:
    """One-line :class:`StoreError` for a failed write (the transaction is rolled back: nothing was stored)."""
    import duckdb
    import pyarrow as pa

    if isinstance(exc, StoreError):
        return exc
    msg = _first_line(exc)
    if "no space left on device" in msg.lower() or getattr(exc, "errno", None) == errno.ENOSPC:
        return StoreError(f"{db_path}: no space left on device while {what}; nothing was stored "
                          "(the database is unchanged): free some space and ingest again")
    if "file too large" in msg.lower() or getattr(exc, "errno", None) == errno.EFBIG:
        return StoreError(f"{db_path}: the file size limit was reached while {what}; nothing was stored "
                          "(the database is unchanged)")
    if isinstance(exc, (duckdb.ConversionException, duckdb.OutOfRangeException, pa.ArrowInvalid, pa.ArrowTypeError,
                        OverflowError)):
        return StoreValueError(f"{what}: a value cannot be stored ({msg}); nothing was stored")
    if isinstance(exc, (duckdb.Error, OSError)):
        return StoreError(f"{db_path}: writing failed while {what} ({msg}); nothing was stored")
    return exc


def _ingested(parsed: ParsedRun) -> IngestedRun:
    r = parsed.row
    acc = parsed.accuracy_txt.results if parsed.accuracy_txt else None
    return IngestedRun(
        run_id=r["run_id"], source_path=r["source_path"], scenario=r["scenario"], scenario_label=r["scenario_label"],
        mode=r["mode"], result_validity=r["result_validity"], benchmark=r["benchmark"], headline=headline(r, acc),
    )


class IngestReport(list):
    """The runs stored (a list of :class:`IngestedRun`, as before), plus ``skipped``: the files and folders left
    out, each with its reason (:class:`~mlperf_assets.loadgen_logs.Skipped`)."""

    def __init__(self, runs: list[IngestedRun], skipped: list[Skipped] | None = None) -> None:
        super().__init__(runs)
        self.skipped: list[Skipped] = list(skipped or [])


def check_storable(parsed: ParsedRun) -> None:
    """Every integer a run would write fits its column (BIGINT / INTEGER), before the first write.

    The parser range-checks what it reads (naming file, line and key); this is the store's own guard, so no
    value can fail halfway through the transaction. Raises :class:`StoreValueError` naming the run folder."""
    where = parsed.row.get("source_path") or parsed.folder

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise StoreValueError(f"{where}: {what} does not fit its column; nothing was stored")

    for col, typ in RUNS_COLUMNS:
        v = parsed.row.get(col)
        if typ in ("BIGINT", "INTEGER") and isinstance(v, int) and not isinstance(v, bool):
            need(fits(v, 64 if typ == "BIGINT" else 32), f"{col} = {v}")
        elif typ == "DOUBLE" and isinstance(v, float):
            need(math.isfinite(v), f"{col} = {v}")
    for e in parsed.events:
        need(fits(e.src_line, 32), f"mlperf_log_detail.txt line {e.line_no}: metadata line_no {e.src_line}")
    st = parsed.samples
    if st is not None and st.qsl_idx:
        for name in ("qsl_idx", "issue_ns", "first_token_ns", "complete_ns", "output_tokens"):
            vals = [v for v in getattr(st, name) if v is not None]
            if vals:
                bits = 32 if name == "output_tokens" else 64
                need(fits(min(vals), bits) and fits(max(vals), bits), f"samples.jsonl {name}")
    al = parsed.accuracy_log
    if al is not None and al.qsl_idx:
        for name, bits in (("seq_id", 64), ("qsl_idx", 64), ("data_bytes", 32), ("token_count", 32)):
            vals = [v for v in getattr(al, name) if v is not None]
            if vals:
                need(fits(min(vals), bits) and fits(max(vals), bits), f"mlperf_log_accuracy.json {name}")
    for p in parsed.progress:
        for key in ("issued", "completed", "total", "output_tokens"):
            need(fits(as_int(p.get(key)), 64), f"progress.jsonl {key}")
    if parsed.accuracy_txt is not None:
        _accuracy_rows(str(parsed.row.get("run_id")), "accuracy.txt", parsed.accuracy_txt.results, None, None)


def ingest_parsed(
    db_path: str | os.PathLike,
    runs: list[ParsedRun],
    *,
    lock_timeout_s: float = 30,
    skipped: list[Skipped] | None = None,
) -> IngestReport:
    """Write already-parsed runs under the writer lock, all in one transaction (all stored, or none).

    Every value is checked (:func:`check_storable`) before the database is even opened. Two runs with one run
    id raise :class:`LogFormatError` (:func:`~mlperf_assets.loadgen_logs.parse_runs` already leaves out identical
    copies)."""
    ids = [r.row["run_id"] for r in runs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        paths = [r.row["source_path"] for r in runs if r.row["run_id"] in dup]
        raise LogFormatError(f"two run folders map to the same run id {sorted(dup)[0]}: {paths[:2]}")
    for parsed in runs:
        check_storable(parsed)
    skipped = list(skipped or [])
    for parsed in runs:  # read and checked before the database is opened, like every other file
        tel = read_telemetry(parsed)
        parsed.telemetry = tel  # type: ignore[attr-defined]  # what _write_run_rows stores
        if tel is not None and tel.skipped:
            where = str(Path(parsed.folder) / TELEMETRY)
            reason = tel.skipped[len(where) + 1:] if tel.skipped.startswith(f"{where}:") else tel.skipped
            skipped.append(Skipped(where, f"line {reason}" if reason[:1].isdigit() else reason))
    if runs:
        with open_for_write(db_path, lock_timeout_s=lock_timeout_s) as conn:
            _write_runs(conn, Path(os.path.abspath(db_path)), runs)
    return IngestReport([_ingested(p) for p in runs], skipped)


def ingest_path(
    db_path: str | os.PathLike,
    path: str | os.PathLike,
    *,
    node: str | None = None,
    backend: str | None = None,
    benchmark: str | None = None,
    dagster_run_id: str | None = None,
    lock_timeout_s: float = 30,
) -> list[IngestedRun]:
    """Find every LoadGen run at or below ``path``, parse and check them all, then write them in one transaction.

    ``node``/``backend``/``benchmark`` override the harness manifest (and label runs that have none).
    Returns an :class:`IngestReport` (the runs stored; ``.skipped``: files and folders left out, with reasons).
    Raises :class:`LogFormatError` (nothing written), :class:`StoreLockedError`, or :class:`StoreError` for a
    failed write (rolled back: nothing written)."""
    folders = discover_runs(path)
    skipped: list[Skipped] = []
    runs = parse_runs(folders, skipped=skipped, node=node, backend=backend, benchmark=benchmark,
                      dagster_run_id=dagster_run_id)
    if not runs:
        raise NoRunsFoundError(
            f"{os.path.abspath(path)}: no run could be ingested: " + "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        )
    return ingest_parsed(db_path, runs, lock_timeout_s=lock_timeout_s, skipped=skipped)


def save_accuracy(
    db_path: str | os.PathLike,
    run_id: str,
    results: dict[str, Any],
    checks: dict[str, dict] | None = None,
    *,
    hash: str | None = None,  # noqa: A002 - the accuracy.txt field name
    lock_timeout_s: float = 30,
) -> None:
    """Record scored accuracy for ``run_id`` (a ``runs.run_id`` or a harness run_id), replacing earlier scores.

    ``results``: the MLPerf dict (rouge1, rouge2, rougeL, rougeLsum, gen_len, gen_num, ...);
    ``checks``: per metric ``{"value", "target", "passed"}``. ``run_summary`` shows them on every run of the
    same harness run / scenario folder."""
    if not run_id:
        raise ValueError("save_accuracy: run_id is empty")
    rows = _accuracy_rows(run_id, "scored", dict(results), checks, hash)
    with open_for_write(db_path, lock_timeout_s=lock_timeout_s) as conn:
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute("DELETE FROM accuracy_results WHERE run_id = ? AND source = 'scored'", [run_id])
            if rows:
                conn.executemany("INSERT INTO accuracy_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            group = conn.execute("SELECT group_id FROM runs WHERE run_id = ?", [run_id]).fetchone()
            refresh_accuracy(conn, [run_id, group[0] if group else None])
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback_quietly(conn)
            if isinstance(exc, Exception):
                raise _write_failure(exc, Path(os.path.abspath(db_path)), f"saving the accuracy of {run_id}") from None
            raise


def init_db(db_path: str | os.PathLike, *, lock_timeout_s: float = 30) -> None:
    """Create (or migrate) the database without ingesting anything."""
    with open_for_write(db_path, lock_timeout_s=lock_timeout_s):
        pass


# ---------------------------------------------------------------------------------------------- reads


@contextmanager
def open_read_only(db_path: str | os.PathLike, *, timeout_s: float = 10) -> Iterator["duckdb.DuckDBPyConnection"]:
    db_path = Path(os.path.abspath(db_path))
    if not db_path.is_file():
        raise StoreError(f"{db_path}: no such database (run `mlperf-dagster ingest` first)")
    conn = _connect_retrying(db_path, read_only=True, timeout_s=timeout_s)
    try:
        yield conn
    finally:
        conn.close()


# Statement types whose result is a table of rows; any other statement (CREATE TEMP TABLE, SET, ...) has none.
_RESULT_STATEMENTS = {"SELECT", "PRAGMA", "EXPLAIN", "CALL", "EXECUTE", "RELATION"}


def _statements(sql: str) -> bool:
    """Check ``sql`` before running it: StoreError when it is empty or does not parse. Returns whether its last
    statement produces rows."""
    import duckdb

    if not sql or not sql.strip():
        raise StoreError('the SQL statement is empty (give one, e.g. "SELECT * FROM run_summary")')
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise StoreError(f"query failed: {_first_line(exc)}") from None
    if not statements:
        raise StoreError("the SQL text holds no statement (only a comment or ';')")
    return statements[-1].type.name in _RESULT_STATEMENTS


def query(db_path: str | os.PathLike, sql: str, params: Sequence[Any] | dict | None = None) -> "pandas.DataFrame":
    """Run SQL on a read-only connection; returns a DataFrame (empty for a statement that returns no rows)."""
    import duckdb
    import pandas as pd

    returns_rows = _statements(sql)
    with open_read_only(db_path) as conn:
        try:
            cur = conn.execute(sql, params) if params is not None else conn.execute(sql)
            return cur.df() if returns_rows and cur is not None and cur.description is not None else pd.DataFrame()
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {_first_line(exc)}") from None


def query_rows(db_path: str | os.PathLike, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Like :func:`query` but plain Python values (ints stay ints, NULL is None): (column names, rows).

    An empty statement (blank, or only a comment) or one that does not parse raises :class:`StoreError`; a
    statement that returns no result set (``CREATE TEMP TABLE ...``, ``SET ...``: the connection is read-only,
    nothing lasting can change) runs and gives ``([], [])``."""
    import duckdb

    returns_rows = _statements(sql)
    with open_read_only(db_path) as conn:
        try:
            cur = conn.execute(sql, params) if params is not None else conn.execute(sql)
            if not returns_rows or cur is None or cur.description is None:
                return [], []
            cols = [d[0] for d in cur.description]
            return cols, cur.fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {_first_line(exc)}") from None


# ------------------------------------------------------------------------------------- capacity search steps


def save_qps_search_step(db_path: str | os.PathLike, row: dict[str, Any], *, lock_timeout_s: float = 30) -> None:
    """Record one step of a capacity search (``mlperf_assets.search``) in ``qps_search``, replacing the row of the
    same search id and step. ``row`` holds the columns of :data:`QPS_SEARCH_COLUMNS` (missing ones are NULL)."""
    unknown = sorted(set(row) - {c for c, _ in QPS_SEARCH_COLUMNS})
    if unknown:
        raise ValueError(f"save_qps_search_step: unknown column(s) {unknown}")
    values = {**row, "recorded_at": row.get("recorded_at") or _utcnow()}
    columns = [c for c, _ in QPS_SEARCH_COLUMNS]
    with open_for_write(db_path, lock_timeout_s=lock_timeout_s) as conn:
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute("DELETE FROM qps_search WHERE search_id = ? AND step = ?", [row["search_id"], row["step"]])
            conn.execute(f"INSERT INTO qps_search ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                         [values.get(c) for c in columns])
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback_quietly(conn)
            if isinstance(exc, Exception):
                raise _write_failure(exc, Path(os.path.abspath(db_path)), "saving a capacity-search step") from None
            raise


def read_qps_search(db_path: str | os.PathLike, where: str = "", params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """``qps_search`` rows (dicts, by search id and step) matching the optional SQL condition ``where``; [] when
    the store or the table does not exist yet (a store made before schema version 3 that nothing wrote since)."""
    import duckdb

    if not Path(db_path).is_file():
        return []
    sql = f"SELECT * FROM qps_search {'WHERE ' + where if where else ''} ORDER BY search_id, step"
    with open_read_only(db_path) as conn:
        try:
            cur = conn.execute(sql, list(params))
        except duckdb.CatalogException:
            return []
        except duckdb.Error as exc:
            raise StoreError(f"reading qps_search failed: {_first_line(exc)}") from None
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def search_ids(db_path: str | os.PathLike, digest: str) -> list[str]:
    """The ids of the stored capacity searches of one identity (``<digest>-<n>``), sorted; [] before any."""
    return sorted({r["search_id"] for r in read_qps_search(db_path, "search_id LIKE ?", [digest + "-%"])})


def search_steps(db_path: str | os.PathLike, search_id: str) -> list[dict[str, Any]]:
    """The stored steps of one capacity search (``qps_search`` rows, by step); [] for a search not stored."""
    return read_qps_search(db_path, "search_id = ?", [search_id])


def search_probe_run_ids(conn: "duckdb.DuckDBPyConnection") -> set[str]:
    """Run ids of the capacity search's short probes and estimate probes (not its confirmation runs, which are
    full-length runs at the chosen rate), in an open connection; empty for a store made before ``qps_search``."""
    import duckdb

    try:
        rows = conn.execute(
            "SELECT run_id FROM qps_search WHERE kind IN ('probe', 'estimate') AND run_id IS NOT NULL").fetchall()
    except duckdb.CatalogException:
        return set()
    return {str(r[0]) for r in rows}


def latest_offline_runs(db_path: str | os.PathLike, *, node: str, backend: str, benchmark: str,
                        limit: int = 20) -> list[dict[str, Any]]:
    """The node's newest Offline performance runs of ``benchmark`` (its submission name) on ``backend`` that
    measured a throughput, newest first: ``run_id``, ``samples_per_second``, ``started_at`` and ``engine_args``
    (the provenance's, decoded; {} when unknown or unreadable). [] without a store."""
    if not Path(db_path).is_file():
        return []
    _, rows = query_rows(
        db_path,
        "SELECT s.run_id, s.samples_per_second, s.started_at, p.engine_args_json FROM run_summary s "
        "LEFT JOIN provenance p USING (run_id) WHERE s.node = ? AND s.scenario = 'Offline' "
        "AND s.mode = 'performance' AND s.backend = ? AND s.benchmark = ? AND s.samples_per_second > 0 "
        "ORDER BY s.started_at DESC NULLS LAST LIMIT ?",
        [node, backend, benchmark, limit])
    out = []
    for run_id, rate, started, engine_json in rows:
        try:
            engine = json.loads(engine_json) if engine_json else {}
        except ValueError:
            engine = {}
        out.append({"run_id": run_id, "samples_per_second": float(rate), "started_at": started,
                    "engine_args": engine if isinstance(engine, dict) else {}})
    return out


# What a capacity search judges a probe by: LoadGen's verdict, the p99s and the limits the run logged, throughput
# and the run's times (its duration).
RUN_FIGURE_COLUMNS = ("result_validity", "invalid_reason", "ttft_p99_ns", "tpot_p99_ns", "latency_p99_ns",
                      "ttft_latency_ns", "tpot_latency_ns", "target_latency_ns", "samples_per_second",
                      "completed_samples_per_second", "started_at", "finished_at", "lg_model_name")


def run_figures(db_path: str | os.PathLike, run_id: str) -> dict[str, Any] | None:
    """The :data:`RUN_FIGURE_COLUMNS` of one ``runs`` row (plain values), or None when the run is not stored."""
    cols, rows = query_rows(db_path, f"SELECT {', '.join(RUN_FIGURE_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])
    return dict(zip(cols, rows[0])) if rows else None


def save_submission_checks(db_path: str | os.PathLike, rows: list[dict[str, Any]], *,
                           lock_timeout_s: float = 30) -> str:
    """Record one checker run in ``submission_checks``, in one transaction, and return its ``check_id``. The rows
    hold the other columns of :data:`SUBMISSION_CHECKS_COLUMNS`; ``check_id`` (default: a new one, shared by all
    rows) and ``checked_at`` (default: now, UTC) are filled in where a row leaves them out. List values (the error
    lines) are stored as JSON."""
    import json
    import uuid

    columns = [c for c, _ in SUBMISSION_CHECKS_COLUMNS]
    for row in rows:
        unknown = sorted(set(row) - set(columns))
        if unknown:
            raise ValueError(f"save_submission_checks: unknown column(s) {unknown}")
    check_id, now = uuid.uuid4().hex[:12], _utcnow()
    stamped = [{"check_id": check_id, "checked_at": now, **row} for row in rows]
    with open_for_write(db_path, lock_timeout_s=lock_timeout_s) as conn:
        conn.execute("BEGIN TRANSACTION")
        try:
            for row in stamped:
                values = [json.dumps(row.get(c)) if isinstance(row.get(c), list) else row.get(c) for c in columns]
                conn.execute(f"INSERT OR REPLACE INTO submission_checks ({', '.join(columns)}) "
                             f"VALUES ({', '.join('?' for _ in columns)})", values)
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback_quietly(conn)
            if isinstance(exc, Exception):
                raise _write_failure(exc, Path(os.path.abspath(db_path)), "saving submission checks") from None
            raise
    return stamped[0]["check_id"] if stamped else check_id


def read_submission_checks(db_path: str | os.PathLike, check_id: str | None = None) -> list[dict[str, Any]]:
    """``submission_checks`` rows of one check (default: the latest), error lists decoded; [] without any."""
    import json

    import duckdb

    if not Path(db_path).is_file():
        return []
    with open_read_only(db_path) as conn:
        try:
            if check_id is None:
                latest = conn.execute("SELECT check_id FROM submission_checks ORDER BY checked_at DESC LIMIT 1")
                found = latest.fetchone()
                if found is None:
                    return []
                check_id = found[0]
            cur = conn.execute("SELECT * FROM submission_checks WHERE check_id = ? ORDER BY system, benchmark, "
                               "scenario", [check_id])
        except duckdb.CatalogException:
            return []
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row)) for row in cur.fetchall()]
    for row in rows:
        for key in ("expected_errors", "unexpected_errors"):
            row[key] = json.loads(row[key]) if row[key] else []
    return rows


# ------------------------------------------------------------------------------------------- MLPerf Endpoints


def _replace_rows(conn: "duckdb.DuckDBPyConnection", table: str, columns: list[tuple[str, str]],
                  rows: list[dict[str, Any]]) -> None:
    names = [c for c, _ in columns]
    for row in rows:
        unknown = sorted(set(row) - set(names))
        if unknown:
            raise ValueError(f"{table}: unknown column(s) {unknown}")
        conn.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
                     [row.get(c) for c in names])


def save_endpoint_point(db_path: str | os.PathLike, row: dict[str, Any], accuracy: list[dict[str, Any]], *,
                        lock_timeout_s: float = 30) -> None:
    """Store one Endpoints point (an ``endpoint_points`` row and its ``endpoint_accuracy`` rows) in one transaction,
    replacing what an earlier ingest of the same ``run_id`` stored."""
    row = {**row, "ingested_at": row.get("ingested_at") or _utcnow()}
    with open_for_write(db_path, lock_timeout_s=lock_timeout_s) as conn:
        conn.execute("BEGIN TRANSACTION")
        try:
            for table in ("endpoint_points", "endpoint_accuracy"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", [row["run_id"]])
            _replace_rows(conn, "endpoint_points", ENDPOINT_POINTS_COLUMNS, [row])
            _replace_rows(conn, "endpoint_accuracy", ENDPOINT_ACCURACY_COLUMNS, accuracy)
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback_quietly(conn)
            if isinstance(exc, Exception):
                raise _write_failure(exc, Path(os.path.abspath(db_path)), "saving an Endpoints point") from None
            raise


def read_endpoint_table(db_path: str | os.PathLike, table: str, where: str = "",
                        params: Sequence[Any] = ()) -> "pandas.DataFrame":
    """``endpoint_points`` / ``endpoint_accuracy`` / ``endpoint_checks`` rows matching the optional SQL condition
    ``where`` as a DataFrame; an empty one (with the columns) before any was stored."""
    import pandas as pd

    columns = {"endpoint_points": ENDPOINT_POINTS_COLUMNS, "endpoint_accuracy": ENDPOINT_ACCURACY_COLUMNS,
               "endpoint_checks": ENDPOINT_CHECKS_COLUMNS}[table]
    names = [c for c, _ in columns]
    if not Path(db_path).is_file():
        return pd.DataFrame(columns=names)
    import duckdb

    order = {"endpoint_points": "node, concurrency, ingested_at", "endpoint_accuracy": "run_id, source, metric",
             "endpoint_checks": "checked_at, seq"}[table]
    with open_read_only(db_path) as conn:
        try:
            return conn.execute(f"SELECT * FROM {table} {'WHERE ' + where if where else ''} ORDER BY {order}",
                                list(params)).df()
        except duckdb.CatalogException:
            return pd.DataFrame(columns=names)
        except duckdb.Error as exc:
            raise StoreError(f"reading {table} failed: {_first_line(exc)}") from None


def save_endpoint_checks(db_path: str | os.PathLike, bundle: str, findings: list[dict[str, Any]], *,
                         lock_timeout_s: float = 30) -> str:
    """Record one Endpoints checker run over ``bundle`` (its findings: rule, severity, message, fix, path, spec_ref)
    in ``endpoint_checks``; returns its ``check_id``."""
    import uuid

    check_id, now = uuid.uuid4().hex[:12], _utcnow()
    rows = [{"check_id": check_id, "checked_at": now, "bundle": bundle, "seq": i, **f} for i, f in enumerate(findings)]
    with open_for_write(db_path, lock_timeout_s=lock_timeout_s) as conn:
        conn.execute("BEGIN TRANSACTION")
        try:
            _replace_rows(conn, "endpoint_checks", ENDPOINT_CHECKS_COLUMNS, rows)
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback_quietly(conn)
            if isinstance(exc, Exception):
                raise _write_failure(exc, Path(os.path.abspath(db_path)), "saving Endpoints checker findings") from None
            raise
    return check_id
