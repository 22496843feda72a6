"""Run simulated engines in virtual time: no sleeping, the clock jumps from event to event.

Fast and exactly reproducible: tests, calibration checks and offline what-ifs use it.
Arrivals that fall inside a step join at the next step, as in the asyncio driver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rayfleet.bench.sim.engine import SimEngineCore, SimRequest


def run_virtual(core: SimEngineCore, requests: Iterable[SimRequest]) -> list[SimRequest]:
    """Serve ``requests`` (each at its ``arrival_s``) to completion; returns them in order.

    Raises if a request can never be served (the engine would wait forever).
    """
    ordered = sorted(requests, key=lambda r: r.arrival_s)
    pending = deque(ordered)
    now = 0.0
    while pending or core.has_work:
        while pending and pending[0].arrival_s <= now:
            core.add(pending.popleft())
        plan = core.begin_step(now)
        if plan is not None:
            core.finish_step(plan)
            now = plan.end_s
        elif pending:
            now = max(now, pending[0].arrival_s)
        else:
            raise RuntimeError(f"{len(core.waiting)} requests can never be admitted")
    return ordered
