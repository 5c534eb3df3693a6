"""``mlperf-dagster ingest`` and ``mlperf-dagster query``: LoadGen logs into DuckDB, SQL out."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

INGEST_HELP = """\
Find every LoadGen run at or below PATH and store it in the DuckDB file DB (created if absent).

PATH may be one run folder (holding mlperf_log_detail.txt / mlperf_log_summary.txt, or a harness
run_manifest.json), a scenario folder of an MLPerf submission tree
(closed/<submitter>/results/<system>/<benchmark>/<Scenario>: performance/run_1, performance/ranging, accuracy,
TEST06 and compliance runs are all found), or any folder above them.

All or nothing: every run is parsed, and every value checked against its column, before the database is
opened, and all runs are then written in one transaction. A truncated, binary or foreign file, or a value
the database cannot hold (not finite, beyond a 64-bit integer), stops the command with one line naming the
file (and line and key); a full disk or any other write failure rolls the transaction back. Either way
nothing is stored and the database is left unchanged (a database this command was creating is removed).

One run is one row: a run without a harness run_manifest.json is keyed by a hash of its files' content,
so the same run folder ingested through a symlink, another relative path or after a copy replaces its
row instead of adding one; ingesting a folder again after its files changed replaces what that folder
stored. Harness runs are keyed by the manifest's run id.

Compliance verification files of a form this command does not know (TEST01/TEST04/TEST06 forms are
known), and second copies of a run found in the same ingest, are skipped: one "skipped PATH: reason"
line each, and the rest is ingested.
Prints one line per run: run id, scenario, mode, validity, headline figure.

exit status: 0 the runs listed were stored (skipped files and folders are listed with their reason);
2 nothing was stored (the one-line message says why: bad input, no run found, database locked or
unusable, disk full); 130 interrupted (nothing stored).

examples:
  mlperf-dagster ingest artifacts/runs/2024-06-01T12-00 --db results.duckdb --node gpu-01
  mlperf-dagster ingest ~/inference_results_v5.1/closed/Cisco --db results.duckdb
"""

QUERY_HELP = """\
Run one SQL statement on DB (read-only) and print the result.
An empty statement, or SQL the database refuses, is one error line (exit status 2); a statement that
returns no result set at all (such as SET ...) prints "(no result set)"; a query with columns and no rows
prints its header.

The view run_summary has one row per LoadGen run with the canonical figures (latencies in ns, throughput
per second, accuracy of the run's scenario folder). Tables: runs, detail_events, settings,
accuracy_results, provenance, sample_timings, progress, accuracy_log_samples, run_systems, submission_checks,
qps_search, telemetry (GPU and engine samples over each run), run_telemetry (each run's telemetry summary),
schema_version.
Units: *_ns columns are nanoseconds, *_per_second columns are per second, times are UTC.

examples:
  mlperf-dagster query "SELECT run_id, scenario_label, mode, tokens_per_second FROM run_summary" --db results.duckdb
  mlperf-dagster query "SELECT key, value_json FROM detail_events WHERE key LIKE 'result_%'" --db r.duckdb --format csv
  mlperf-dagster query "SELECT run_id, energy_per_output_token_j, mean_gpu_util_pct FROM run_summary" --db r.duckdb
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest", help="store every LoadGen run found under PATH in DuckDB",
        description=INGEST_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", help="run folder, submission scenario folder, or any folder above")
    p.add_argument("--db", required=True, help="DuckDB file (created with the current schema if absent)")
    p.add_argument("--node", help="node name to record (default: run_manifest.json's node)")
    p.add_argument("--backend", help="backend name to record (default: run_manifest.json's backend)")
    p.add_argument("--benchmark", help="benchmark name, e.g. llama3.1-8b (default: manifest or submission path)")
    p.add_argument("--lock-timeout", type=float, default=30, metavar="SECONDS",
                   help="how long to wait for another writer (default: 30)")
    p.set_defaults(func=cmd_ingest)

    q = subparsers.add_parser(
        "query", help="run SQL on the results database",
        description=QUERY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("sql", metavar="SQL", help="one SQL statement (read-only)")
    q.add_argument("--db", required=True, help="DuckDB file written by `mlperf-dagster ingest`")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table: aligned text (default); csv: with a header row; json: a list of row objects")
    q.set_defaults(func=cmd_query)


def cmd_ingest(args: argparse.Namespace) -> int:
    from mlperf_assets.cli import UserError
    from mlperf_assets.loadgen_logs import LogFormatError
    from mlperf_assets.store import StoreError, ingest_path

    try:
        runs = ingest_path(args.db, args.path, node=args.node, backend=args.backend, benchmark=args.benchmark,
                           lock_timeout_s=args.lock_timeout)
    except (LogFormatError, StoreError) as exc:
        raise UserError(_one_line(str(exc))) from None
    except OSError as exc:  # a file that vanished or cannot be read mid-ingest: nothing was written
        where = exc.filename or args.path
        raise UserError(f"{where}: {exc.strerror or exc}; nothing was stored") from None
    rows = [[r.run_id, r.scenario_label or "-", r.mode, r.result_validity or "-", r.headline, r.source_path] for r in runs]
    print(_table(["run_id", "scenario", "mode", "validity", "headline", "source_path"], rows))
    for s in getattr(runs, "skipped", []):
        print(f"skipped {s.path}: {_one_line(s.reason)}")
    skipped = len(getattr(runs, "skipped", []))
    print(f"{len(runs)} run(s) ingested into {args.db}" + (f", {skipped} skipped" if skipped else ""))
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def cmd_query(args: argparse.Namespace) -> int:
    from mlperf_assets.cli import UserError
    from mlperf_assets.store import StoreError, query_rows

    try:
        cols, rows = query_rows(args.db, args.sql)
    except StoreError as exc:
        raise UserError(_one_line(str(exc))) from None
    if not cols:
        sys.stdout.write({"json": "[]\n", "csv": ""}.get(args.format, "(no result set)\n"))
        return 0
    sys.stdout.write(format_rows(cols, rows, args.format))
    return 0


# --------------------------------------------------------------------------------------------- output


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if not v.is_integer() or abs(v) >= 1e16 else f"{v:.1f}"
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    return str(v)


def _table(cols: list[str], rows: list[list[Any]] | list[tuple]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    numeric = [all(_is_num(r[i]) for r in rows if r[i] is not None) and any(r[i] is not None for r in rows)
               for i in range(len(cols))]

    def fmt(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    out = [fmt(cols), "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in cells]
    return "\n".join(out)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def format_rows(cols: list[str], rows: list[tuple], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{c: _jsonable(v) for c, v in zip(cols, r)} for r in rows], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else (v.isoformat() if isinstance(v, (datetime, date)) else v) for v in r])
        return buf.getvalue()
    return _table(cols, rows) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})\n"
