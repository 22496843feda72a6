"""The engine loop as an asyncio task: each step sleeps its simulated time / time_scale.

Simulated time is read off the wall clock, ``sim = (wall - start) × time_scale``, and a
step ends at the wall time of its simulated end. If the event loop falls behind (a busy
host), the next step simply starts later, so the simulated engine stays slower than
real, never faster.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, Callable, Sequence

from rayfleet.bench.sim.blocks import BlockHash
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest, StepPlan, TokenEvent
from rayfleet.bench.sim.params import SimParams

log = logging.getLogger(__name__)

# Called after every step with the plan and its events (metrics hook).
StepHook = Callable[[StepPlan, list[TokenEvent]], None]


class AsyncSimEngine:
    def __init__(
        self,
        params: SimParams,
        output_vocab: Sequence[int] | None = None,
        on_step: StepHook | None = None,
    ) -> None:
        self.params = params
        self.core = SimEngineCore(params, output_vocab)
        self.on_step = on_step
        self._streams: dict[SimRequest, asyncio.Queue[TokenEvent | Exception]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wall_start = 0.0
        self._ids = itertools.count()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._wall_start = loop.time()
        self._task = loop.create_task(self._run(), name="sim-engine-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Collects the cancellation, or the error a failed loop already ended with.
            await asyncio.gather(self._task, return_exceptions=True)

    def close(self) -> None:
        """Stop the loop without waiting (from synchronous code)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def check_health(self) -> None:
        """Raise if the engine loop is not running."""
        if self._task is None:
            raise RuntimeError("the simulated engine was not started")
        if self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            raise RuntimeError(f"the simulated engine loop stopped: {error!r}")

    def now(self) -> float:
        """Simulated seconds since start."""
        return (asyncio.get_running_loop().time() - self._wall_start) * self.params.time_scale

    # --- requests ----------------------------------------------------------------------

    async def generate(
        self,
        prompt_token_ids: Sequence[int],
        max_tokens: int,
        request_id: str | None = None,
        import_hashes: Sequence[BlockHash] = (),
    ) -> AsyncGenerator[TokenEvent, None]:
        """Token events of one request; raises ValueError if the engine cannot serve it.

        Closing the iterator early aborts the request, freeing its blocks.
        """
        self.check_health()
        request = SimRequest(
            request_id or f"sim-{next(self._ids)}",
            prompt_token_ids,
            max_tokens,
            arrival_s=self.now(),
            import_hashes=import_hashes,
        )
        self.core.add(request)
        queue: asyncio.Queue[TokenEvent | Exception] = asyncio.Queue()
        self._streams[request] = queue
        self._wake.set()
        try:
            while True:
                event = await queue.get()
                if isinstance(event, Exception):
                    raise RuntimeError("the simulated engine failed") from event
                yield event
                if event.finished:
                    return
        finally:
            self._streams.pop(request, None)
            if not request.finished:
                self.core.abort(request)

    # --- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._steps()
        except Exception as error:  # a bug: fail the waiting streams rather than hang them
            log.exception("the simulated engine loop failed")
            for queue in self._streams.values():
                queue.put_nowait(error)
            raise

    async def _steps(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            plan = self.core.begin_step(self.now())
            if plan is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            wall_end = self._wall_start + plan.end_s / self.params.time_scale
            await asyncio.sleep(max(0.0, wall_end - loop.time()))
            events = self.core.finish_step(plan)
            for event in events:
                queue = self._streams.get(event.request)
                if queue is not None:
                    queue.put_nowait(event)
            self._after_step(plan, events)

    def _after_step(self, plan: StepPlan, events: list[TokenEvent]) -> None:
        if self.on_step is None:
            return
        try:
            self.on_step(plan, events)
        except Exception:  # observing the engine must never stop it
            log.warning("sim step hook failed", exc_info=True)
