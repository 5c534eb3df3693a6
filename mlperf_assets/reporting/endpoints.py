"""The report's "MLPerf Endpoints curves" section: per node, the latest curve (a table and its official Pareto step
chart) and the latest curve against the previous one (``endpoints.regression``). Pure: rows in, markdown lines and
charts out; nothing at all when the store has no ``endpoint_points`` rows.
"""

from __future__ import annotations

import re

import pandas as pd

from mlperf_assets.charts import Chart
from mlperf_assets.endpoints.charts import pareto_chart
from mlperf_assets.endpoints.regression import compare_curves, curve_generations
from mlperf_assets.reporting.text import fmt_number, markdown_table

KEY_PREFIX = "endpoints_pareto_"  # one PNG per node: endpoints_pareto_<node>.png


def chart_key(node: str) -> str:
    return KEY_PREFIX + re.sub(r"[^A-Za-z0-9_.-]+", "_", node)


def _curve_table(latest: pd.DataFrame) -> pd.DataFrame:
    rows = sorted(latest.to_dict("records"), key=lambda r: (pd.isna(r.get("concurrency")),
                                                             r.get("concurrency") or 0))
    return pd.DataFrame([{
        "concurrency": "Offline" if pd.isna(r.get("concurrency")) else int(r["concurrency"]),
        "system_tps": fmt_number(r.get("system_tps")), "tps_per_user": fmt_number(r.get("tps_per_user")),
        "TTFT p90 ms": fmt_number(r.get("ttft_p90_ms"), 1), "TPOT p90 ms": fmt_number(r.get("tpot_p90_ms"), 2),
        "run id": r.get("run_id")} for r in rows])


def _change_table(table: pd.DataFrame) -> pd.DataFrame:
    def pct(v) -> str:
        return "-" if v is None or pd.isna(v) else f"{v:+.1f}%"

    return pd.DataFrame([{
        "point": r["point"],
        "system_tps (before -> now)": f"{fmt_number(r['system_tps before'])} -> {fmt_number(r['system_tps now'])}",
        "system_tps change": pct(r["system_tps change %"]),
        "tps_per_user (before -> now)": f"{fmt_number(r['tps_per_user before'])} -> "
                                        f"{fmt_number(r['tps_per_user now'])}",
        "tps_per_user change": pct(r["tps_per_user change %"]),
        "flagged": f"**{r['flagged']}**" if r["flagged"] else ""} for r in table.to_dict("records")])


def endpoints_section(points: pd.DataFrame, threshold_pct: float) -> tuple[list[str], list[Chart], list[str]]:
    """(markdown lines, one Pareto chart per node keyed :func:`chart_key`, regression sentences) of the stored
    ``endpoint_points`` rows; all empty when there are none."""
    if points is None or points.empty:
        return [], [], []
    lines = ["## MLPerf Endpoints curves", "",
             "Per node, the latest curve (the newest ingested run of each point, as the bundle packages it) and its "
             "official Pareto step chart (system TPS against tokens/s per user, Offline a ceiling), then the latest "
             "curve against the previous one: points matched by concurrency, a drop beyond "
             f"{threshold_pct:g}% in system_tps or tps_per_user, or in the area under the Pareto step function, "
             "is flagged.", ""]
    charts: list[Chart] = []
    flags: list[str] = []
    nodes = points["node"].fillna("unknown").astype(str)
    for node in sorted(nodes.unique()):
        latest, previous = curve_generations(points[nodes == node])
        if latest.empty:
            continue
        chart = pareto_chart(latest)
        chart.key = chart_key(node)
        charts.append(chart)
        lines += [f"### {node}", "", markdown_table(_curve_table(latest)), ""]
        lines += [f"![{chart.title}]({chart.key}.png)" if chart.available else f"Not drawn: {chart.reason}.", ""]
        lines += [f"_{note}_" for note in chart.notes] + ([""] if chart.notes else [])
        if previous.empty:
            lines += ["No previous curve of this node to compare with.", ""]
            continue
        result = compare_curves(previous, latest, node=node, threshold_pct=threshold_pct)
        flags += result.flags
        area = ("-" if result.area_change_pct is None else
                f"{fmt_number(result.area_previous, 0)} -> {fmt_number(result.area_latest, 0)} "
                f"({result.area_change_pct:+.1f}%)")
        lines += [f"Latest curve against the previous one (area under the Pareto step function: {area}):", "",
                  markdown_table(_change_table(result.table), empty="_No point of the latest curve was measured "
                                                                    "in the previous one._"), ""]
        lines += [f"- **{flag}**" for flag in result.flags] or ["No Endpoints regression."]
        lines.append("")
    return lines, charts, flags
