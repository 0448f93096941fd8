"""The domain core imports only the standard library (proved in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "streams" / "core"
FORBIDDEN = (
    "faust",
    "aiokafka",
    "kafka",
    "clickhouse_driver",
    "httpx",
    "fastavro",
    "orjson",
    "mode",
    "yaml",
    "holidays",
)


def test_core_imports_nothing_of_the_io_stack() -> None:
    modules = sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        + "".join(f"import streams.core.{m}\n" for m in modules)
        + f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core pulled in: {out.stdout.strip()}"
    assert len(modules) >= 10
