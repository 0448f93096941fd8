"""Leads' next SLA deadlines, soonest first: the timer index both drivers (replay, worker) keep."""

from __future__ import annotations

import heapq
from datetime import datetime


class Deadlines:
    """A heap of (deadline, lead_id) with lazy deletion: one live deadline per lead."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str]] = []
        self._due: dict[str, datetime] = {}

    def __contains__(self, lead_id: str) -> bool:
        return lead_id in self._due

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, lead_id: str, due: datetime | None) -> None:
        """Set (or, with None, clear) the lead's next deadline."""
        if due is None:
            self._due.pop(lead_id, None)
            return
        if self._due.get(lead_id) == due:
            return
        self._due[lead_id] = due
        heapq.heappush(self._heap, (due, lead_id))

    def next_due(self) -> datetime | None:
        """The soonest live deadline (stale heap entries are dropped on the way)."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: datetime) -> list[str]:
        """The leads whose deadline is at or before `now`, soonest first; they are unscheduled."""
        due_leads = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, lead_id = heapq.heappop(heap)
            if self._due.get(lead_id) == due:
                del self._due[lead_id]
                due_leads.append(lead_id)
        return due_leads
