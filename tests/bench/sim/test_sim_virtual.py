"""VirtualFleet: the one virtual-time loop behind run_virtual, the arenas and pd-arena."""

from __future__ import annotations

import pytest

from rayfleet.bench.sim.engine import SimEngineCore, SimRequest, StepPlan, TokenEvent
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.virtual import VirtualFleet, run_virtual

PARAMS = SimParams(
    block_size=16,
    num_kv_blocks=64,
    max_model_len=512,
    step_base_s=0.01,
    prefill_cost_per_token=0.001,
    decode_cost_per_seq=0.0,
    decode_cost_per_ctx_token=0.0,
)


def request(name: str, length: int, at: float = 0.0, max_tokens: int = 2) -> SimRequest:
    start = 1000 * sum(map(ord, name))  # distinct prompts: nothing cached across requests
    return SimRequest(name, tuple(range(start, start + length)), max_tokens, arrival_s=at)


def test_steps_of_all_engines_finish_in_time_order() -> None:
    seen: list[tuple[int, float]] = []

    def hook(engine: int, plan: StepPlan, events: list[TokenEvent]) -> None:
        seen.append((engine, plan.end_s))

    fleet = VirtualFleet([SimEngineCore(PARAMS), SimEngineCore(PARAMS)], hook)
    fleet.submit(0, request("slow", 90), 0.0)  # prefill step 0.1 s, then 0.01 s decodes
    fleet.submit(1, request("fast", 10), 0.0)  # 0.02 s, then 0.01 s
    fleet.run_until(0.05)
    assert seen == [(1, pytest.approx(0.02)), (1, pytest.approx(0.03))]  # none past 0.05
    fleet.run_until()
    assert [end for _, end in seen] == sorted(end for _, end in seen)
    assert {engine for engine, _ in seen} == {0, 1}


def test_an_arrival_at_a_step_end_joins_the_next_step() -> None:
    first, second = request("a", 40, 0.0), request("b", 20, 0.05)  # a's prefill ends at 0.05
    run_virtual(SimEngineCore(PARAMS), [first, second])
    assert first.token_times[0] == pytest.approx(0.05)
    # b starts with a's first decode step at 0.05: 0.01 + 20 prefill tokens
    assert second.token_times[0] == pytest.approx(0.05 + 0.01 + 0.02)


def test_simultaneous_arrivals_share_their_first_step() -> None:
    a, b = request("a", 10, 0.3), request("b", 10, 0.3)
    run_virtual(SimEngineCore(PARAMS), [a, b])
    assert a.token_times[0] == b.token_times[0] == pytest.approx(0.3 + 0.01 + 0.02)


def test_an_engine_never_starts_a_step_before_its_last_one_ended() -> None:
    fleet = VirtualFleet([SimEngineCore(PARAMS)])
    fleet.submit(0, request("a", 10, 1.0), 1.0)
    fleet.run_until()  # a ends at 1.03 (prefill 0.02, one decode 0.01)
    late = request("b", 10, 0.5)  # reported late, stamped earlier
    fleet.submit(0, late, 0.5)
    fleet.run_until()
    assert late.token_times[0] == pytest.approx(1.03 + 0.02)
