"""`leadflow demo`: the best end-to-end job so far, on the embedded stack."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from leadflow.cli import app, build_settings
from leadflow.commands.db import backend_for
from leadflow.kafka_admin import create_topics
from leadflow.producer import produce_file
from leadflow.stack import EmbeddedStack
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.report import collect, render_html
from sinks.clickhouse.writer import load_replay_output
from streams.core.lifecycle import FUNNEL
from streams.definitions_file import load_definitions
from streams.generate import generate
from streams.replay import replay_file, summary

# The demo's data (the packaged weekly MQL targets are calibrated on it)
DEMO_LEADS, DEMO_DAYS, DEMO_SEED = 2000, 90, 42
DEMO_START, DEMO_BAD_FRACTION = date(2026, 1, 5), 0.005


@app.command()
def demo(
    leads: int = typer.Option(DEMO_LEADS, "--leads", min=1, help="Leads to generate"),
    days: int = typer.Option(DEMO_DAYS, "--days", min=1, help="Days of history"),
    seed: int = typer.Option(DEMO_SEED, "--seed"),
) -> None:
    """Start the stack, generate events, publish them to Kafka, replay them through the core,
    load the results into ClickHouse and write the HTML report."""
    settings = build_settings()
    console = Console()
    took = EmbeddedStack(settings, log=lambda m: console.print(f"[dim]{m}[/dim]")).up()
    console.print(
        f"stack up ({took:.1f} s): kafka {settings.bootstrap}, clickhouse :{settings.clickhouse_port}"
    )
    create_topics(settings.bootstrap, settings.partitions)
    defs = load_definitions(settings.definitions)
    work = settings.state_dir / "demo"
    work.mkdir(parents=True, exist_ok=True)
    events = work / "events.jsonl"
    with open(events, "wb") as out:
        stats = generate(
            defs,
            out,
            leads=leads,
            days=days,
            seed=seed,
            start=DEMO_START,
            bad_fraction=DEMO_BAD_FRACTION,
        )
    console.print(f"generated {stats.lines:,} lines for {leads:,} leads → {events}")
    report = asyncio.run(produce_file(events, settings.bootstrap, "avro"))
    console.print(
        f"published {report.sent:,} events to Kafka (Avro), rejected {len(report.rejected):,} bad lines"
    )
    replay_stats = replay_file(events, work / "out", defs)
    console.print(f"replayed: {summary(replay_stats)}")
    _show_kpis(work / "out", defs.version, console)
    backend = backend_for(settings)
    migrate(backend)
    counts = load_replay_output(backend, work / "out", events)
    console.print(
        f"loaded {sum(counts.values()):,} rows into ClickHouse database {settings.clickhouse_database}"
    )
    page = work / "report.html"
    page.write_text(
        render_html(collect(backend), generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    )
    console.print(f"HTML report (open in a browser, no network needed): {page}")


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _show_kpis(out: Path, version: str, console: Console) -> None:
    reached: dict[str, set[object]] = defaultdict(set)
    for row in _rows(out / "transitions.jsonl"):
        for stage in [row["to_stage"], *row["skipped_stages"]]:  # type: ignore[list-item]
            reached[str(stage)].add(row["lead_id"])
    funnel = Table(
        "stage", "leads", "conversion from previous", title=f"Funnel (definitions {version})"
    )
    previous = None
    for stage in FUNNEL:
        count = len(reached[stage])
        rate = f"{count / previous:.0%}" if previous else ""
        funnel.add_row(stage, f"{count:,}", rate)
        previous = count or None
    console.print(funnel)
    sla = Counter((str(r["policy"]), str(r["status"])) for r in _rows(out / "sla.jsonl"))
    table = Table("SLA policy", "met", "breached", "open", "compliance", title="SLA compliance")
    for policy in sorted({p for p, _ in sla}):
        met, breached = sla[(policy, "met")], sla[(policy, "breached")]
        done = met + breached
        table.add_row(
            policy,
            str(met),
            str(breached),
            str(sla[(policy, "open")]),
            f"{met / done:.0%}" if done else "-",
        )
    console.print(table)
    revenue: Counter[str] = Counter()
    for row in _rows(out / "attribution.jsonl"):
        if row["model"] == "w_shaped" and row["trigger"] == "deal_won" and row["currency"] == "EUR":
            revenue[str(row["channel"])] += int(row["credit_minor"])  # type: ignore[call-overload]
    channels = Table("channel", "won revenue (EUR, W-shaped)", title="Attribution")
    for channel, minor in revenue.most_common():
        channels.add_row(channel, f"{minor / 100:,.2f}")
    console.print(channels)
    console.print(f"results in {out}")
