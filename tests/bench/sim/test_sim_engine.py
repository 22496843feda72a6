"""The engine core in virtual time: step-time model, batching, limits, roles."""

from __future__ import annotations

import pytest

from rayfleet.bench.sim.engine import (
    SimEngineCore,
    SimRequest,
    StepPlan,
    TokenEvent,
    request_error,
)
from rayfleet.bench.sim.params import SimParams, sim_params_from
from rayfleet.bench.sim.virtual import run_virtual

COSTS = {
    "step_base_s": 0.01,
    "prefill_cost_per_token": 0.001,
    "decode_cost_per_seq": 0.1,
    "decode_cost_per_ctx_token": 0.0001,
    "kv_transfer_s_per_token": 0.0002,
}


def params(**overrides: object) -> SimParams:
    base: dict[str, object] = {"block_size": 16, "num_kv_blocks": 64, "max_model_len": 512}
    return SimParams.model_validate({**base, **COSTS, **overrides})


def prompt(n: int, start: int = 0) -> tuple[int, ...]:
    return tuple(range(start, start + n))


class Recorder(SimEngineCore):
    """Keeps every plan, to check what each step did."""

    def __init__(self, p: SimParams) -> None:
        super().__init__(p)
        self.plans: list[StepPlan] = []

    def finish_step(self, plan: StepPlan) -> list[TokenEvent]:
        self.plans.append(plan)
        return super().finish_step(plan)


def test_one_request_follows_the_step_time_model() -> None:
    p = params()
    (request,) = run_virtual(SimEngineCore(p), [SimRequest("a", prompt(40), max_tokens=3)])
    prefill = 0.01 + 0.001 * 40
    decode_1 = 0.01 + 0.1 + 0.0001 * 41  # context: 40 prompt tokens + the token fed back
    decode_2 = 0.01 + 0.1 + 0.0001 * 42
    assert request.token_times == pytest.approx(
        [prefill, prefill + decode_1, prefill + decode_1 + decode_2]
    )
    assert len(request.output_token_ids) == 3 and request.finished_s == request.token_times[-1]


def test_long_prompts_are_prefilled_in_budget_sized_chunks() -> None:
    core = Recorder(params(max_num_batched_tokens=32))
    run_virtual(core, [SimRequest("a", prompt(80), max_tokens=2)])
    assert [plan.prefill_tokens for plan in core.plans] == [32, 32, 16, 0]
    assert [len(plan.decode) for plan in core.plans] == [0, 0, 0, 1]


def test_continuous_batching_mixes_a_new_prefill_into_running_decodes() -> None:
    core = Recorder(params())
    first = SimRequest("a", prompt(20), max_tokens=6)
    second = SimRequest("b", prompt(30, start=100), max_tokens=2, arrival_s=0.2)
    run_virtual(core, [first, second])
    mixed = [plan for plan in core.plans if plan.prefill and plan.decode]
    assert len(mixed) == 1
    assert mixed[0].prefill == [(second, 30)] and mixed[0].decode == [first]
    assert max(len(plan.decode) for plan in core.plans) == 2


def test_max_num_seqs_holds_requests_in_the_queue() -> None:
    core = SimEngineCore(params(max_num_seqs=2))
    requests = [SimRequest(str(i), prompt(10, start=50 * i), max_tokens=4) for i in range(3)]
    run_virtual(core, requests)
    first_done = min(r.finished_s for r in requests[:2] if r.finished_s is not None)
    assert requests[2].scheduled_s is not None and requests[2].scheduled_s >= first_done


def test_admission_waits_for_kv_blocks_instead_of_preempting() -> None:
    core = Recorder(params(num_kv_blocks=6))  # one 80-token request holds 5 blocks
    a = SimRequest("a", prompt(70), max_tokens=11)
    b = SimRequest("b", prompt(70, start=500), max_tokens=11)
    run_virtual(core, [a, b])
    assert a.finished_s is not None and b.scheduled_s is not None
    assert b.scheduled_s >= a.finished_s
    assert all(len(plan.decode) + len(plan.prefill) == 1 for plan in core.plans)
    assert core.kv_cache_usage == 0.0  # everything released at the end


def test_kv_usage_counts_blocks_held_by_running_requests() -> None:
    core = SimEngineCore(params(num_kv_blocks=10))
    core.add(SimRequest("a", prompt(40), max_tokens=5))
    plan = core.begin_step(0.0)
    assert plan is not None
    assert core.kv_cache_usage == pytest.approx(0.3)  # 40 tokens = 3 blocks of 16
    assert len(core.running) == 1 and len(core.waiting) == 0


