"""The virtual-time PD comparison: every request served, on the path the policy chose."""

from __future__ import annotations

from rayfleet.bench.pd_sim import Arrival, simulate, summarize
from rayfleet.bench.sim.params import SimParams
from rayfleet.deployments.pd_policy import PDPolicy

PARAMS = SimParams(block_size=16, num_kv_blocks=256, max_model_len=1024)
POLICY = PDPolicy(min_uncached_tokens=100, max_prefill_queue=8)


def _arrivals() -> list[Arrival]:
    arrivals = []
    for i in range(40):
        length = 300 if i % 4 == 0 else 20  # every fourth prompt is long
        prompt = tuple(1000 * i + t for t in range(length))  # unique: nothing cached
        arrivals.append(Arrival(at_s=0.01 * i, prompt=prompt, max_tokens=8))
    return arrivals


def test_conditional_sends_only_long_prompts_through_prefill() -> None:
    outcomes = simulate("conditional", _arrivals(), 3, 1, PARAMS, POLICY)
    long_paths = {o.path for o in outcomes if len(o.arrival.prompt) == 300}
    short_paths = {o.path for o in outcomes if len(o.arrival.prompt) == 20}
    assert (long_paths, short_paths) == ({"disaggregated"}, {"local"})
    # decode imported the prefill engine's full blocks (all but the last token's block)
    imported = [o.final.num_imported_tokens for o in outcomes if o.path == "disaggregated"]
    assert imported == [(300 - 1) // 16 * 16] * 10


def test_every_mode_serves_every_request() -> None:
    for mode in ("unified", "disaggregated", "conditional"):
        outcomes = simulate(mode, _arrivals(), 3, 1, PARAMS, POLICY)  # type: ignore[arg-type]
        summary = summarize(outcomes)
        assert summary["requests"] == 40
        assert all(len(o.final.output_token_ids) == 8 for o in outcomes if o.final)
        assert (
            summary["disaggregated"] == {"unified": 0, "disaggregated": 40, "conditional": 10}[mode]
        )
