"""In-flight token accounting and routing-stats parsing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rayfleet.router.core import CacheAwareRouter
from rayfleet.router.load import InflightLoad, kv_events_endpoint, parse_routing_stats
from rayfleet.router.prompt import PromptInput

MakeRouter = Callable[..., CacheAwareRouter]
PROMPT = "z" * 400  # 100 tokens at 4 chars/token; 3 full 128-char blocks (96 tokens)


def routed_load(router: CacheAwareRouter, request_id: str, replica: str, request: PromptInput):
    prepared = router.prepare(request, request_id)
    router.on_routed(request_id, replica, prepared)
    return router.inflight.load(replica)


def test_load_is_uncached_prefill_plus_expected_decode(make_router: MakeRouter) -> None:
    router = make_router(decode_token_weight=1)
    assert routed_load(router, "a", "r0", PromptInput(PROMPT, max_tokens=50)) == 150
    # Same prompt again: 3 blocks (96 tokens) are cached, 4 prompt tokens are not.
    assert routed_load(router, "b", "r0", PromptInput(PROMPT, max_tokens=50)) == 150 + 54
    # Elsewhere nothing is cached.
    assert routed_load(router, "c", "r1", PromptInput(PROMPT, max_tokens=50)) == 150


def test_decode_tokens_use_default_cap_and_weight(make_router: MakeRouter) -> None:
    router = make_router(default_decode_tokens=20, decode_tokens_cap=300, decode_token_weight=2)
    assert routed_load(router, "a", "r0", PromptInput(PROMPT)) == 100 + 2 * 20
    assert routed_load(router, "b", "r1", PromptInput(PROMPT, max_tokens=5000)) == 100 + 2 * 300


def test_completion_releases_exactly_what_was_counted(make_router: MakeRouter) -> None:
    router = make_router(decode_token_weight=3)
    routed_load(router, "a", "r0", PromptInput(PROMPT, max_tokens=50))
    routed_load(router, "b", "r0", PromptInput("y" * 40, max_tokens=10))
    router.on_completed("a", "r0")
    assert router.inflight.load("r0") == 10 + 3 * 10
    router.on_completed("a", "r0")  # twice: no effect
    router.on_completed("b", "r1")  # a rejected attempt elsewhere: no effect
    assert router.inflight.load("r0") == 10 + 3 * 10
    router.on_completed("b", "r0")
    assert router.inflight.load("r0") == 0
    assert router.inflight.inflight_requests() == 0


def test_removed_replicas_drop_their_load(make_router: MakeRouter) -> None:
    router = make_router()
    routed_load(router, "a", "r2", PromptInput(PROMPT))
    router.sync_replicas({"r0": None, "r1": None})
    assert set(router.inflight.loads) == {"r0", "r1"}
    assert router.inflight.inflight_requests() == 0
    assert router.approx.replica_blocks("r2") == 0


def test_rerouting_a_request_replaces_its_load() -> None:
    load = InflightLoad()
    load.on_routed("a", "r0", 100)
    load.on_routed("a", "r0", 40)
    assert load.load("r0") == 40
    assert load.on_completed("a", "r0")
    assert not load.on_completed("a", "r0")


def test_routing_stats_parse_the_load_keys() -> None:
    stats = parse_routing_stats(
        {"num_running": 3, "num_waiting": 1, "kv_cache_usage": 0.5, "reported_at": 10.0}, 99.0
    )
    assert stats is not None
    assert (stats.num_running, stats.num_waiting, stats.kv_cache_usage) == (3, 1, 0.5)
    assert stats.age(12.5) == pytest.approx(2.5)
    received = parse_routing_stats({"num_waiting": 2}, 99.0)
    assert received is not None and received.reported_at == 99.0
    assert parse_routing_stats({"kv_event_metadata": {}}, 1.0) is None
    assert parse_routing_stats(None, 1.0) is None


def test_kv_event_endpoint_comes_from_serve_llm_metadata() -> None:
    raw = {"kv_event_metadata": {"endpoint": "tcp://10.0.0.1:5557", "block_size": 128}}
    assert kv_events_endpoint(raw) == ("tcp://10.0.0.1:5557", 128)
    assert kv_events_endpoint({"num_waiting": 1}) is None
    assert kv_events_endpoint({"kv_event_metadata": {"endpoint": ""}}) is None


def test_removing_a_replica_mid_candidates_is_safe(make_router: MakeRouter) -> None:
    router = make_router()
    candidates = ("r0", "r1", "r2")
    router.choose(candidates, router.prepare(PromptInput(PROMPT), "a"))
    router.remove_replica("r1")
    assert router.choose(candidates, router.prepare(PromptInput(PROMPT), "b")).chosen


def test_the_core_imports_no_ray() -> None:
    import subprocess
    import sys

    probe = "import sys, rayfleet.router.core; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
