"""Run simulated engines in virtual time: no sleeping, the clock jumps from event to event.

Fast and exactly reproducible: tests, calibration checks, the arenas and offline
what-ifs use it. ``VirtualFleet`` is the one loop: each engine runs one step at a time,
a step's end is an event, and requests that arrive during a step join the next one, as
in the asyncio driver.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence

from rayfleet.bench.sim.engine import SimEngineCore, SimRequest, StepPlan, TokenEvent

# (engine index, the finished step, its token events)
StepHook = Callable[[int, StepPlan, list[TokenEvent]], None]


class VirtualFleet:
    """Simulated engines stepping independently on one virtual clock."""

    def __init__(self, cores: Sequence[SimEngineCore], on_step: StepHook | None = None) -> None:
        self.cores = list(cores)
        self.on_step = on_step
        self._busy = [False] * len(self.cores)
        self._clock = [0.0] * len(self.cores)  # when each engine's last step ended
        self._steps: list[tuple[float, int, int, StepPlan]] = []
        self._order = itertools.count()

    def add(self, engine: int, request: SimRequest) -> None:
        """Queue a request; it starts with the engine's next step (see ``start``)."""
        self.cores[engine].add(request)

    def start(self, engine: int, now: float) -> None:
        """Begin a step at ``now`` (never before the engine's last step ended) if the
        engine is idle and has work."""
        if self._busy[engine]:
            return
        plan = self.cores[engine].begin_step(max(now, self._clock[engine]))
        if plan is not None:
            self._busy[engine] = True
            heapq.heappush(self._steps, (plan.end_s, next(self._order), engine, plan))

    def submit(self, engine: int, request: SimRequest, now: float) -> None:
        """Queue and start at once: of two requests submitted to an idle engine at the
        same instant, the second joins the next step (``add`` both, then ``start``, to
        batch them)."""
        self.add(engine, request)
        self.start(engine, now)

    def run_until(self, until: float = float("inf")) -> None:
        """Finish every step that ends before ``until``, in time order, starting the next.

        A step ending exactly at ``until`` is left for later, so requests arriving at
        that instant join the step after it, as they would between two steps.
        """
        while self._steps and self._steps[0][0] < until:
            end_s, _, engine, plan = heapq.heappop(self._steps)
            events = self.cores[engine].finish_step(plan)
            self._busy[engine] = False
            self._clock[engine] = end_s
            if self.on_step is not None:
                self.on_step(engine, plan, events)
            self.start(engine, end_s)

    def check_drained(self) -> None:
        """Raise if an engine holds requests it can never run (it would wait forever)."""
        stuck = sum(len(core.waiting) for core in self.cores if core.has_work)
        if stuck:
            raise RuntimeError(f"{stuck} requests can never be admitted")


def run_virtual(core: SimEngineCore, requests: Iterable[SimRequest]) -> list[SimRequest]:
    """Serve ``requests`` (each at its ``arrival_s``) to completion; returns them in order.

    Raises if a request can never be served (the engine would wait forever).
    """
    ordered = sorted(requests, key=lambda r: r.arrival_s)
    fleet = VirtualFleet([core])
    for at, group in itertools.groupby(ordered, key=lambda r: r.arrival_s):
        fleet.run_until(at)
        for request in group:  # simultaneous arrivals share their first step
            fleet.add(0, request)
        fleet.start(0, at)
    fleet.run_until()
    fleet.check_drained()
    return ordered


__all__ = ["VirtualFleet", "run_virtual"]
