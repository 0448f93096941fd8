"""`leadflow report --html`: a self-contained page holding every chart with data."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from clickhouse_driver import Client

from leadflow.settings import Settings
from sinks.clickhouse.backend import ChdbBackend
from sinks.clickhouse.report import SECTIONS, collect, render_html

CHARTS = (
    "Funnel",
    "Conversion",
    "SLA compliance",
    "Speed to lead",
    "Attribution by channel and model",
    "Recycled leads",
    "Recycled: back after",
)


def test_html_report_is_self_contained_with_every_chart(chdb_loaded: ChdbBackend) -> None:
    page = render_html(collect(chdb_loaded), generated_at="test")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), (
        "fetches something at view time"
    )
    assert "<script" not in page
    for title, _ in SECTIONS:
        assert f'data-chart="{html.escape(title)}"' in page
    for title in CHARTS:
        block = page.split(f'data-chart="{html.escape(title)}"', 1)[1].split("</section>", 1)[0]
        assert "<svg" in block and block.count("<rect") >= 2, f"{title}: chart without data"
        assert "no data" not in block


def test_report_cli_writes_the_page_from_the_real_server(
    stack: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    database = unique_name("db").replace("-", "_")
    env_cmd = [sys.executable, "-m", "leadflow"]
    out = tmp_path / "report.html"
    result = subprocess.run(
        [*env_cmd, "report", "--html", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **__import__("os").environ,
            "LEADFLOW_CLICKHOUSE_PORT": str(stack.clickhouse_port),
            "LEADFLOW_CLICKHOUSE_DATABASE": database,
        },
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("<!doctype html>")
    Client(host=stack.clickhouse_host, port=stack.clickhouse_port).execute(
        f"DROP DATABASE {database}"
    )
