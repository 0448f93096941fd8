"""The shared dashboards as code: every panel's SQL, rendered to Grafana JSON under deploy/.

SQL stays in the subset ClickHouse 18.16 and current releases both accept and uses only the
Grafana ClickHouse plugin macros that work on both ($__timeFilter); tests run every panel on the
real server and on chdb. `leadflow dashboards build` rewrites deploy/grafana/dashboards/*.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.core.attribution import MODELS

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "leadflow-clickhouse"}
FUNNEL = "['inquiry', 'mql', 'sal', 'sql', 'opportunity', 'customer']"
_REACHED = (
    "SELECT lead_id, arrayJoin(arrayConcat([to_stage], skipped_stages)) AS stage "
    "FROM transitions_current WHERE $__timeFilter(at)"
)


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel: title, SQL, visualisation, and what a plausible answer looks like."""

    title: str
    sql: str
    kind: str = "table"  # table | barchart | stat
    ratio_columns: tuple[str, ...] = ()  # must lie within [0, 1]
    zero_columns: tuple[str, ...] = ()  # must be 0 (consistency checks)
    description: str = ""


def _rate(num: str, den: str) -> str:
    return f"{num} / greatest({den}, 1)"


# One row per recycled lead: its team, its first recycle and its first return to the funnel
# after it (0: not back), in epoch seconds. A return is any move out of `recycled` into the
# funnel (mostly a re-MQL; a sales event can jump over mql, which then counts as skipped).
_RECYCLED = (
    "SELECT lead_id, any(team_id) AS team_id, "
    "minIf(toUInt32(at), to_stage = 'recycled') AS recycled_s, "
    f"minIf(toUInt32(at), ifNull(from_stage, '') = 'recycled' AND has({FUNNEL}, to_stage)) AS back_s "
    "FROM transitions FINAL WHERE $__timeFilter(at) GROUP BY lead_id "
    "HAVING countIf(to_stage = 'recycled') > 0"
)
_DAYS_BACK = "(back_s - recycled_s) / 86400"

