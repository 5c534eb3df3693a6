"""The dashboard: one self-contained HTML file (plotly.js inline, data inline, no network), built from charts.

`build_dashboard_html` is pure: figures and tables in, a string out. The page shows the summary table, the
regression flags, your runs beside the published MLPerf results on the same accelerator, every chart (hover for
details), and a run selector: choosing a run shows its figures and percentiles (with the p99 limits that run is held
to, and where they come from) and, for runs of our harness, its per-sample latency histograms and throughput
timeline, and its GPU telemetry over the run (utilisation, power, KV cache, requests, tokens/s; LoadGen's test
shaded). Everything user-supplied (node names, run ids, paths) is escaped; the inline JSON cannot close its script
element. Each figure is in the page once, as JSON (`figure_json`, which the report also hashes to name its PNGs).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from mlperf_assets.charts import Chart


@dataclass
class RunView:
    """What the run selector shows for one run."""

    run_id: str
    label: str
    color: str
    details: list[tuple[str, str]]
    percentiles_ms: dict[str, dict[str, float | None]]  # {"latency"|"ttft"|"tpot": {"p50", "p90", "p99"}}
    limits_ms: dict[str, float] | None = None  # {"ttft": .., "tpot": ..} or {"latency": ..} for Server runs
    limits_source: str | None = None  # where the limits come from ("LoadGen log", "benchmark table (...)")
    figures: dict[str, object] = field(default_factory=dict)  # "histogram"/"progress"/"telemetry" -> figure or dict
    notes: list[str] = field(default_factory=list)


def figure_json(data: object) -> str:
    """JSON text of plain data (figure dicts, run details): the standard library's encoder when every value is
    plain, else plotly's (numpy arrays, timestamps; NaN as null)."""
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError):
        from plotly.io.json import to_json_plotly

        return to_json_plotly(data)


