"""The "sticky until saturated" policy, driven through the core on a fake clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from rayfleet.router.core import CacheAwareRouter
from rayfleet.router.metrics import MemoryMetrics
from rayfleet.router.policy import STEP_TOKENS
from rayfleet.router.prompt import PromptInput

# Fixtures from conftest.py (not imported: conftest modules are not importable by name).
MakeRouter = Callable[..., CacheAwareRouter]
Route = Callable[[CacheAwareRouter, str, PromptInput], str]
Clock = Any

SHARED = "You are a careful assistant. " * 40  # 1,160 chars: 9 blocks of 128


def ask(question: str, max_tokens: int | None = None, session: str | None = None) -> PromptInput:
    return PromptInput(text=SHARED + question, max_tokens=max_tokens, session=session)


def test_sticks_to_the_replica_holding_the_prefix(make_router: MakeRouter, route: Route) -> None:
    router = make_router()
    first = route(router, "a", ask("first question"))
    prepared = router.prepare(ask("second question"), "b")
    decision = router.choose(("r0", "r1", "r2"), prepared)
    assert (decision.chosen, decision.reason) == (first, "cache_hit")
    assert decision.matched_blocks == 9
    assert decision.matched_tokens == 9 * 32  # 128 chars at 4 chars per token


def test_spills_a_hot_prefix_once_its_backlog_outweighs_a_cold_prefill(
    make_router: MakeRouter, route: Route
) -> None:
    router = make_router(decode_token_weight=1)
    sticky = route(router, "a", ask("q1"))
    others = [r for r in ("r0", "r1", "r2") if r != sticky]
    # A backlog (load beyond one step's tokens) below 4 × the 288 cached tokens: stay.
    router.inflight.on_routed("busy", sticky, STEP_TOKENS + 500.0)
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b"))
    assert (decision.chosen, decision.reason) == (sticky, "cache_hit")

    router.inflight.on_routed("busy", sticky, STEP_TOKENS + 2000.0)  # now > 4 × 288
    router.inflight.on_routed("other", others[0], 100.0)
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q3"), "c"))
    assert (decision.chosen, decision.reason) == (others[1], "spill")
    router.on_routed("c", others[1])

    # The prefix now lives on two replicas: the less loaded holder wins.
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q4"), "d"))
    assert (decision.chosen, decision.reason) == (others[1], "cache_hit")


def test_returns_once_the_sticky_replica_drains(make_router: MakeRouter, route: Route) -> None:
    router = make_router()
    sticky = route(router, "a", ask("q1"))
    router.inflight.on_routed("busy", sticky, 10_000.0)
    assert router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b")).chosen != sticky
    router.on_completed("busy", sticky)
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b"))
    assert (decision.chosen, decision.reason) == (sticky, "cache_hit")


def test_router_load_proxies_do_not_cap_a_holder(make_router: MakeRouter, route: Route) -> None:
    # Queue length and token load past their thresholds: still cheaper than a cold prefill.
    router = make_router(saturation_tokens=100)
    sticky = route(router, "a", ask("q1"))
    full_queue = {sticky: 16}.get
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b"), full_queue)
    assert (decision.chosen, decision.reason) == (sticky, "cache_hit")


def test_only_a_full_kv_cache_rules_a_holder_out(
    make_router: MakeRouter, route: Route, clock: Clock
) -> None:
    router = make_router()
    sticky = route(router, "a", ask("q1"))
    prepared = router.prepare(ask("q2"), "b")
    # Waiting requests are load, weighed by the spill rule, not a veto.
    router.update_replica(sticky, {"num_waiting": 9, "reported_at": clock.now}, clock.now)
    assert router.choose(("r0", "r1", "r2"), prepared).reason == "cache_hit"

    router.update_replica(sticky, {"kv_cache_usage": 0.99, "reported_at": clock.now}, clock.now)
    assert router.choose(("r0", "r1", "r2"), prepared).reason == "load_balance"

    router.update_replica(sticky, {"kv_cache_usage": 0.5, "reported_at": clock.now}, clock.now)
    assert router.choose(("r0", "r1", "r2"), prepared).reason == "cache_hit"


def test_waiting_requests_keep_new_prefixes_off_a_replica(
    make_router: MakeRouter, clock: Clock
) -> None:
    router = make_router()
    for replica in ("r0", "r1"):
        router.update_replica(replica, {"num_waiting": 4, "reported_at": clock.now}, clock.now)
    for i in range(3):
        prepared = router.prepare(PromptInput(text=f"unrelated prompt {i} " * 20), str(i))
        assert router.choose(("r0", "r1", "r2"), prepared).chosen == "r2"


def _burst(router: CacheAwareRouter, count: int) -> list[Any]:
    picks = []
    for i in range(count):
        prepared = router.prepare(PromptInput(text=f"fresh prompt {i} " * 20), f"n{i}")
        chosen = router.choose(("r0", "r1", "r2"), prepared).chosen
        router.on_routed(f"n{i}", chosen)
        picks.append(chosen)
    return picks


def test_a_burst_of_new_prompts_spreads_over_near_least_loaded_replicas(
    make_router: MakeRouter,
) -> None:
    # r0 is idle, the others 1.5 requests busier: strictly least loaded would stack
    # the first two prefills on r0.
    router = make_router(exploration=0)
    sample = router.prepare(PromptInput(text="fresh prompt 0 " * 20))
    one_request = sample.prompt_tokens + 4.0 * sample.decode_tokens
    assert router.settings.decode_token_weight == 4.0
    for replica in ("r1", "r2"):
        router.inflight.on_routed(f"old-{replica}", replica, 1.5 * one_request)
    assert sorted(_burst(router, 3)) == ["r0", "r1", "r2"]


def test_a_much_busier_replica_gets_no_new_prompt(make_router: MakeRouter) -> None:
    router = make_router(exploration=0)
    for replica in ("r1", "r2"):
        router.inflight.on_routed(f"old-{replica}", replica, 10_000.0)
    assert _burst(router, 2) == ["r0", "r0"]


def test_queue_length_keeps_new_prefixes_off_a_replica(make_router: MakeRouter) -> None:
    router = make_router()
    full_queue = {"r0": 16, "r1": 16}.get
    for i in range(3):
        prepared = router.prepare(PromptInput(text=f"unrelated prompt {i} " * 20), str(i))
        assert router.choose(("r0", "r1", "r2"), prepared, full_queue).chosen == "r2"


def test_everything_saturated_keeps_a_prefix_with_its_holder(
    make_router: MakeRouter, route: Route, clock: Clock
) -> None:
    router = make_router()
    sticky = route(router, "a", ask("q1"))
    for replica in ("r0", "r1", "r2"):
        router.update_replica(replica, {"num_waiting": 9, "reported_at": clock.now}, clock.now)
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b"))
    assert (decision.chosen, decision.reason) == (sticky, "cache_hit")


def test_stale_stats_are_ignored_by_default(
    make_router: MakeRouter, route: Route, clock: Clock
) -> None:
    router = make_router(stats_staleness_s=5.0)
    sticky = route(router, "a", ask("q1"))
    # A saturated report, but 10 s old: ignored, so the replica stays sticky.
    router.update_replica(sticky, {"num_waiting": 50, "reported_at": clock.now - 10}, clock.now)
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b"))
    assert (decision.chosen, decision.reason) == (sticky, "cache_hit")
    assert decision.stale_stats == 1
    assert isinstance(router.metrics, MemoryMetrics)
    assert router.metrics.stale_stats == 1


def test_stale_stats_can_mean_saturated(
    make_router: MakeRouter, route: Route, clock: Clock
) -> None:
    router = make_router(stats_staleness_s=5.0, stale_stats="saturated")
    sticky = route(router, "a", ask("q1"))
    router.update_replica(sticky, {"num_waiting": 0, "reported_at": clock.now - 10}, clock.now)
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b"))
    assert decision.chosen != sticky
    assert decision.reason == "load_balance"
    # The same report becomes fresh again when the clock is within the window.
    clock.now -= 8
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q2"), "b"))
    assert decision.chosen == sticky


def test_everything_saturated_falls_back_to_least_loaded(make_router: MakeRouter) -> None:
    router = make_router(saturation_tokens=100)
    for replica, load in (("r0", 300.0), ("r1", 200.0), ("r2", 400.0)):
        router.inflight.on_routed(f"pre-{replica}", replica, load)
    decision = router.choose(("r0", "r1", "r2"), router.prepare(ask("q"), "a"))
    assert (decision.chosen, decision.reason) == ("r1", "fallback")


def test_idle_replicas_take_new_prefixes_in_turn(make_router: MakeRouter) -> None:
    router = make_router()
    picks = []
    for i in range(3):
        prepared = router.prepare(PromptInput(text=f"unrelated prompt {i} " * 20), str(i))
        decision = router.choose(("r0", "r1", "r2"), prepared)
        assert decision.reason == "load_balance"
        picks.append(decision.chosen)
    assert sorted(picks) == ["r0", "r1", "r2"]


def test_ranks_put_the_least_loaded_others_second(make_router: MakeRouter) -> None:
    router = make_router(("r0", "r1", "r2", "r3"), fallback_replicas=2)
    for replica, load in (("r0", 10.0), ("r1", 50.0), ("r2", 20.0), ("r3", 30.0)):
        router.inflight.on_routed(f"pre-{replica}", replica, load)
    decision = router.choose(("r0", "r1", "r2", "r3"), router.prepare(ask("q"), "a"))
    assert decision.ranks == [["r0"], ["r2", "r3"]]


def test_only_candidates_are_chosen(make_router: MakeRouter, route: Route) -> None:
    router = make_router()
    sticky = route(router, "a", ask("q1"))
    others = tuple(r for r in ("r0", "r1", "r2") if r != sticky)
    decision = router.choose(others, router.prepare(ask("q2"), "b"))
    assert decision.chosen in others
    assert all(replica in others for rank in decision.ranks for replica in rank)
    assert router.choose((), router.prepare(ask("q2"), "b")).ranks == []


def test_exploration_share_matches_the_setting(make_router: MakeRouter) -> None:
    router = make_router(exploration=0.1, seed=3)
    prepared = router.prepare(ask("q1"), "a")  # nothing cached yet
    reasons = Counter(router.choose(("r0", "r1", "r2"), prepared).reason for _ in range(5000))
    assert abs(reasons["exploration"] / 5000 - 0.1) < 0.015
    assert reasons["load_balance"] + reasons["exploration"] == 5000


def test_exploration_never_takes_a_cache_hit(make_router: MakeRouter, route: Route) -> None:
    router = make_router(exploration=0.5, seed=3)
    route(router, "a", ask("q1"))
    prepared = router.prepare(ask("q2"), "b")
    reasons = Counter(router.choose(("r0", "r1", "r2"), prepared).reason for _ in range(200))
    assert reasons == Counter({"cache_hit": 200})


def test_exploration_is_reproducible_with_a_seed(make_router: MakeRouter) -> None:
    def choices(seed: int) -> list[object]:
        router = make_router(exploration=0.5, seed=seed)
        prepared = router.prepare(ask("q"), "a")
        return [router.choose(("r0", "r1", "r2"), prepared).chosen for _ in range(50)]

    assert choices(11) == choices(11)
    assert choices(11) != choices(12)


def test_session_affinity_pins_a_session(make_router: MakeRouter, route: Route) -> None:
    router = make_router(session_affinity="header")
    pinned = route(router, "a", PromptInput(text="hello " * 50, session="s1"))
    decision = router.choose(
        ("r0", "r1", "r2"), router.prepare(PromptInput(text="other " * 50, session="s1"), "b")
    )
    assert (decision.chosen, decision.reason) == (pinned, "session")
    fresh = router.choose(
        ("r0", "r1", "r2"), router.prepare(PromptInput(text="other " * 50, session="s2"), "c")
    )
    assert fresh.reason == "load_balance"


def test_session_moves_when_its_replica_saturates(make_router: MakeRouter, route: Route) -> None:
    router = make_router(session_affinity="user", saturation_tokens=300, decode_token_weight=1)
    pinned = route(router, "a", PromptInput(text="hello " * 50, session="u1", max_tokens=400))
    moved = route(router, "b", PromptInput(text="again " * 50, session="u1"))
    assert moved != pinned
    decision = router.choose(
        ("r0", "r1", "r2"), router.prepare(PromptInput(text="x " * 50, session="u1"), "c")
    )
    assert (decision.chosen, decision.reason) == (moved, "session")


def test_decisions_are_counted_by_reason(make_router: MakeRouter, route: Route) -> None:
    router = make_router()
    route(router, "a", ask("q1"))
    route(router, "b", ask("q2"))
    metrics = router.metrics
    assert isinstance(metrics, MemoryMetrics)
    assert metrics.decisions == Counter({"load_balance": 1, "cache_hit": 1})
    assert metrics.matched_tokens == [0, 9 * 32]
    assert len(metrics.latencies_s) == 2
