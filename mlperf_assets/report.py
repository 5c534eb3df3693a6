"""Text helpers of the report and the CLI summaries: figures formatted for people, and the caveats a reader must
see next to them (baselines, harness ceilings, invalid runs). Pure: no Dagster, no I/O.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

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
