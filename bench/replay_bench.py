"""Replay benchmark: the JSON-decode floor vs the full replay, side by side, plus memory per lead.

    python bench/replay_bench.py [--leads 80000] [--small-leads 20000] [--seed 1]

Generates the input once (cached under bench/.data/), then runs each measurement in a fresh
interpreter so peak RSS is its own: (a) the floor — read the file and JSON-decode every line,
nothing else; (b) the full replay into a temp dir. Prints events/s of both, their ratio and peak
RSS, and the bytes per lead from two input sizes (the slope of RSS over leads).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

DATA = Path(__file__).with_name(".data")


def _generate(leads: int, seed: int) -> Path:
    path = DATA / f"events-{leads}-{seed}.jsonl"
    if not path.exists():
        from streams.definitions_file import load_definitions
        from streams.generate import generate

        DATA.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            generate(
                load_definitions(),
                out,
                leads=leads,
                days=365,
                seed=seed,
                start=date(2026, 1, 5),
                bad_fraction=0.001,
            )
        tmp.rename(path)
    return path


def _phase_floor(path: Path) -> dict[str, float]:
    import orjson

    started = time.perf_counter()
    events = 0
    with open(path, "rb") as source:
        for line in source:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
            events += 1
    return {"events": events, "seconds": time.perf_counter() - started}


def _phase_replay(path: Path) -> dict[str, float]:
    from streams.definitions_file import load_definitions
    from streams.replay import replay_file

    defs = load_definitions()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        stats = replay_file(path, Path(out), defs)
        seconds = time.perf_counter() - started
    return {"events": stats.events + stats.dead_letters, "leads": stats.leads, "seconds": seconds}


def _peak_rss_mb() -> float:
    # VmHWM restarts at exec; ru_maxrss can carry the parent's peak across fork+exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(phase: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--input", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=80_000)
    parser.add_argument("--small-leads", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phase", choices=["floor", "replay"])
    parser.add_argument("--input", type=Path)
    args = parser.parse_args()
    if args.phase:
        result = _phase_floor(args.input) if args.phase == "floor" else _phase_replay(args.input)
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return
    big = _generate(args.leads, args.seed)
    small = _generate(args.small_leads, args.seed)
    floor = _run("floor", big)
    replay = _run("replay", big)
    replay_small = _run("replay", small)
    floor_rate = floor["events"] / floor["seconds"]
    replay_rate = replay["events"] / replay["seconds"]
    per_lead = (
        (replay["peak_rss_mb"] - replay_small["peak_rss_mb"])
        * 1024
        * 1024
        / (replay["leads"] - replay_small["leads"])
    )
    print(f"input: {big.name}: {replay['events']:,.0f} lines, {replay['leads']:,.0f} leads")
    print(
        f"(a) floor  read + JSON decode : {floor_rate:>10,.0f} events/s   peak RSS {floor['peak_rss_mb']:,.0f} MB"
    )
    print(
        f"(b) full replay               : {replay_rate:>10,.0f} events/s   peak RSS {replay['peak_rss_mb']:,.0f} MB"
    )
    print(f"ratio replay / floor          : {replay_rate / floor_rate:.3f}")
    print(
        f"memory: {replay_small['peak_rss_mb']:,.0f} MB at {replay_small['leads']:,.0f} leads, "
        f"{replay['peak_rss_mb']:,.0f} MB at {replay['leads']:,.0f} leads → {per_lead:,.0f} bytes per lead"
    )


if __name__ == "__main__":
    main()
