"""The Serve adapter on Ray's real RequestRouter base class, with stand-in replicas.

No cluster: the base class only needs replica objects with the RunningReplica surface
it touches, and queue lengths come from its own cache.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

serve_common = pytest.importorskip("ray.serve._private.common")
from ray.serve.request_router import PendingRequest  # noqa: E402

from rayfleet.router.ray_router import RayFleetRouter  # noqa: E402

DEPLOYMENT = serve_common.DeploymentID(name="engine", app_name="app")
PROMPT = "You are a careful assistant. " * 40


class StandInReplica:
    """The attributes and probe RequestRouter uses from a RunningReplica."""

    def __init__(self, name: str, stats: dict[str, Any] | None = None) -> None:
        self.replica_id = serve_common.ReplicaID(unique_id=name, deployment_id=DEPLOYMENT)
        self.routing_stats = stats or {}
        self.max_ongoing_requests = 8
        self.multiplexed_model_ids: set[str] = set()
        self.node_id = "node"
        self.availability_zone = None
        self.is_cross_language = False

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return 0


def pending(request_id: str, body: dict[str, Any], session: str = "") -> Any:
    metadata = serve_common.RequestMetadata(
        request_id=request_id, internal_request_id=request_id, session_id=session
    )
    return PendingRequest(args=[body], kwargs={}, metadata=metadata)


async def make_router(names: tuple[str, ...], **settings: Any) -> RayFleetRouter:
    router = RayFleetRouter(
        deployment_id=DEPLOYMENT,
        handle_source=serve_common.DeploymentHandleSource.UNKNOWN,
        use_replica_queue_len_cache=True,
    )
    router.initialize_state(settings={"policy": "rayfleet", "exploration": 0.0, **settings})
    router.update_replicas([StandInReplica(name) for name in names])
    await asyncio.sleep(0)  # let the base class's queue-length probes run
    return router


def ids(ranks: list[list[Any]]) -> list[list[str]]:
    return [[replica.replica_id.unique_id for replica in rank] for rank in ranks]


async def test_ranks_are_running_replicas_and_cache_affinity_holds() -> None:
    router = await make_router(("a", "b", "c"))
    first = pending("1", {"prompt": PROMPT + "one", "max_tokens": 8})
    ranks = await router.choose_replicas(router._replicas_list, first)
    assert first.routing_context.should_backoff
    chosen = ranks[0][0]
    assert len(ids(ranks)[1]) == 2 and chosen.replica_id.unique_id not in ids(ranks)[1]
    router.on_request_routed(first, chosen.replica_id, None)

    second = pending("2", {"prompt": PROMPT + "two"})
    again = await router.choose_replicas(router._replicas_list, second)
    assert again[0][0] is chosen

    router.on_request_completed(chosen.replica_id, "1")
    assert router._core.inflight.load(chosen.replica_id) == 0


async def test_session_comes_from_request_metadata() -> None:
    router = await make_router(("a", "b", "c"), session_affinity="header")
    first = pending("1", {"prompt": "hello " * 30}, session="s")
    chosen = (await router.choose_replicas(router._replicas_list, first))[0][0]
    router.on_request_routed(first, chosen.replica_id, None)
    other = pending("2", {"prompt": "different " * 30}, session="s")
    assert (await router.choose_replicas(router._replicas_list, other))[0][0] is chosen


async def test_requests_without_a_prompt_are_still_routed() -> None:
    router = await make_router(("a", "b"))
    ranks = await router.choose_replicas(router._replicas_list, pending("1", {"model": "m"}))
    assert ranks and ranks[0]
    assert (await router.choose_replicas(router._replicas_list, None))[0]


async def test_dead_replicas_leave_the_core() -> None:
    router = await make_router(("a", "b"))
    dead = router._replicas_list[0].replica_id
    router.on_replica_actor_died(dead)
    assert dead not in router._core.inflight.loads
    ranks = await router.choose_replicas(router._replicas_list, pending("1", {"prompt": "x"}))
    assert ids(ranks) == [["b"]]