def _script_safe(text: str) -> str:
    # Inside <script> only "</" and "<!--" can end or confuse the element; U+2028/9 break old JS parsers.
    return (text.replace("</", "<\\/").replace("<!--", "<\\!--")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _figure_dict(fig) -> dict:
    if isinstance(fig, dict):  # already plain (the per-run figures)
        return fig
    data = fig.to_plotly_json()
    for trace in data.get("data", []):
        trace.pop("uid", None)
    return data


def _table_html(df: pd.DataFrame, table_id: str) -> str:
    if df is None or df.empty:
        return '<p class="empty">No runs in the store yet.</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for column in df.columns:
            value = "" if row[column] is None else str(row[column])
            css = ""
            if value in ("INVALID", "FAIL") or (column == "regression" and value not in ("", "–")):
                css = ' class="bad"'
            elif value in ("VALID", "PASS"):
                css = ' class="good"'
            cells.append(f"<td{css}>{html.escape(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


PUBLISHED_KEY = "published_context"


def build_dashboard_html(
    *,
    title: str,
    subtitle: str,
    summary: pd.DataFrame,
    charts: Sequence[Chart],
    runs: Sequence[RunView],
    regressions: Sequence[str] = (),
    notes: Sequence[str] = (),
    plotly_js: str | None = None,
    figures_json: Mapping[str, str] | None = None,
) -> str:
    """The whole page. `plotly_js` defaults to the bundled plotly.js of the installed plotly package;
    `figures_json` (chart key -> `figure_json` of its figure), when the caller has encoded them already.

    A `published_context` chart among `charts` gets its own section (chart, table and notes), drawn or not."""
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    figures_json = figures_json or {}
    drawn = [c for c in charts if c.available and c.has_figure]
    missing = [c for c in charts if not c.available and c.key != PUBLISHED_KEY]
    published = next((c for c in charts if c.key == PUBLISHED_KEY), None)
    encoded = [
        '{"key":' + json.dumps(c.key) + ',"figure":' + (figures_json.get(c.key) or figure_json(c.figure_dict)) + "}"
        for c in drawn
    ]
    runs_json = figure_json([
        {
            "id": r.run_id, "label": r.label, "color": r.color, "details": r.details,
            "percentiles": r.percentiles_ms, "limits": r.limits_ms, "limits_source": r.limits_source,
            "notes": r.notes,
            "figures": {name: _figure_dict(fig) for name, fig in r.figures.items() if fig is not None},
        }
        for r in runs
    ])
    default_run = next((i for i, r in enumerate(runs) if r.percentiles_ms), 0)
    data = f'{{"charts":[{",".join(encoded)}],"default_run":{default_run},"runs":{runs_json}}}'
    chart_divs = "\n".join(_chart_box(c) for c in drawn if c.key != PUBLISHED_KEY)
    missing_html = ""
    if missing:
        items = "".join(
            f"<li><b>{html.escape(c.title)}</b>: {html.escape(c.reason or 'no data')}"
            + (" (needs our harness's per-run data)" if c.needs_harness_data else "") + "</li>"
            for c in missing
        )
        missing_html = f'<section id="missing"><h2>Charts without data</h2><ul>{items}</ul></section>'
    regressions_html = (
        "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in regressions) + "</ul>"
        if regressions else '<p class="good">No regression beyond the threshold in the latest runs.</p>'
    )
    notes_html = "".join(f"<p class=\"note\">{html.escape(n)}</p>" for n in notes)
    options = "".join(
        f'<option value="{i}">{html.escape(r.label)}</option>' for i, r in enumerate(runs)
    )
    run_section = (
        f'<label for="run-select">Run</label> <select id="run-select">{options}</select>'
        '<table id="run-details"></table><p id="run-notes" class="note"></p>'
        '<div class="chart run-chart" id="run-percentiles"></div>'
        '<div class="chart run-chart" id="run-histogram"></div>'
        '<div class="chart run-chart" id="run-progress"></div>'
        '<div class="chart run-chart" id="run-telemetry"></div>'
        if runs else '<p class="empty">No runs in the store yet.</p>'
    )
    return _PAGE.format(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        plotly_js=plotly_js.replace("</script", "<\\/script"),
        summary_table=_table_html(summary, "summary-table"),
        regressions=regressions_html,
        notes=notes_html,
        published=_published_section(published),
        chart_divs=chart_divs,
        missing=missing_html,
        run_section=run_section,
        expected=len(drawn),
        data=_script_safe(data),
        script=_SCRIPT,
        css=_CSS,
    )


def _chart_box(chart: Chart) -> str:
    return (f'<figure class="chart-box"><div class="chart" id="chart-{html.escape(chart.key)}" '
            f'data-chart="{html.escape(chart.key)}"></div>'
            + "".join(f'<figcaption>{html.escape(n)}</figcaption>' for n in chart.notes) + "</figure>")


def _published_section(chart: Chart | None) -> str:
    """Your runs vs the published results on the same accelerator: the chart, then its table and notes."""
    if chart is None:
        return ""
    intro = ('<p class="note">Tokens/s per accelerator of your latest runs beside the published MLPerf results for '
             "the same benchmark, scenario and accelerator model (from the results tree's systems JSON; your runs' "
             "accelerators from the GPU list in run_manifest.json).</p>")
    if not chart.available:
        body = f'<p class="empty">Not drawn: {html.escape(chart.reason or "no data")}.</p>' + "".join(
            f'<p class="note">{html.escape(n)}</p>' for n in chart.notes)
    else:
        body = _chart_box(chart) + _table_html(chart.table, "published-table")
    return f'<section id="published"><h2>Your runs vs published results</h2>{intro}{body}</section>'


def percentiles_from_row(row: Mapping) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for prefix in ("latency", "ttft", "tpot"):
        values = {}
        for pct in ("p50", "p90", "p99"):
            value = row.get(f"{prefix}_{pct}_ns")
            values[pct] = None if value is None or pd.isna(value) else float(value) / 1e6
        if any(v is not None for v in values.values()):
            out[prefix] = values
    return out


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 18px 40px;
color:#222;background:#fafafa}
header{border-bottom:2px solid #4e79a7;margin-bottom:12px}h1{margin:16px 0 4px}h2{margin-top:28px}
.sub{color:#555;margin:0 0 10px}.note{color:#555;font-size:.92em}
table{border-collapse:collapse;font-size:.9em;background:#fff}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#e8eef6}.good{color:#1a7f37}.bad{color:#b42318;font-weight:600}
.chart-box{background:#fff;border:1px solid #e3e3e3;margin:14px 0;padding:6px}.chart{min-height:200px}
#run-select{font-size:1em;max-width:100%;padding:3px}#run-details{margin:10px 0}
.empty{color:#777;font-style:italic}figcaption{color:#555;font-size:.9em}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:">
<title>{title}</title>
<style>{css}</style>
<script>{plotly_js}</script>
</head>
<body data-expected-charts="{expected}">
<header><h1>{title}</h1><p class="sub">{subtitle}</p>{notes}</header>
<section id="summary"><h2>Latest run per node and scenario</h2>{summary_table}</section>
<section id="regressions"><h2>Regressions</h2>{regressions}</section>
{published}
<section id="charts"><h2>Charts</h2>{chart_divs}</section>
{missing}
<section id="run-view"><h2>One run</h2>{run_section}</section>
<script type="application/json" id="dashboard-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

# Plain ES2017, no external resources. Sets body[data-rendered-charts] once every overview chart has rendered.
_SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("dashboard-data").textContent);
  var CONFIG = {responsive: true, displaylogo: false, showLink: false, showSendToCloud: false,
                showEditInChartStudio: false};
  var LIMIT = "#d62728";

  function plot(div, fig) {
    return Plotly.react(div, fig.data || [], fig.layout || {}, CONFIG);
  }

  function percentileFigure(run) {
    var panels = [["latency", "latency"], ["TTFT", "ttft"], ["TPOT", "tpot"]].filter(function (p) {
      return run.percentiles[p[1]];
    });
    var layout = {title: {text: "Percentiles of " + run.label, x: 0.01, font: {size: 14}}, height: 360,
                  showlegend: false, shapes: [], annotations: [],
                  grid: {rows: 1, columns: Math.max(panels.length, 1), pattern: "independent"},
                  margin: {l: 60, r: 20, t: 50, b: 50}};
    var data = [];
    panels.forEach(function (panel, i) {
      var ax = i === 0 ? "" : String(i + 1);
      var p = run.percentiles[panel[1]];
      data.push({type: "bar", x: ["p50", "p90", "p99"], y: [p.p50, p.p90, p.p99], xaxis: "x" + ax,
                 yaxis: "y" + ax, marker: {color: run.color}, name: panel[0],
                 hovertemplate: panel[0] + " %{x}: %{y:,.2f} ms<extra></extra>"});
      layout["xaxis" + ax] = {title: {text: panel[0] + " percentile"}};
      layout["yaxis" + ax] = {title: {text: panel[0] + " (ms)"}, rangemode: "tozero"};
      var limit = run.limits ? run.limits[panel[1]] : null;
      if (limit !== null && limit !== undefined) {
        layout.shapes.push({type: "line", xref: "x" + ax + " domain", x0: 0, x1: 1, yref: "y" + ax,
                            y0: limit, y1: limit, line: {color: LIMIT, dash: "dash"}});
        layout.annotations.push({xref: "x" + ax + " domain", x: 0, yref: "y" + ax, y: limit, xanchor: "left",
                                 yanchor: "bottom", showarrow: false, font: {color: LIMIT, size: 11},
                                 text: "p99 limit " + limit + " ms" +
                                   (run.limits_source ? " (" + run.limits_source + ")" : "")});
      }
    });
    return {data: data, layout: layout};
  }

  function showRun(index) {
    var run = DATA.runs[index];
    if (!run) { return Promise.resolve(); }
    var table = document.getElementById("run-details");
    table.textContent = "";
    run.details.forEach(function (kv) {
      var tr = document.createElement("tr");
      var th = document.createElement("th"); th.textContent = kv[0];
      var td = document.createElement("td"); td.textContent = kv[1];
      tr.appendChild(th); tr.appendChild(td); table.appendChild(tr);
    });
    document.getElementById("run-notes").textContent = run.notes.join(" ");
    var jobs = [];
    var pdiv = document.getElementById("run-percentiles");
    if (Object.keys(run.percentiles).length) {
      pdiv.style.display = ""; jobs.push(plot(pdiv, percentileFigure(run)));
    } else { Plotly.purge(pdiv); pdiv.style.display = "none"; }
    [["histogram", "run-histogram"], ["progress", "run-progress"], ["telemetry", "run-telemetry"]].forEach(function (pair) {
      var div = document.getElementById(pair[1]);
      var fig = run.figures[pair[0]];
      if (fig) { div.style.display = ""; jobs.push(plot(div, fig)); }
      else { Plotly.purge(div); div.style.display = "none"; }
    });
    return Promise.all(jobs);
  }

  var jobs = DATA.charts.map(function (chart) {
    return plot(document.getElementById("chart-" + chart.key), chart.figure);
  });
  var select = document.getElementById("run-select");
  if (select) {
    select.addEventListener("change", function () { showRun(Number(select.value)); });
    select.value = String(DATA.default_run || 0);
    jobs.push(showRun(DATA.default_run || 0));
  }
  Promise.all(jobs).then(function () {
    var rendered = Array.prototype.filter.call(document.querySelectorAll(".chart[data-chart]"), function (d) {
      return d.classList.contains("js-plotly-plot") && d.querySelector(".main-svg") !== null;
    }).length;
    document.body.setAttribute("data-rendered-charts", String(rendered));
  }, function (err) {
    document.body.setAttribute("data-render-error", String(err));
    console.error("dashboard: chart rendering failed", err);
  });
})();
"""
