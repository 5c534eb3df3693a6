"""The benchmark report as markdown: pure functions from ``run_summary`` rows to text.

``LATEST_RUNS_SQL`` selects the latest performance run per node and scenario (with the accuracy scores
``run_summary`` attaches to it); :func:`build_report` renders them. Sections are separate functions so a
later report (charts, regressions) can add its own sections around :func:`summary_table`.
No Dagster, no I/O here: the ``benchmark_report`` asset queries DuckDB and writes the file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

# Latest performance run per (node, scenario, backend) among our own nodes' runs.
LATEST_RUNS_SQL = """
SELECT *
FROM run_summary
WHERE mode = 'performance' AND node IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY node, scenario, backend ORDER BY started_at DESC NULLS LAST, run_id DESC) = 1
ORDER BY node, CASE scenario WHEN 'Offline' THEN 0 WHEN 'Server' THEN 1 WHEN 'SingleStream' THEN 2 ELSE 3 END
"""

BACKEND_LABELS = {"baseline": "baseline", "harness-ceiling": "harness ceiling", "model": "model"}


def _missing(value: Any) -> bool:
    """None, NaN, pandas NA/NaT: anything a DataFrame uses for 'no value'."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):
        return str(value) in ("<NA>", "NaT")


def fmt_number(value: Any, digits: int = 2) -> str:
    if _missing(value):
        return "-"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def fmt_text(value: Any) -> str:
    return "-" if _missing(value) else str(value)


def fmt_ms(value_ns: Any) -> str:
    """ns -> ms with 3 decimals, or '-'."""
    return "-" if _missing(value_ns) else f"{float(value_ns) / 1e6:,.3f}"


def fmt_bool(value: Any, yes: str = "pass", no: str = "FAIL") -> str:
    if _missing(value):
        return "-"
    return yes if bool(value) else no


def backend_label(row: Mapping[str, Any]) -> str:
    """``extractive (baseline)``: the backend and, unless it is a model, what it is."""
    backend = fmt_text(row.get("backend"))
    kind = row.get("backend_kind")
    if _missing(kind) or kind == "model":
        return str(backend)
    return f"{backend} ({BACKEND_LABELS.get(kind, kind)})"


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per node x scenario: validity, throughput, latency, accuracy."""
    header = (
        "| node | scenario | backend | validity | samples/s | tokens/s | TTFT p99 (ms) | TPOT p99 (ms) "
        "| latency p99 (ms) | ROUGE-1 | ROUGE-2 | ROUGE-L | accuracy | run |"
    )
    lines = [header, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    fmt_text(r.get("node")),
                    fmt_text(r.get("scenario")),
                    backend_label(r),
                    fmt_text(r.get("result_validity")),
                    fmt_number(r.get("samples_per_second")),
                    fmt_number(r.get("tokens_per_second")),
                    fmt_ms(r.get("ttft_p99_ns")),
                    fmt_ms(r.get("tpot_p99_ns")),
                    fmt_ms(r.get("latency_p99_ns")),
                    fmt_number(r.get("rouge1"), 4),
                    fmt_number(r.get("rouge2"), 4),
                    fmt_number(r.get("rougeL"), 4),
                    fmt_bool(r.get("accuracy_passed")),
                    f"`{r.get('harness_run_id') or r.get('run_id')}`",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def notes_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """Caveats a reader must see next to the figures (baselines, invalid runs)."""
    notes: list[str] = []
    kinds = {r.get("backend_kind") for r in rows}
    if "baseline" in kinds:
        notes.append(
            "Rows marked *baseline* come from the extractive lead-3 summarizer (the first three sentences of "
            "each article), not from a language model: their throughput and latency measure the harness and "
            "LoadGen, and their ROUGE is a reference point, not a model's accuracy."
        )
    if "harness-ceiling" in kinds:
        notes.append(
            "Rows marked *harness ceiling* come from the replay backend (answers with the reference tokens "
            "instantly): the upper bound of the harness itself, never a model's figure."
        )
    invalid = [f"{r.get('node')}/{r.get('scenario')}" for r in rows if r.get("result_validity") == "INVALID"]
    if invalid:
        notes.append(
            f"LoadGen judged {', '.join(invalid)} INVALID (for short smoke settings this is expected: "
            "MLPerf requires a 10-minute minimum duration and the full query count)."
        )
    if not notes:
        return ""
    return "## Notes\n\n" + "\n".join(f"- {n}" for n in notes)


def build_report(
    rows: Iterable[Mapping[str, Any]],
    *,
    generated_at: datetime,
    title: str = "MLPerf Inference benchmark report",
    context_lines: Sequence[str] = (),
    extra_sections: Sequence[str] = (),
) -> str:
    """The whole report: title, context (config, dataset), summary table, notes, then ``extra_sections``."""
    rows = list(rows)
    parts = [f"# {title}", "", f"Generated {generated_at:%Y-%m-%d %H:%M:%S} UTC."]
    parts += [f"{line}  " if i < len(context_lines) - 1 else line for i, line in enumerate(context_lines)]
    parts.append("")
    parts.append("## Latest run per node and scenario")
    parts.append("")
    if rows:
        parts.append(summary_table(rows))
        parts.append("")
        parts.append(
            "Throughput and latency are LoadGen's figures from the performance run; ROUGE from the accuracy run "
            "of the same materialization, scored the MLPerf way. Latencies in ms."
        )
    else:
        parts.append("No benchmark runs in the results store yet: materialize `scenario_run` and `loadgen_results`.")
    notes = notes_section(rows)
    if notes:
        parts += ["", notes]
    for section in extra_sections:
        parts += ["", section.rstrip()]
    return "\n".join(parts).rstrip() + "\n"