COMPLIANCE = _rate("countIf(status = 'met')", "countIf(status IN ('met', 'breached'))")


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "overview": (
        "leadflow — revenue team overview",
        [
            Panel(
                "Funnel: leads reaching each stage",
                f"SELECT stage, uniqExact(lead_id) AS leads FROM ({_REACHED}) WHERE has({FUNNEL}, stage) "
                f"GROUP BY stage ORDER BY indexOf({FUNNEL}, stage)",
                "barchart",
            ),
            Panel(
                "Conversion between stages",
                "SELECT "
                + ", ".join(
                    f"{_rate(f'uniqExactIf(lead_id, stage = {b!r})', f'uniqExactIf(lead_id, stage = {a!r})')} AS {a}_to_{b}"
                    for a, b in (
                        ("inquiry", "mql"),
                        ("mql", "sal"),
                        ("sal", "sql"),
                        ("sql", "opportunity"),
                        ("opportunity", "customer"),
                    )
                )
                + f" FROM ({_REACHED})",
                ratio_columns=(
                    "inquiry_to_mql",
                    "mql_to_sal",
                    "sal_to_sql",
                    "sql_to_opportunity",
                    "opportunity_to_customer",
                ),
            ),
            Panel(
                "Velocity: MQL → SAL (hours, median and p90)",
                "SELECT quantile(0.5)(hours) AS median_hours, quantile(0.9)(hours) AS p90_hours, count() AS leads "
                "FROM (SELECT lead_id, (minIf(toUInt32(at), to_stage = 'sal') - minIf(toUInt32(at), to_stage = 'mql')) / 3600 AS hours "
                "FROM transitions_current WHERE $__timeFilter(at) GROUP BY lead_id "
                "HAVING countIf(to_stage = 'mql') > 0 AND countIf(to_stage = 'sal') > 0)",
                "stat",
            ),
            Panel(
                "SLA compliance by policy",
                f"SELECT policy, {COMPLIANCE} AS compliance, "
                "countIf(status = 'breached') AS breached, countIf(status = 'met') AS met "
                "FROM sla_current WHERE lead_id IS NOT NULL AND $__timeFilter(started_at) GROUP BY policy ORDER BY policy",
                ratio_columns=("compliance",),
            ),
            Panel(
                "Won revenue by channel (W-shaped)",
                "SELECT channel, currency, sum(credit_minor) / 100 AS revenue FROM attribution_current "
                "WHERE model = 'w_shaped' AND trigger = 'deal_won' AND $__timeFilter(trigger_at) "
                "GROUP BY channel, currency ORDER BY revenue DESC",
                "barchart",
            ),
            Panel(
                "MQLs delivered vs target (marketing's SLA)",
                "SELECT team_id AS team, toDate(started_at) AS week, actual AS mqls, target, status "
                "FROM sla_current WHERE policy = 'mql_weekly_target' AND $__timeFilter(started_at) ORDER BY week, team",
            ),
            Panel(
                "Recycled leads coming back, by team",
                "SELECT ifNull(team_id, '-') AS team, count() AS recycled, "
                "countIf(back_s > 0) AS came_back, "
                f"{_rate('countIf(back_s > 0)', 'count()')} AS recycled_to_mql, "
                # NULL, not nan, for a team none of whose recycled leads came back
                f"if(came_back > 0, quantileIf(0.5)({_DAYS_BACK}, back_s > 0), NULL) AS median_days, "
                f"if(came_back > 0, quantileIf(0.9)({_DAYS_BACK}, back_s > 0), NULL) AS p90_days "
                f"FROM ({_RECYCLED}) GROUP BY team ORDER BY team",
                ratio_columns=("recycled_to_mql",),
                description="Leads sales recycled, how many re-qualified later and after how "
                "many days (a recycle resets engagement; a cool-off lets only a hand-raiser back).",
            ),
            Panel(
                "Recycled leads: days from recycle to return",
                "SELECT multiIf(back_s = 0, 6, back_s - recycled_s < 14 * 86400, 1, "
                "back_s - recycled_s < 30 * 86400, 2, back_s - recycled_s < 60 * 86400, 3, "
                "back_s - recycled_s < 90 * 86400, 4, 5) AS bucket, "
                "multiIf(bucket = 1, '0-13 days', bucket = 2, '14-29 days', bucket = 3, '30-59 days', "
                "bucket = 4, '60-89 days', bucket = 5, '90+ days', 'not back (yet)') AS back_after, "
                f"count() AS leads FROM ({_RECYCLED}) GROUP BY bucket, back_after ORDER BY bucket",
                "barchart",
            ),
            Panel(
                "MQLs per week: first and returning (re-MQL)",
                "SELECT toMonday(at) AS week, ifNull(team_id, '-') AS team, "
                "countIf(episode = 1) AS first_mqls, countIf(episode > 1) AS re_mqls "
                "FROM transitions FINAL WHERE to_stage = 'mql' AND $__timeFilter(at) "
                "GROUP BY week, team ORDER BY week, team",
                description="Every MQL counts toward marketing's weekly target; re-MQLs are "
                "recycled leads that re-engaged.",
            ),
            Panel(
                "Definitions version in use",
                "SELECT definitions_version, count() AS leads FROM lead_state FINAL GROUP BY definitions_version",
                "stat",
            ),
        ],
    ),
    "marketing": (
        "leadflow — marketing",
        [
            Panel(
                "Pipeline by channel and attribution model",
                "SELECT model, channel, sum(credit_minor) / 100 AS pipeline FROM attribution_current "
                "WHERE trigger = 'opportunity_created' AND $__timeFilter(trigger_at) "
                "GROUP BY model, channel ORDER BY model, pipeline DESC",
            ),
            Panel(
                "Revenue by campaign (linear)",
                "SELECT ifNull(campaign_id, '(none)') AS campaign, currency, sum(credit_minor) / 100 AS revenue "
                "FROM attribution_current WHERE model = 'linear' AND trigger = 'deal_won' AND $__timeFilter(trigger_at) "
                "GROUP BY campaign, currency ORDER BY revenue DESC",
                "barchart",
            ),
            Panel(
                "Why sales rejected our leads: reasons by channel and campaign",
                "SELECT ifNull(s.first_channel, '(unknown)') AS channel, ifNull(s.first_campaign_id, '(none)') AS campaign, "
                "ifNull(t.reason, '(none)') AS reason, count() AS rejections "
                "FROM (SELECT lead_id, reason FROM transitions_current "
                "WHERE to_stage IN ('recycled', 'disqualified') AND $__timeFilter(at)) AS t "
                "ANY LEFT JOIN (SELECT lead_id, first_channel, first_campaign_id FROM lead_state FINAL) AS s USING lead_id "
                "GROUP BY channel, campaign, reason ORDER BY rejections DESC",
                description="The feedback loop: rejection reasons per first-touch channel and campaign.",
            ),
        ],
    ),
    "sales": (
        "leadflow — sales",
        [
            Panel(
                "Speed to lead (business hours, MQL → first sales touch) by source",
                "SELECT ifNull(s.source, '(unknown)') AS source, quantile(0.5)(b.seconds) / 3600 AS median_hours, "
                "quantile(0.9)(b.seconds) / 3600 AS p90_hours, count() AS leads "
                "FROM (SELECT assumeNotNull(lead_id) AS lead_id, toFloat64(assumeNotNull(business_seconds)) AS seconds "
                "FROM sla_current WHERE policy = 'mql_first_touch' AND business_seconds IS NOT NULL "
                "AND $__timeFilter(started_at)) AS b "
                "ANY LEFT JOIN (SELECT lead_id, source FROM lead_state FINAL) AS s USING lead_id "
                "GROUP BY source ORDER BY median_hours",
            ),
            Panel(
                "SLA compliance by team and rep",
                f"SELECT ifNull(team_id, '-') AS team, ifNull(owner_id, '-') AS rep, "
                f"{COMPLIANCE} AS compliance, "
                "countIf(status = 'breached') AS breaches FROM sla_current "
                "WHERE lead_id IS NOT NULL AND $__timeFilter(started_at) GROUP BY team, rep ORDER BY compliance",
                ratio_columns=("compliance",),
            ),
            Panel(
                "Open breaches now (oldest first)",
                "SELECT policy, ifNull(owner_id, '-') AS rep, ifNull(escalate_to, '-') AS escalated_to, "
                "assumeNotNull(lead_id) AS lead, assumeNotNull(breached_at) AS breached, "
                "dateDiff('hour', assumeNotNull(breached_at), now()) AS age_hours "
                "FROM sla_current WHERE status = 'breached' AND met_at IS NULL AND lead_id IS NOT NULL "
                "ORDER BY breached, lead, policy LIMIT 100",
            ),
            Panel(
                "Aging of unanswered SLAs",
                "SELECT policy, multiIf(age < 24, 'under 1 day', age < 72, '1-3 days', 'over 3 days') AS age_bucket, "
                "count() AS instances FROM (SELECT policy, dateDiff('hour', due_at, now()) AS age FROM sla_current "
                "WHERE status IN ('open', 'breached') AND met_at IS NULL AND lead_id IS NOT NULL) "
                "GROUP BY policy, age_bucket ORDER BY policy, age_bucket",
            ),
        ],
    ),
    "attribution": (
        "leadflow — attribution",
        [
            Panel(
                "Model comparison: won revenue by channel",
                "SELECT concat(channel, ' · ', currency) AS channel_currency, "
                + ", ".join(f"sumIf(credit_minor, model = '{m}') / 100 AS {m}" for m in MODELS)
                + " FROM attribution_current WHERE trigger = 'deal_won' AND $__timeFilter(trigger_at) "
                "GROUP BY channel_currency ORDER BY linear DESC",
                description="Amounts are in each deal's currency; channels are split by currency.",
            ),
            Panel(
                "Per-deal explain",
                "SELECT opportunity_id, model, ifNull(touch_event_id, 'unattributed') AS touch, channel, "
                "round(weight, 4) AS weight, credit_minor / 100 AS credit, currency FROM attribution_current "
                "WHERE trigger = 'deal_won' AND $__timeFilter(trigger_at) ORDER BY opportunity_id, model, touch LIMIT 500",
                ratio_columns=("weight",),
            ),
            Panel(
                "Check: credits sum exactly to amounts",
                "SELECT count() AS credited_triggers, countIf(total != amount) AS mismatched FROM "
                "(SELECT opportunity_id, trigger, model, sum(credit_minor) AS total, any(amount_minor) AS amount "
                "FROM attribution_current GROUP BY opportunity_id, trigger, model)",
                "stat",
                zero_columns=("mismatched",),
            ),
        ],
    ),
    "data_quality": (
        "leadflow — data quality",
        [
            Panel(
                "Dead letters by reason",
                "SELECT splitByChar(':', reason)[1] AS field, count() AS letters FROM dead_letters FINAL "
                "GROUP BY field ORDER BY letters DESC",
                "barchart",
            ),
            Panel(
                "Dead letters by upstream topic and reason",
                "SELECT ifNull(source_topic, 'replay file') AS source, "
                "splitByChar(':', reason)[1] AS reason_kind, error_class, count() AS letters "
                "FROM dead_letters FINAL GROUP BY source, reason_kind, error_class "
                "ORDER BY letters DESC",
            ),
            Panel(
                "Freshness: newest record per table",
                "SELECT table_name, newest FROM ("
                "SELECT 'transitions' AS table_name, max(at) AS newest FROM transitions "
                "UNION ALL SELECT 'lead_state' AS table_name, max(updated_at) AS newest FROM lead_state "
                "UNION ALL SELECT 'sla' AS table_name, max(at) AS newest FROM sla "
                "UNION ALL SELECT 'attribution' AS table_name, max(trigger_at) AS newest FROM attribution"
                ") ORDER BY table_name",
            ),
        ],
    ),
}


