"""Arrival-order drill: one generated stream replayed in many arrival orders; prints the verdict.

    python bench/order_drill.py [--leads 3000] [--days 90] [--seed 1201] [--orders 6]

Each order keeps every topic's own order and interleaves the topics (fine skew, runs of 50,
whole-topic catch-up reads), with a fifth of the CRM activities delayed; every order must leave
the same final transitions, SLA outcomes, credits, weekly targets and lead states as file order.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from datetime import date

from streams.definitions_file import load_definitions
from streams.generate import generate
from streams.interleave import by_topic, delayed, differences, interleave, replay_lines, truth


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=3000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1201)
    parser.add_argument("--orders", type=int, default=6)
    args = parser.parse_args()
    defs = load_definitions()
    out = io.BytesIO()
    generate(defs, out, args.leads, args.days, args.seed, date(2026, 1, 5))
    lines = out.getvalue().splitlines()
    first = replay_lines(lines, defs, None)
    want = truth(replay_lines(lines, defs, first.clock))
    print(f"{len(lines):,} events; facts: " + ", ".join(f"{k} {len(v):,}" for k, v in want.items()))
    rng = random.Random(args.seed)
    topics = by_topic(lines)
    failed = 0
    for i in range(args.orders):
        stretch = (1, 50, 5000)[i % 3]
        order = delayed(interleave(topics, rng, stretch), rng, 0.2, by=400)
        started = time.perf_counter()
        got = truth(replay_lines(order, defs, first.clock))
        diff = differences(want, got)
        failed += bool(diff)
        took = time.perf_counter() - started
        print(f"order {i} (runs ≤ {stretch}): {diff or 'identical'}  ({took:.1f} s)")
    print(
        "VERDICT:",
        "FAIL" if failed else "PASS",
        f"({args.orders - failed}/{args.orders} identical)",
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
