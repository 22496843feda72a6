"""vLLM-named metrics of a simulated replica (ray.util.metrics replaced by a recorder)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from rayfleet.bench.sim import metrics as sim_metrics
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest, StepPlan, TokenEvent
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.virtual import run_virtual


class FakeMetric:
    made: ClassVar[dict[str, FakeMetric]] = {}

    def __init__(self, name: str, description: str = "", **options: Any) -> None:
        self.name = name
        self.options = options
        self.values: list[tuple[float, dict[str, str]]] = []
        FakeMetric.made[name] = self

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.values.append((value, tags))

    set = observe = inc


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeMetric]:
    FakeMetric.made = {}
    fake = SimpleNamespace(Counter=FakeMetric, Gauge=FakeMetric, Histogram=FakeMetric)
    monkeypatch.setattr(sim_metrics, "metrics", fake)
    return FakeMetric.made


def test_counters_gauges_and_ttft_follow_the_engine(recorded: dict[str, FakeMetric]) -> None:
    core = SimEngineCore(SimParams(block_size=16, num_kv_blocks=32))
    observer = sim_metrics.SimMetrics(core, "sim-model")
    original = core.finish_step

    def observed(plan: StepPlan) -> list[TokenEvent]:
        events = original(plan)
        observer.on_step(plan, events)
        return events

    core.finish_step = observed  # type: ignore[method-assign]
    prompt = tuple(range(40))
    requests = [SimRequest(str(i), prompt, 3, arrival_s=10.0 * i) for i in range(3)]
    run_virtual(core, requests)

    def total(name: str) -> float:
        return sum(value for value, _ in recorded[name].values)

    assert total("vllm_prefix_cache_queries") == 120
    assert total("vllm_prefix_cache_hits") == 64 == core.prefix_cache_hits
    ttfts = [value for value, _ in recorded["vllm_time_to_first_token_seconds"].values]
    assert ttfts == pytest.approx([r.token_times[0] - r.arrival_s for r in requests])
    assert recorded["vllm_num_requests_running"].values[-1][0] == 0
    assert recorded["vllm_kv_cache_usage_perc"].values[-1][0] == 0.0
    tags = recorded["vllm_prefix_cache_hits"].values[0][1]
    assert tags == {"model_name": "sim-model", "engine": "0", "ReplicaId": ""}
    assert recorded["vllm_prefix_cache_hits"].options["tag_keys"] == sim_metrics.TAG_KEYS
