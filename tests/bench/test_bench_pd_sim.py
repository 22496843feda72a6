"""The virtual-time PD comparison: every request served, on the path the policy chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rayfleet.bench.pd_sim import Arrival, simulate, summarize
from rayfleet.bench.sim.params import SimParams
from rayfleet.deployments.pd_policy import PDPolicy
from rayfleet.platform.cli import app

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


def test_conditional_counts_each_decode_engines_own_remote_prefills() -> None:
    # pd.py: a decode replica falls back to local prefill once IT has more than
    # max_prefill_queue requests in remote prefill; the ingress spreads arrivals over
    # the least busy decode replica (remote prefills count as its load).
    policy = PDPolicy(min_uncached_tokens=100, max_prefill_queue=1)
    burst = [
        Arrival(at_s=0.001 * i, prompt=tuple(1000 * i + t for t in range(300)), max_tokens=4)
        for i in range(8)
    ]
    outcomes = simulate("conditional", burst, 3, 1, PARAMS, policy)
    paths = [o.path for o in outcomes]
    # two decode engines x (max_prefill_queue + 1) remote, then the rest local
    assert paths == ["disaggregated"] * 4 + ["local"] * 4


def test_remote_prefill_decodes_on_the_deciding_engine() -> None:
    # Decode as orchestrator: the engine chosen on arrival decodes the request, even
    # when the other decode engine is idle by the time the prefill is done.
    policy = PDPolicy(min_uncached_tokens=100, max_prefill_queue=8)
    arrivals = [
        Arrival(at_s=0.0, prompt=tuple(range(300)), max_tokens=4),  # remote; engine A
        Arrival(at_s=0.0001, prompt=tuple(range(5000, 5020)), max_tokens=2),  # B, done soon
        Arrival(at_s=0.0002, prompt=tuple(range(9000, 9020)), max_tokens=200),  # A (tie)
    ]
    remote, _, busy = simulate("conditional", arrivals, 3, 1, PARAMS, policy)
    assert remote.path == "disaggregated"
    assert remote.final is not None and busy.final is not None
    assert remote.final.num_imported_tokens > 0
    # A's steps carry both: every decode token of the remote request ends with one of
    # the long local request's steps.
    assert set(remote.final.token_times) <= set(busy.final.token_times)


def test_pd_arena_cli_passes_workload_and_sim_params(tmp_path: Path) -> None:
    args = ["bench", "pd-arena", "--out", str(tmp_path), "--rate", "20", "--requests", "30"]
    result = CliRunner().invoke(app, [*args, "-p", "long_fraction=1", "--sim", "step_base_s=0.01"])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "pd_arena.json").read_text())
    # every prompt is long, so conditional sends each one through the prefill pool
    assert document["modes"]["conditional"]["disaggregated"] == 30
    floor = document["tpot_floor_s"]
    assert floor == SimParams(step_base_s=0.01).step_time(0, 1, 0, 0)
    assert all(document["modes"][m]["tpot_p50_s"] >= floor for m in ("unified", "conditional"))
    assert document["settings"]["sim"]["step_base_s"] == 0.01


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--sim", "step_base_s=-1"], "step_base_s"),
        (["--sim", "no_such_field=1"], "no_such_field"),
        (["--prefill", "4"], "prefill"),
        (["--requests", "0"], "--requests"),
        (["-p", "long_input_len"], "--param"),
        (["--sim", "role=decode"], "role: set by pd-arena"),
        (["-p", "long_input_len=5000", "-p", "long_fraction=1"], "maximum context length"),
    ],
)
def test_pd_arena_cli_names_bad_input(tmp_path: Path, extra: list[str], named: str) -> None:
    args = ["bench", "pd-arena", "--out", str(tmp_path), "--requests", "20", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert named in result.output
    assert not (tmp_path / "pd_arena.json").exists()
