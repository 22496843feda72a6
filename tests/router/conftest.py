from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rayfleet.platform.spec import Router
from rayfleet.router.core import CacheAwareRouter
from rayfleet.router.metrics import MemoryMetrics
from rayfleet.router.prompt import PromptInput

REPLICAS = ("r0", "r1", "r2")


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MakeRouter = Callable[..., CacheAwareRouter]
Route = Callable[[CacheAwareRouter, str, PromptInput], str]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_router(clock: Clock) -> MakeRouter:
    """A core on a fake clock with small (128-char) blocks and no exploration by default."""

    def make(replicas: tuple[str, ...] = REPLICAS, **overrides: Any) -> CacheAwareRouter:
        base: dict[str, Any] = {"policy": "rayfleet", "block_chars": 128, "exploration": 0.0}
        settings = Router(**{**base, **overrides})
        router = CacheAwareRouter(settings, metrics=MemoryMetrics(), clock=clock)
        router.sync_replicas({replica: None for replica in replicas})
        return router

    return make


@pytest.fixture
def route() -> Route:
    """Prepare, choose among all known replicas and record one request; returns the pick."""

    def route_one(router: CacheAwareRouter, request_id: str, request: PromptInput) -> str:
        prepared = router.prepare(request, request_id)
        chosen = router.choose(tuple(router.inflight.loads), prepared).chosen
        assert chosen is not None
        router.on_routed(request_id, chosen)
        return str(chosen)

    return route_one
