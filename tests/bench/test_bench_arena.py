"""The arena's pure parts: sizing rules, capacity and load, oracle, result assembly, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rayfleet.bench import arena_results as results
from rayfleet.bench import arena_sizing as sizing
from rayfleet.bench import arena_virtual as virtual
from rayfleet.bench.arena import ArenaOptions
from rayfleet.bench.records import RequestRecord, RequestSpec
from rayfleet.bench.sim.offline import TraceRequest
from rayfleet.platform.cli import app

SIM = sizing.sim_params()  # 256 blocks of 128 tokens per replica


@pytest.mark.parametrize("replicas", [2, 4, 8, 16])
def test_default_shared_prefixes_overflow_one_replica_but_fit_the_fleet(replicas: int) -> None:
    params = sizing.default_params("shared-prefix", replicas, SIM)
    sized = sizing.prefix_sizing(params["num_groups"], params["system_prompt_len"], SIM, replicas)
    assert not sized.fits_one_replica
    assert sized.fits_fleet
    assert sized.all_prefix_blocks <= sizing.MAX_PREFIX_FLEET_SHARE * sized.fleet_blocks


def test_eight_replicas_get_few_tenants_that_overflow_one_replica() -> None:
    params = sizing.default_params("shared-prefix", 8, SIM)
    sized = sizing.prefix_sizing(params["num_groups"], params["system_prompt_len"], SIM, 8)
    assert params["num_groups"] == 10  # 10 tenants × 4k-token prefixes
    assert sized.describe()["prefixes_over_one_replica"] == 1.25
    assert sized.describe()["prefixes_over_fleet"] == pytest.approx(0.156, abs=1e-3)


def test_groups_follow_a_given_prefix_length_unless_given_too() -> None:
    small = sizing.sim_params({"num_kv_blocks": 64})
    params = sizing.default_params("shared-prefix", 2, small, {"system_prompt_len": "1024"})
    assert params["num_groups"] == 10  # 10 × 8 blocks: 1.25 replicas' caches
    given = sizing.default_params("shared-prefix", 2, small, {"num_groups": 3})
    assert given["num_groups"] == 3


def test_one_replica_cannot_make_routing_matter() -> None:
    with pytest.raises(sizing.SizingError, match="exceed"):
        sizing.default_params("shared-prefix", 1, SIM)


def test_sizing_that_fits_one_replica_is_refused() -> None:
    fits = sizing.prefix_sizing(groups=4, prefix_tokens=1024, sim=SIM, replicas=8)
    with pytest.raises(sizing.SizingError, match="fit in one replica"):
        sizing.check_prefix_sizing(fits)


def test_unknown_workload_is_named() -> None:
    with pytest.raises(sizing.SizingError, match="dataset"):
        sizing.default_params("dataset", 8, SIM)


def _trace(count: int, prompt_tokens: int = 512, shared: bool = False) -> list[TraceRequest]:
    def ids(i: int) -> tuple[int, ...]:
        head = 0 if shared else i * 10_000
        return (*range(head, head + prompt_tokens - 1), 900_000 + i)

    return [TraceRequest("all", ids(i), 16) for i in range(count)]


def test_capacity_scales_with_replicas_and_prefix_reuse() -> None:
    unique = _trace(64)
    one = sizing.estimate_capacity(unique, SIM, 1)
    four = sizing.estimate_capacity(unique, SIM, 4)
    assert four.fleet_rps_sim == pytest.approx(4 * four.replica_rps_sim)
    assert one.requests_simulated == 32 and four.requests_simulated == 8  # timed halves
    reused = sizing.estimate_capacity(_trace(64, shared=True), SIM, 1)
    assert reused.replica_rps_sim > one.replica_rps_sim  # cached prefills are cheaper


def test_load_is_seventy_percent_of_capacity_slowed_to_the_wall_limit() -> None:
    capacity = sizing.Capacity(5.0, 40.0, 96, 19.2)
    fast = sizing.choose_load(capacity, max_wall_rate=7.0)
    assert fast.sim_rate == pytest.approx(28.0)
    assert fast.time_scale == pytest.approx(0.25)
    assert fast.wall_rate == pytest.approx(7.0)
    slow = sizing.choose_load(sizing.Capacity(1.0, 4.0, 96, 96.0), max_wall_rate=7.0)
    assert slow.time_scale == 1.0 and slow.wall_rate == pytest.approx(2.8)
    given = sizing.choose_load(capacity, rate=2.0, time_scale=0.1)
    assert given.sim_rate == pytest.approx(20.0) and "50%" in given.how
    with pytest.raises(sizing.SizingError, match="--rate"):
        sizing.choose_load(capacity, rate=0.0)


def test_oracle_pools_every_replicas_cache() -> None:
    # 4 prompts of 8 blocks each, twice: a 16-block cache holds
    # one (9 blocks with the last token), 48 blocks hold all four.
    prompts = [tuple(range(i * 5000, i * 5000 + 8 * 128 + 1)) for i in range(4)]
    trace = [TraceRequest("all", p, 1) for p in prompts * 2]
    small = sizing.sim_params({"num_kv_blocks": 16})
    assert sizing.oracle(trace, small, 1) == 0.0  # LRU cycling evicts before reuse
    assert sizing.oracle(trace, small, 3) == pytest.approx(0.5 * 8 * 128 / 1025)


def test_router_index_is_sized_like_the_engine() -> None:
    specs = [RequestSpec(max_tokens=4, prompt="x" * 600)]
    trace = [TraceRequest("all", tuple(range(100)), 4)]
    settings = sizing.router_settings(specs, trace, SIM)
    assert settings == {
        "chars_per_token": 6.0,
        "block_chars": 768,
        "block_tokens": 128,
        "cache_capacity_blocks": SIM.num_kv_blocks,
    }


PROMETHEUS = """\
# TYPE ray_vllm_prefix_cache_hits_total counter
ray_vllm_prefix_cache_hits_total{ReplicaId="a",engine="0",model_name="m"} 300.0
ray_vllm_prefix_cache_hits_total{ReplicaId="b",engine="0",model_name="m"} 0.0
ray_vllm_prefix_cache_hits_total{ReplicaId="z",engine="0",model_name="other"} 9.0
# TYPE ray_vllm_prefix_cache_queries_total counter
ray_vllm_prefix_cache_queries_total{ReplicaId="a",engine="0",model_name="m"} 1000.0
ray_vllm_prefix_cache_queries_total{ReplicaId="b",engine="0",model_name="m"} 500.0
ray_vllm_prefix_cache_queries_total{ReplicaId="z",engine="0",model_name="other"} 9.0
"""


def test_counters_per_replica_of_one_model_and_their_delta() -> None:
    after = results.parse_replica_counters(PROMETHEUS, "m")
    assert after == {
        "a": results.ReplicaCounters(300.0, 1000.0),
        "b": results.ReplicaCounters(0.0, 500.0),
    }
    before = {"a": results.ReplicaCounters(100.0, 200.0), "gone": results.ReplicaCounters(1, 1)}
    delta = results.counters_delta(before, after)
    assert delta == {
        "a": results.ReplicaCounters(200.0, 800.0),
        "b": results.ReplicaCounters(0.0, 500.0),
    }
    assert results.hit_rate(delta) == pytest.approx(200 / 1300)
    assert results.hit_rate({}) is None


def test_max_over_mean_counts_silent_replicas_as_zero() -> None:
    assert results.max_over_mean([10, 10, 10, 10], 4) == 1.0
    assert results.max_over_mean([40], 4) == 4.0  # one replica took everything
    assert results.max_over_mean([30, 10], 4) == 3.0
    assert results.max_over_mean([], 4) is None
    with pytest.raises(ValueError, match="fleet has 2"):
        results.max_over_mean([1, 1, 1], 2)


def _record(index: int, ttft: float, e2e: float, send: float) -> RequestRecord:
    return RequestRecord(
        index=index,
        scheduled_s=send,
        send_s=send,
        max_tokens=5,
        status=200,
        ttft_s=ttft,
        e2e_s=e2e,
        chunk_s=[ttft + 0.01 * i for i in range(5)],
        input_tokens=100,
        output_tokens=5,
    )


def test_router_row_and_document(tmp_path: Path) -> None:
    records = [_record(i, 0.1 * (i + 1), 0.2 * (i + 1), float(i)) for i in range(10)]
    delta = {"a": results.ReplicaCounters(600, 800), "b": results.ReplicaCounters(0, 200)}
    row = results.router_result(records, delta, replicas=4)
    assert set(results.ROUTER_METRICS) <= row.keys()
    assert row["ttft_p50"] == pytest.approx(0.55)
    assert row["prefix_hit_rate"] == pytest.approx(0.6)
    assert row["max_over_mean_load"] == pytest.approx(800 / 250)
    assert row["requests_ok"] == 10
    slower = {**row, "ttft_p90": row["ttft_p90"] * 4}
    document = results.arena_document(
        {"pow2": slower, "rayfleet": row}, 0.75, {"replicas": 4, "workload": {"name": "w"}}
    )
    assert document["ratios"]["rayfleet/pow2"]["ttft_p90"] == pytest.approx(0.25)
    assert document["rayfleet_hit_rate_over_oracle"] == pytest.approx(0.8)
    path = results.write_arena(tmp_path / "out", document)
    assert json.loads(path.read_text())["oracle_hit_rate"] == 0.75
    assert (tmp_path / "out" / results.PLOT_FILE).stat().st_size > 1000


def test_options_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="round-robin"):
        ArenaOptions(workload="synthetic", out=Path("x"), routers=("pow2", "round-robin"))
    with pytest.raises(ValueError, match="--engine"):
        ArenaOptions(workload="synthetic", out=Path("x"), engine="tpu")
    with pytest.raises(ValueError, match="needs --rate"):
        ArenaOptions(workload="synthetic", out=Path("x"), engine="vllm")


def test_cli_rejects_an_unknown_router_before_starting_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "arena", "--workload", "synthetic", "--out", str(tmp_path), "--routers", "rr"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2
    assert "unknown ['rr']" in result.output
    assert not (tmp_path / results.RESULT_FILE).exists()


def test_virtual_fleet_keeps_groups_sticky_where_pow2_scatters_them() -> None:
    # 4 groups × 8-block prefixes = 32 blocks; each replica caches 20, the fleet 40.
    groups = 4
    texts = [f"group {g} shares this system prompt. " * 140 for g in range(groups)]
    prompts, trace = [], []
    for i in range(48):
        g = i % groups
        prompts.append((f"{texts[g]} question {i}", None))
        ids = (*range(g * 10_000, g * 10_000 + 8 * 128), 900_000 + i, 900_001 + i)
        trace.append(TraceRequest("all", ids, 4))
    arrivals = [0.5 * i for i in range(len(trace))]
    sim = sizing.sim_params({"num_kv_blocks": 20})
    settings = {"cache_capacity_blocks": 20, "exploration": 0.0}
    rows = {
        policy: virtual.virtual_row(
            virtual.run_policy(policy, prompts, trace, arrivals, sim, 2, settings), 2
        )
        for policy in virtual.VIRTUAL_ROUTERS
    }
    assert set(results.ROUTER_METRICS) <= rows["pow2"].keys()
    assert rows["rayfleet"]["prefix_hit_rate"] > rows["pow2"]["prefix_hit_rate"] + 0.2
    assert rows["rayfleet"]["ttft_p90"] < rows["pow2"]["ttft_p90"]
    assert sum(rows["pow2"]["prompt_tokens_per_replica"]) == sum(
        len(t.prompt_token_ids) for t in trace
    )
    # Ray's prefix tree keeps each group on one replica too.
    assert rows["ray-prefix"]["prefix_hit_rate"] > rows["pow2"]["prefix_hit_rate"] + 0.2
    with pytest.raises(ValueError, match="not 'rr'"):
        virtual.run_policy("rr", prompts, trace, arrivals, sim, 2, settings)
    # Engine stats reach rayfleet's router as Serve would poll them; same schedule served.
    polled = virtual.run_policy(
        "rayfleet", prompts, trace, arrivals, sim, 2, settings, stats_period_s=1.0
    )
    assert len(polled.served) == len(trace)
