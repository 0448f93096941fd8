"""A realistic, reproducible B2B event stream (JSON Lines, DESIGN.md §5) for demo, tests, bench.

Each lead lives a journey: touches (some anonymous, identified later), creation, scoring to MQL,
first sales touch (sometimes slow, so SLAs breach; sometimes synced late from the CRM, so a
breach is corrected), acceptance or rejection (recycled leads may come back), qualification,
opportunity, won or lost. Business times use the teams' calendars from the definitions. Lines
are written in arrival order; the same seed gives byte-identical output.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

import orjson

from streams.core.definitions import Definitions
from streams.core.scoring import fit_points

# Journey probabilities chosen to land inside realistic funnel bands (FUNNEL_BANDS).
P_MQL = 0.18  # inquiry → MQL 10–25 %
P_ACCEPT = 0.5  # MQL → SAL 40–60 %
P_QUALIFY = 0.6  # SAL → SQL 50–70 %
P_OPPORTUNITY = 0.65  # SQL → opportunity 50–80 %
P_WIN = 0.3  # opportunity → won 20–40 %
P_SLOW_REP = 0.2
P_LATE_SYNC = 0.06
P_ANONYMOUS = 0.3
P_DUPLICATE = 0.01
P_MERGE = 0.01
P_ERASE = 0.002
P_RECYCLE_RETURN = 0.35  # a recycled lead re-engages later (re-MQL: 20–45 % of them)
P_RETURN_BY_HAND_RAISER = 0.5  # else slowly, touch by touch, after the cool-off

# What realistic means here: the bands the generator's test measures on a replayed stream
# (share of the leads that reached the first stage that also reached the second).
FUNNEL_BANDS: dict[tuple[str, str], tuple[float, float]] = {
    ("inquiry", "mql"): (0.10, 0.25),
    ("mql", "sal"): (0.40, 0.60),
    ("sal", "sql"): (0.50, 0.70),
    ("sql", "opportunity"): (0.50, 0.80),
    ("opportunity", "customer"): (0.20, 0.40),
    ("recycled", "re-mql"): (0.20, 0.45),
}

CHANNELS = (
    ("paid_search", 0.22),
    ("paid_social", 0.14),
    ("email", 0.18),
    ("organic_search", 0.16),
    ("webinar", 0.08),
    ("events", 0.05),
    ("referral", 0.06),
    ("partner", 0.04),
    ("content", 0.05),
    ("direct", 0.02),
)
# Campaign ids carry the year (and quarter) they run in: a touch gets one of its channel's
# campaigns running at its date (UTC), so `cmp-2026-q2-…` touches all fall in 2026 Q2.
CAMPAIGNS = {
    "paid_search": ("cmp-{year}-q{quarter}-search-brand", "cmp-{year}-q{quarter}-search-generic"),
    "paid_social": (
        "cmp-{year}-q{quarter}-linkedin-abm",
        "cmp-{year}-q{quarter}-linkedin-retarget",
    ),
    "email": ("cmp-{year}-nurture-main", "cmp-{year}-q{quarter}-newsletter"),
    "webinar": ("cmp-{year}-q{quarter}-webinar-ai", "cmp-{year}-q{quarter}-webinar-data"),
    "events": ("cmp-{year}-saastr", "cmp-{year}-dmexco"),
    "partner": ("cmp-{year}-partner-aws",),
    "content": ("cmp-{year}-ebook-benchmark",),
}


def campaign_at(template: str, at: datetime) -> str:
    """The id of a campaign template running at `at` (its UTC year and quarter)."""
    utc = at.astimezone(UTC)
    return template.format(year=utc.year, quarter=(utc.month - 1) // 3 + 1)


TOUCHES_BY_CHANNEL = {
    "paid_search": ("ad_click", "page_view"),
    "paid_social": ("ad_click", "page_view"),
    "display": ("ad_click",),
    "email": ("email_open", "email_click"),
    "organic_search": ("page_view", "content_download"),
    "webinar": ("webinar_registered", "webinar_attended"),
    "events": ("event_attended",),
    "referral": ("page_view", "form_submit"),
    "partner": ("form_submit", "page_view"),
    "content": ("content_download", "page_view"),
    "direct": ("page_view",),
}
INDUSTRIES = (
    "software",
    "fintech",
    "ecommerce",
    "manufacturing",
    "healthcare",
    "education",
    "retail",
)
TITLES = (
    "Head of Marketing",
    "Director of Sales",
    "VP Engineering",
    "Data Analyst",
    "Student",
    "CTO",
    "Ops Manager",
)
COUNTRIES = {
    "emea": ("DE", "AT", "CH", "NL", "FR", "GB", "PL", "ES"),
    "amer": ("US", "CA", "BR", "MX"),
}
RECYCLE = ("bad_timing", "no_budget", "no_authority")
DISQUALIFY = (
    "not_a_fit",
    "no_need",
    "duplicate",
    "invalid_contact",
    "competitor",
    "student",
    "other",
)
LOST = ("price", "competitor", "no_decision", "timing")
BAD_KINDS = (
    "not_json",
    "truncated",
    "unknown_type",
    "missing_field",
    "wrong_type",
    "bad_time",
    "oversized",
    "future_field",
)


@dataclass
class GeneratorStats:
    """What was written."""

    events: int = 0
    leads: int = 0
    lines: int = 0
    bad_lines: int = 0
    duplicates: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class _Journey:
    """Builds the events of one lead; events are (arrival, seq, dict)."""

    def __init__(self, gen: Generator, lead_no: int) -> None:
        self.gen = gen
        self.rng = gen.rng
        self.lead_id = f"lead-{lead_no:07d}"
        self.team = "emea" if self.rng.random() < 0.45 else "amer"
        self.calendar = gen.defs.teams[self.team].calendar
        self.tz = self.calendar.tz
        self.reps = gen.reps[self.team]
        self.owner = self.rng.choice(self.reps)

    def local(self, at: datetime) -> str:
        return at.astimezone(self.tz).isoformat()

    def add(self, occurred: datetime, obj: dict[str, Any], arrival: datetime | None = None) -> None:
        self.gen.emit(arrival or occurred, obj)

    def business(self, start: datetime, hours: float) -> datetime:
        return self.calendar.add(start, int(hours * 3600))

    def touch(
        self, at: datetime, channel: str, kind: str | None = None, anonymous: str | None = None
    ) -> None:
        rng = self.rng
        kind = kind or rng.choice(TOUCHES_BY_CHANNEL.get(channel, ("page_view",)))
        campaigns = CAMPAIGNS.get(channel)
        obj: dict[str, Any] = {
            "event_id": self.gen.next_id("tch"),
            "event_type": "touch",
            "occurred_at": at.astimezone(UTC).isoformat(),
            "source": "marketing_automation" if channel == "email" else "web",
            "touch_type": kind,
            "channel": channel,
            "campaign_id": campaign_at(rng.choice(campaigns), at) if campaigns else None,
        }
        if anonymous:
            obj["anonymous_id"] = anonymous
        else:
            obj["lead_id"] = self.lead_id
        self.add(at, obj)

    def sales(
        self, at: datetime, event_type: str, arrival: datetime | None = None, **extra: Any
    ) -> None:
        obj = {
            "event_id": self.gen.next_id("crm"),
            "event_type": event_type,
            "occurred_at": self.local(at),
            "source": "salesforce",
            "lead_id": self.lead_id,
            **extra,
        }
        self.add(at, obj, arrival)

    def attributes(self, low_fit: bool) -> dict[str, Any]:
        rng = self.rng
        employees = (
            rng.choice((20, 50, 120, 180)) if low_fit else rng.choice((50, 250, 800, 1500, 5000))
        )
        title = (
            rng.choice(("Data Analyst", "Ops Manager", "Student"))
            if low_fit
            else rng.choice(TITLES)
        )
        return {
            "employees": employees,
            "industry": rng.choice(INDUSTRIES[4:] if low_fit else INDUSTRIES),
            "country": rng.choice(COUNTRIES[self.team]),
            "title": title,
            "email": f"{self.lead_id}@example.com",
        }

    def run(self, start: datetime) -> None:
        rng = self.rng
        channel = self.gen.channel()
        created = self.business(start, rng.uniform(0, 40))
        anonymous = f"anon-{self.lead_id[5:]}" if rng.random() < P_ANONYMOUS else None
        for back in sorted(rng.uniform(0.5, 20) for _ in range(rng.randint(1, 3))):
            self.touch(
                created - timedelta(days=back),
                channel if rng.random() < 0.7 else self.gen.channel(),
                anonymous=anonymous,
            )
        mql = rng.random() < P_MQL
        self.sales_free_create(created, mql, anonymous)
        if not mql:
            for _ in range(rng.randint(2, 10)):
                self.touch(
                    created + timedelta(hours=rng.uniform(1, 24 * 60)), "email", "email_open"
                )
            for _ in range(rng.randint(0, 4)):
                self.touch(
                    created + timedelta(hours=rng.uniform(1, 24 * 60)),
                    "organic_search",
                    "page_view",
                )
            return
        mql_at = created + timedelta(hours=rng.uniform(2, 24 * 14))
        # before raising a hand: a few low-point touches over the channels (opens, views, clicks)
        for _ in range(rng.randint(1, 5)):
            at = created + (mql_at - created) * rng.random()
            channel = self.gen.channel()
            kind = "email_open" if channel == "email" else "page_view"
            if channel in ("paid_search", "paid_social"):
                kind = "ad_click"
            self.touch(at, channel, kind)
        self.touch(mql_at, self.gen.channel(), rng.choice(("demo_request", "chat_started")))
        self.sales_journey(mql_at, episode=1)

    def sales_free_create(self, created: datetime, mql: bool, anonymous: str | None) -> None:
        self.fit_attributes = self.attributes(low_fit=not mql)
        obj = {
            "event_id": self.gen.next_id("lc"),
            "event_type": "lead_created",
            "occurred_at": self.local(created),
            "source": self.rng.choice(("hubspot", "web_form", "marketo")),
            "lead_id": self.lead_id,
            "owner_id": self.owner,
            "team_id": self.team,
            "attributes": self.fit_attributes,
        }
        self.add(created, obj)
        if anonymous:
            self.add(
                created + timedelta(seconds=30),
                {
                    "event_id": self.gen.next_id("id"),
                    "event_type": "lead_identified",
                    "occurred_at": (created + timedelta(seconds=30)).isoformat(),
                    "source": "web",
                    "anonymous_id": anonymous,
                    "lead_id": self.lead_id,
                },
            )
        if self.rng.random() < 0.1:
            other = self.rng.choice(self.reps)
            at = created + timedelta(hours=self.rng.uniform(1, 48))
            self.sales(at, "owner_assigned", owner_id=other, team_id=self.team)
            self.owner = other

    def sales_journey(self, mql_at: datetime, episode: int) -> None:
        rng = self.rng
        slow = rng.random() < P_SLOW_REP
        first_call = self.business(mql_at, rng.uniform(5, 20) if slow else rng.uniform(0.2, 3.5))
        arrival = None
        if not slow and rng.random() < P_LATE_SYNC:
            arrival = first_call + timedelta(days=rng.uniform(1.5, 4))
        self.sales(
            first_call,
            "activity",
            arrival,
            activity_type="call",
            rep_id=self.owner,
            outcome=rng.choice(("connected", "voicemail", None)),
        )
        decided = self.business(first_call, rng.uniform(1, 30 if slow else 12))
        if rng.random() >= P_ACCEPT:
            recycle = rng.random() < 0.45
            reason = rng.choice(RECYCLE if recycle else DISQUALIFY)
            self.sales(decided, "lead_rejected", rep_id=self.owner, reason=reason, note=None)
            if recycle:
                self.recycled(decided, episode)
            return
        self.sales(decided, "lead_accepted", rep_id=self.owner)
        for _ in range(rng.randint(1, 4)):
            self.sales(
                decided + timedelta(hours=rng.uniform(2, 24 * 10)),
                "activity",
                activity_type=rng.choice(("email", "meeting", "call", "linkedin_message")),
                rep_id=self.owner,
                outcome=None,
            )
        qualified = self.business(decided, rng.uniform(4, 60))
        if rng.random() >= P_QUALIFY:
            reason = rng.choice(("no_need", "not_a_fit", "bad_timing", "competitor"))
            self.sales(
                qualified, "lead_rejected", rep_id=self.owner, reason=reason, note="after discovery"
            )
            if reason in RECYCLE:
                self.recycled(qualified, episode)
            return
        self.sales(qualified, "lead_qualified", rep_id=self.owner)
        if rng.random() >= P_OPPORTUNITY:
            # discovery calls, then no opportunity: the buyer has no budget, no need, or a rival
            for _ in range(rng.randint(1, 3)):
                self.sales(
                    qualified + timedelta(hours=rng.uniform(2, 24 * 14)),
                    "activity",
                    activity_type=rng.choice(("call", "meeting", "email")),
                    rep_id=self.owner,
                    outcome=None,
                )
            dropped = self.business(qualified, rng.uniform(60, 200))
            reason = rng.choice(("no_budget", "no_authority", "no_need", "competitor"))
            self.sales(
                dropped, "lead_rejected", rep_id=self.owner, reason=reason, note="no opportunity"
            )
            if reason in RECYCLE:
                self.recycled(dropped, episode)
            return
        currency = "EUR" if self.team == "emea" else "USD"
        if self.team == "emea" and rng.random() < 0.15:
            currency = "GBP"
        if rng.random() < 0.02:
            currency = "JPY"
        amount = rng.randrange(5_000, 120_000, 500)
        opp_at = self.business(qualified, rng.uniform(1, 24))
        opp_id = f"opp-{self.lead_id[5:]}-{episode}"
        amount_text = f"{amount * (150 if currency == 'JPY' else 1)}" + (
            "" if currency == "JPY" else ".00"
        )
        self.sales(
            opp_at,
            "opportunity_created",
            opportunity_id=opp_id,
            amount=amount_text,
            currency=currency,
        )
        closed = opp_at + timedelta(days=rng.uniform(14, 120))
        # the buying committee engages during the deal: events, webinars, content, the website
        for _ in range(rng.randint(1, 4)):
            self.touch(opp_at + (closed - opp_at) * rng.uniform(0.05, 0.95), self.gen.channel())
        if rng.random() < P_WIN:
            won = int(amount * rng.uniform(0.85, 1.1))
            won_text = f"{won * (150 if currency == 'JPY' else 1)}" + (
                "" if currency == "JPY" else f".{rng.randrange(0, 100):02d}"
            )
            self.sales(
                closed, "deal_won", opportunity_id=opp_id, amount=won_text, currency=currency
            )
        else:
            self.sales(closed, "deal_lost", opportunity_id=opp_id, reason=rng.choice(LOST))

    def recycled(self, at: datetime, episode: int) -> None:
        """After a recycle: most leads stay in nurture (a few email opens); some come back, by a
        hand-raiser or by re-engaging touch by touch after the cool-off (a new episode)."""
        rng = self.rng
        for _ in range(rng.randint(0, 3)):
            self.touch(at + timedelta(days=rng.uniform(1, 90)), "email", "email_open")
        if episode > 1 or rng.random() >= P_RECYCLE_RETURN:
            return
        if rng.random() < P_RETURN_BY_HAND_RAISER:
            again = at + timedelta(days=rng.uniform(7, 80))
            self.touch(again - timedelta(days=rng.uniform(0.5, 3)), self.gen.channel(), "page_view")
            self.touch(again, self.gen.channel(), rng.choice(("demo_request", "chat_started")))
            self.sales_journey(again, episode + 1)
            return
        scoring = self.gen.defs.scoring
        missing = scoring.mql_threshold - fit_points(self.fit_attributes, scoring)
        cooled = at + timedelta(days=self.gen.defs.recycle_cooldown_days)
        again = cooled + timedelta(days=rng.uniform(1, 40))
        points = 0
        while True:
            channel, kind = rng.choice(_ENGAGING)
            self.touch(again, channel, kind)
            points += scoring.touch_points.get(kind, 0)
            if points >= missing:
                break
            again += timedelta(days=rng.uniform(1, 6), hours=rng.uniform(0, 8))
        self.sales_journey(again, episode + 1)


# touches that re-engage a recycled lead (each worth 8–15 points with the default scoring)
_ENGAGING = (
    ("webinar", "webinar_attended"),
    ("events", "event_attended"),
    ("content", "content_download"),
    ("referral", "form_submit"),
)


class Generator:
    """Produces the whole stream for `leads` leads starting over `days` days from `start`."""

    def __init__(
        self,
        defs: Definitions,
        leads: int,
        days: int,
        seed: int,
        start: date,
        bad_fraction: float = 0.0,
    ) -> None:
        self.defs = defs
        self.rng = random.Random(seed)
        self.leads = leads
        self.days = days
        self.start = datetime(start.year, start.month, start.day, tzinfo=UTC)
        self.bad_fraction = bad_fraction
        self.stats = GeneratorStats()
        self._ids = 0
        self._buffer: list[tuple[datetime, int, bytes]] = []
        self.reps = {
            team: sorted(
                p.id for p in defs.people.values() if p.team_id == team and p.role == "rep"
            )
            or [f"rep-{team}-1"]
            for team in defs.teams
        }
        names = [c for c, _ in CHANNELS]
        weights = [w for _, w in CHANNELS]
        self._channels = self.rng.choices(names, weights, k=4096)
        self._channel_pos = 0

    def channel(self) -> str:
        self._channel_pos = (self._channel_pos + 1) % len(self._channels)
        return self._channels[
            (self._channel_pos * 7 + self.rng.randrange(4096)) % len(self._channels)
        ]

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:09d}"

    def emit(self, arrival: datetime, obj: dict[str, Any]) -> None:
        line = orjson.dumps(obj)
        self._buffer.append((arrival, len(self._buffer), line))
        self.stats.events += 1
        kind = obj["event_type"]
        self.stats.by_type[kind] = self.stats.by_type.get(kind, 0) + 1
        if self.rng.random() < P_DUPLICATE:
            self._buffer.append(
                (arrival + timedelta(minutes=self.rng.uniform(1, 90)), len(self._buffer), line)
            )
            self.stats.duplicates += 1

    def _merges_and_erasures(self, lead_no: int, journey: _Journey, start: datetime) -> None:
        rng = self.rng
        if rng.random() < P_MERGE:
            dup = f"{journey.lead_id}-dup"
            created = start + timedelta(hours=rng.uniform(1, 72))
            self.emit(
                created,
                {
                    "event_id": self.next_id("lc"),
                    "event_type": "lead_created",
                    "occurred_at": created.isoformat(),
                    "source": "web_form",
                    "lead_id": dup,
                    "owner_id": journey.owner,
                    "team_id": journey.team,
                    "attributes": {
                        "email": f"{journey.lead_id}@example.com",
                        "country": COUNTRIES[journey.team][0],
                    },
                },
            )
            self.emit(
                created + timedelta(hours=1),
                {
                    "event_id": self.next_id("tch"),
                    "event_type": "touch",
                    "occurred_at": (created + timedelta(hours=1)).isoformat(),
                    "source": "web",
                    "lead_id": dup,
                    "touch_type": "content_download",
                    "channel": "content",
                    "campaign_id": campaign_at(
                        CAMPAIGNS["content"][0], created + timedelta(hours=1)
                    ),
                },
            )
            merged = created + timedelta(days=rng.uniform(1, 5))
            self.emit(
                merged,
                {
                    "event_id": self.next_id("mrg"),
                    "event_type": "lead_merged",
                    "occurred_at": merged.isoformat(),
                    "source": "salesforce",
                    "lead_id": dup,
                    "survivor_id": journey.lead_id,
                },
            )
        if rng.random() < P_ERASE:
            erased = start + timedelta(days=rng.uniform(30, 90))
            self.emit(
                erased,
                {
                    "event_id": self.next_id("era"),
                    "event_type": "lead_erased",
                    "occurred_at": erased.isoformat(),
                    "source": "privacy_portal",
                    "lead_id": journey.lead_id,
                },
            )

    def lines(self) -> Iterator[bytes]:
        """Every output line, in arrival order (bad lines mixed in at `bad_fraction`)."""
        rng = self.rng
        span = self.days * 86400
        for lead_no in range(1, self.leads + 1):
            start = self.start + timedelta(seconds=rng.uniform(0, span))
            journey = _Journey(self, lead_no)
            journey.run(start)
            self._merges_and_erasures(lead_no, journey, start)
        self.stats.leads = self.leads
        self._buffer.sort(key=lambda item: (item[0], item[1]))
        for _, _, line in self._buffer:
            if self.bad_fraction and rng.random() < self.bad_fraction / (1 - self.bad_fraction):
                self.stats.bad_lines += 1
                self.stats.lines += 1
                yield self._bad_line(line)
            self.stats.lines += 1
            yield line
        self._buffer.clear()

    def _bad_line(self, good: bytes) -> bytes:
        kind = self.rng.choice(BAD_KINDS)
        obj = orjson.loads(good)
        obj["event_id"] = self.next_id("bad")
        if kind == "not_json":
            return b"<html>502 Bad Gateway</html>"
        if kind == "truncated":
            return orjson.dumps(obj)[: len(good) // 2]
        if kind == "unknown_type":
            obj["event_type"] = "lead_teleported"
        elif kind == "missing_field":
            obj.pop("occurred_at")
        elif kind == "wrong_type":
            obj["source"] = 42
        elif kind == "bad_time":
            obj["occurred_at"] = "yesterday at noon"
        elif kind == "oversized":
            obj["note_blob"] = "x" * 70_000
        else:
            obj["sentiment_score"] = 0.93
        return orjson.dumps(obj)


def generate(
    defs: Definitions,
    out: IO[bytes],
    leads: int,
    days: int,
    seed: int,
    start: date,
    bad_fraction: float = 0.0,
) -> GeneratorStats:
    """Write the stream to `out`; returns what was written."""
    gen = Generator(defs, leads, days, seed, start, bad_fraction)
    for line in gen.lines():
        out.write(line)
        out.write(b"\n")
    return gen.stats