def test_repeated_prompt_hits_all_but_the_block_with_its_last_token() -> None:
    core = SimEngineCore(params())
    a = SimRequest("a", prompt(48), max_tokens=2)  # exactly 3 blocks
    b = SimRequest("b", prompt(48), max_tokens=2, arrival_s=10.0)
    run_virtual(core, [a, b])
    assert (a.num_cached_tokens, b.num_cached_tokens) == (0, 32)
    assert (core.prefix_cache_hits, core.prefix_cache_queries) == (32, 96)
    assert b.output_token_ids == a.output_token_ids  # same prompt, same pseudo tokens
    assert b.first_token_s is not None and a.first_token_s is not None
    assert b.first_token_s - b.arrival_s < a.first_token_s - a.arrival_s


def test_prefill_role_stops_after_one_token_and_describes_its_blocks() -> None:
    p = params(role="prefill")
    (request,) = run_virtual(SimEngineCore(p), [SimRequest("a", prompt(50), max_tokens=9)])
    assert len(request.output_token_ids) == 1
    assert request.transfer_hashes(p.block_size) == request.hashes[:3]


def test_decode_role_imports_blocks_at_transfer_cost() -> None:
    prefill = run_virtual(SimEngineCore(params(role="prefill")), [SimRequest("a", prompt(50), 1)])
    hashes = prefill[0].transfer_hashes(16)
    core = Recorder(params(role="decode"))
    (request,) = run_virtual(core, [SimRequest("a", prompt(50), 2, import_hashes=hashes)])
    assert request.num_imported_tokens == 48 and core.imported_tokens == 48
    first = core.plans[0]
    assert (first.prefill_tokens, first.imported_tokens) == (2, 48)
    assert first.duration_s == pytest.approx(0.01 + 0.001 * 2 + 0.0002 * 48)


def test_decode_role_ignores_blocks_of_another_prompt() -> None:
    other = run_virtual(SimEngineCore(params(role="prefill")), [SimRequest("x", prompt(50, 7), 1)])
    core = SimEngineCore(params(role="decode"))
    hashes = other[0].transfer_hashes(16)
    (request,) = run_virtual(core, [SimRequest("a", prompt(50), 2, import_hashes=hashes)])
    assert request.num_imported_tokens == 0


def test_abort_frees_the_blocks_and_forgets_uncomputed_ones() -> None:
    core = SimEngineCore(params(max_num_batched_tokens=16))
    request = SimRequest("a", prompt(64), max_tokens=4)
    core.add(request)
    plan = core.begin_step(0.0)
    assert plan is not None
    core.finish_step(plan)  # one 16-token chunk computed
    core.add(SimRequest("b", prompt(8, start=900), max_tokens=1))
    next_plan = core.begin_step(plan.end_s)
    core.abort(request)
    assert next_plan is not None
    core.finish_step(next_plan)
    assert not core.running and core.kv_cache_usage == 0.0
    assert len(core.pool.cached_prefix(request.hashes)) == 1


def test_requests_the_engine_cannot_hold_are_refused() -> None:
    p = params(num_kv_blocks=4)
    assert "maximum context length is 512" in (request_error(p, 500, 20) or "")
    assert "KV blocks" in (request_error(p, 100, 1) or "")
    assert request_error(p, 10, 0) is not None and request_error(p, 10, 5) is None
    with pytest.raises(ValueError):
        SimEngineCore(p).add(SimRequest("a", prompt(100), 1))


def test_pseudo_tokens_depend_on_seed_and_prompt() -> None:
    def outputs(seed: int, start: int) -> list[int]:
        core = SimEngineCore(params(seed=seed))
        (request,) = run_virtual(core, [SimRequest("a", prompt(20, start), max_tokens=8)])
        return request.output_token_ids

    assert outputs(0, 0) == outputs(0, 0)
    assert outputs(0, 0) != outputs(1, 0) and outputs(0, 0) != outputs(0, 5)


def test_engine_kwargs_fill_what_the_sim_config_leaves_out() -> None:
    p = sim_params_from(
        {"max_num_seqs": 8, "time_scale": 0.5},
        {"max_num_seqs": 64, "max_model_len": 1024, "block_size": 16, "dtype": "float32"},
    )
    assert (p.max_num_seqs, p.max_model_len, p.block_size, p.time_scale) == (8, 1024, 16, 0.5)
    with pytest.raises(ValueError):
        sim_params_from({"no_such_field": 1}, {})
