"""Text helpers of the report and the CLI summaries: figures formatted for people, markdown tables, and the caveats
a reader must see next to them (baselines, harness ceilings, invalid runs). Pure: no Dagster, no I/O.

The null check and the backend label are the charts' own (`charts.isnull`, `charts.backend_label`): one of each.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mlperf_assets.charts import isnull


def fmt_number(value: Any, digits: int = 2) -> str:
    if isnull(value):
        return "-"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def fmt_text(value: Any) -> str:
    return "-" if isnull(value) else str(value)


def fmt_ms(value_ns: Any, digits: int = 3, unit: str = "", missing: str = "-") -> str:
    """ns -> ms with `digits` decimals and `unit` appended (e.g. " ms"), or `missing`."""
    return missing if isnull(value_ns) else f"{float(value_ns) / 1e6:,.{digits}f}{unit}"


def fmt_bool(value: Any, yes: str = "pass", no: str = "FAIL") -> str:
    if isnull(value):
        return "-"
    return yes if bool(value) else no


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: Any, empty: str = "_No performance runs in the store yet._") -> str:
    """A markdown table of a DataFrame (header = columns), `|` and newlines in cells escaped; `empty` when no rows."""
    if df.empty:
        return empty
    header = "| " + " | ".join(_md_cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


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
    if "simulation" in kinds:
        notes.append(
            "Rows marked *simulation* come from the sim backend: a simulated server whose timing follows a "
            "configured capacity model (no model runs, the answers are reference tokens): figures that test the "
            "platform and the capacity search, never a GPU's."
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