def render(slug: str) -> dict[str, Any]:
    """The Grafana dashboard JSON of one dashboard."""
    title, panels = DASHBOARDS[slug]
    grafana_panels = []
    for index, panel in enumerate(panels):
        grafana_panels.append(
            {
                "id": index + 1,
                "title": panel.title,
                "description": panel.description,
                "type": panel.kind,
                "datasource": DATASOURCE,
                "gridPos": {"h": 9, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 9},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": DATASOURCE,
                        "editorType": "sql",
                        "format": 1,
                        "queryType": "table",
                        "rawSql": panel.sql,
                    }
                ],
            }
        )
    return {
        "uid": f"leadflow-{slug.replace('_', '-')}",
        "title": title,
        "tags": ["leadflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "time": {"from": "now-1y", "to": "now"},
        "panels": grafana_panels,
    }


def build(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """Write every dashboard JSON file; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for slug in DASHBOARDS:
        path = directory / f"{slug}.json"
        path.write_text(json.dumps(render(slug), indent=2) + "\n")
        paths.append(path)
    return paths


def substitute_macros(sql: str, from_s: int, to_s: int) -> str:
    """Expand the plugin macros the way grafana/clickhouse-datasource (pkg/macros) does."""

    def time_filter(match: re.Match[str]) -> str:
        column = match.group(1).strip()
        return f"{column} >= toDateTime({from_s}) AND {column} <= toDateTime({to_s})"

    sql = re.sub(r"\$__timeFilter\(([^)]*)\)", time_filter, sql)
    sql = re.sub(
        r"\$__timeFrom\(([^)]*)\)", lambda m: f"{m.group(1).strip()} >= toDateTime({from_s})", sql
    )
    sql = re.sub(
        r"\$__timeTo\(([^)]*)\)", lambda m: f"{m.group(1).strip()} <= toDateTime({to_s})", sql
    )
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace(
        "$__toTime", f"toDateTime({to_s})"
    )
    return sql.replace("$__interval_s", "3600")


def panels_from_files(directory: Path = DASHBOARD_DIR) -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, raw SQL) of every panel in the committed JSON files."""
    found = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        for panel in data["panels"]:
            for target in panel["targets"]:
                found.append((path.name, panel["title"], target["rawSql"]))
    return found


def panel_checks() -> dict[str, Panel]:
    """Panel definitions by title (plausibility rules for tests)."""
    return {p.title: p for _, panels in DASHBOARDS.values() for p in panels}
