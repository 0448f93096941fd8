"""`leadflow report`: the key KPIs from ClickHouse, as terminal tables or one static HTML page.

The numbers come from the same panel SQL as the Grafana dashboards, so both show the same truth.
The HTML page is self-contained: inline CSS and inline SVG, nothing fetched at view time.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any

from sinks.clickhouse.backend import Backend
from sinks.clickhouse.dashboards import panel_checks, substitute_macros

SECTIONS = (
    ("Funnel", "Funnel: leads reaching each stage"),
    ("Conversion", "Conversion between stages"),
    ("SLA compliance", "SLA compliance by policy"),
    ("Speed to lead", "Speed to lead (business hours, MQL → first sales touch) by source"),
    ("Attribution by channel and model", "Model comparison: won revenue by channel"),
    ("Marketing's SLA", "MQLs delivered vs target (marketing's SLA)"),
    ("Recycled leads", "Recycled leads coming back, by team"),
    ("Recycled: back after", "Recycled leads: days from recycle to return"),
    ("Feedback loop", "Why sales rejected our leads: reasons by channel and campaign"),
    ("Data quality", "Dead letters by reason"),
    ("Definitions", "Definitions version in use"),
)
PALETTE = ("#2f6fdf", "#e0703a", "#2aa876", "#b04fc9", "#d9a400", "#d6455d", "#4fa3c7")


@dataclass(frozen=True, slots=True)
class Section:
    """One KPI block: its title and the query result."""

    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


def collect(backend: Backend, from_s: int = 0, to_s: int | None = None) -> list[Section]:
    """Run the report's queries (the dashboards' panel SQL) for a time range (epoch seconds)."""
    panels = panel_checks()
    until = to_s if to_s is not None else int(time.time()) + 10 * 365 * 86400
    sections = []
    for title, panel_title in SECTIONS:
        columns, rows = backend.query(substitute_macros(panels[panel_title].sql, from_s, until))
        sections.append(Section(title, columns, rows))
    return sections


def _is_ratio(column: str) -> bool:
    return "_to_" in column or column in ("compliance", "weight")


def _fmt(value: Any, column: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1%}" if _is_ratio(column) else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --- HTML -------------------------------------------------------------------------------------


def _bars(
    labels: list[str], series: dict[str, list[float]], unit: str = "", ratio: bool = False
) -> str:
    """A horizontal grouped bar chart as inline SVG."""
    width, label_w = 760, 175
    bar_h = 16 if len(series) == 1 else 9
    row_h = bar_h * len(series) + 4
    height = 30 + len(labels) * (row_h + 8) + 8
    peak = max((v for values in series.values() for v in values), default=0) or 1
    if ratio:
        peak = 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{width}px" role="img">'
    ]
    for i, label in enumerate(labels):
        y = 24 + i * (row_h + 8)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4}" text-anchor="end" class="lbl">{html.escape(label)}</text>'
        )
        for j, (name, values) in enumerate(series.items()):
            value = values[i]
            w = max(1.0, (width - label_w - 70) * value / peak)
            color = PALETTE[j % len(PALETTE)]
            by = y + j * bar_h
            whole = value >= 100 or value == int(value)
            text = (
                f"{value:.0%}"
                if ratio
                else f"{value:,.0f}{unit}"
                if whole
                else f"{value:,.1f}{unit}"
            )
            parts.append(
                f'<rect x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h - 1}" fill="{color}"><title>{html.escape(name)}: {text}</title></rect>'
            )
            parts.append(
                f'<text x="{label_w + w + 4:.1f}" y="{by + bar_h - 2}" class="val">{text}</text>'
            )
    if len(series) > 1:
        x = 10
        for j, name in enumerate(series):
            parts.append(
                f'<rect x="{x}" y="4" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
            )
            parts.append(f'<text x="{x + 14}" y="13" class="val">{html.escape(name)}</text>')
            x += 14 + 6.5 * len(name) + 14
    parts.append("</svg>")
    return "".join(parts)


def _table(section: Section, limit: int = 25) -> str:
    hidden = {"bucket"}  # sort keys, not for reading
    shown = [i for i, c in enumerate(section.columns) if c not in hidden]
    section = Section(
        section.title,
        [section.columns[i] for i in shown],
        [tuple(row[i] for i in shown) for row in section.rows],
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(_fmt(v, c))}</td>"
            for v, c in zip(row, section.columns, strict=False)
        )
        + "</tr>"
        for row in section.rows[:limit]
    )
    more = (
        f'<p class="note">… {len(section.rows) - limit} more rows</p>'
        if len(section.rows) > limit
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _chart(section: Section) -> str:
    rows, cols = section.rows, section.columns
    if not rows:
        return '<p class="note">no data</p>'
    if section.title == "Funnel":
        return _bars([str(r[0]) for r in rows], {"leads": [float(r[1]) for r in rows]})
    if section.title == "Conversion":
        return _bars(
            [c.replace("_to_", " → ") for c in cols],
            {"conversion": [float(v) for v in rows[0]]},
            ratio=True,
        )
    if section.title == "SLA compliance":
        return _bars(
            [str(r[0]) for r in rows], {"met on time": [float(r[1]) for r in rows]}, ratio=True
        )
    if section.title == "Speed to lead":
        return _bars(
            [str(r[0]) for r in rows],
            {"median": [float(r[1]) for r in rows], "p90": [float(r[2]) for r in rows]},
            unit=" h",
        )
    if section.title == "Recycled leads":
        return _bars(
            [str(r[0]) for r in rows],
            {"came back (re-MQL)": [float(r[cols.index("recycled_to_mql")]) for r in rows]},
            ratio=True,
        )
    if section.title == "Recycled: back after":
        return _bars(
            [str(r[cols.index("back_after")]) for r in rows],
            {"leads": [float(r[cols.index("leads")]) for r in rows]},
        )
    if section.title == "Attribution by channel and model":
        models = cols[1:]
        return _bars(
            [str(r[0]) for r in rows],
            {m: [float(r[i + 1]) / 1000 for r in rows] for i, m in enumerate(models)},
            unit="k",
        )
    return ""


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c0d0}main{padding:16px 32px;display:grid;grid-template-columns:1fr 1fr;gap:16px}
section{background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 3px rgba(0,0,0,.08);min-width:0;overflow-x:auto}
section.wide{grid-column:1/-1}h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{padding:3px 8px;border-bottom:1px solid #e6e8ec;text-align:left}
th{background:#f0f2f5}.lbl{font-size:12px;fill:#1d2330}.val{font-size:11px;fill:#4a5263}.note{color:#6b7384;font-size:12px}
"""


def render_html(
    sections: list[Section], title: str = "leadflow report", generated_at: str = ""
) -> str:
    """One self-contained HTML page with charts and tables."""
    version = next((s.rows[0][0] for s in sections if s.title == "Definitions" and s.rows), "?")
    blocks = []
    for section in sections:
        chart = _chart(section)
        wide = section.title in (
            "Attribution by channel and model",
            "Feedback loop",
            "Marketing's SLA",
        )
        blocks.append(
            f'<section class="{"wide" if wide else ""}" data-chart="{html.escape(section.title)}">'
            f"<h2>{html.escape(section.title)}</h2>{chart}{_table(section)}</section>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>One shared truth for marketing and sales · "
        f"definitions {html.escape(str(version))} · generated {html.escape(generated_at)}</p></header>"
        f"<main>{''.join(blocks)}</main></body></html>"
    )
