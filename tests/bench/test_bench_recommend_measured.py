"""`recommend` on a real sweep of this machine, kept as a fixture (stage figures only).

tests/bench/fixtures/cpu_tiny_sweep.json: `rayfleet bench run --sweep 1,2,4,8,12
--duration 15` against examples/cpu-tiny.yaml (1 replica) and examples/cpu-tiny-2x.yaml
(2 replicas), and `--sweep 1,2,4,8` against examples/cpu-tiny-pd.yaml (prefill:decode
1:1), on the 2-core box. Without per-request records nothing is predicted, so
every choice below is what the measurements say.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.profile_fixtures import load_trimmed_runs

from rayfleet.bench.costs import load_prices
from rayfleet.bench.profiles import measured_points, rate_runs
from rayfleet.bench.recommend import Targets, recommend
from rayfleet.bench.store import ProfileStore

SWEEP = Path(__file__).parent / "fixtures" / "cpu_tiny_sweep.json"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProfileStore:
    store = ProfileStore(tmp_path_factory.mktemp("measured"))
    load_trimmed_runs(store, SWEEP)
    return store


def cheapest_meeting(store: ProfileStore, qps: float, ttft_s: float, tpot_s: float) -> str | None:
    """Independently of `recommend`: the cheapest configuration with a stage at a rate
    ≥ qps (the lowest such) within both targets."""
    prices = load_prices()
    found = []
    for config, points in measured_points(rate_runs(store)).items():
        above = [p for p in points if p.load >= qps]
        if not above:
            continue
        first = min(above, key=lambda p: p.load)
        if first.meets(ttft_s, tpot_s):
            found.append((config.hourly_usd(prices), config.label))
    return min(found)[1] if found else None


@pytest.mark.parametrize(
    ("qps", "ttft_ms", "tpot_ms"),
    [(12, 200, 30), (8, 50, 30), (4, 40, 30), (12, 100, 10), (1, 60, 10), (8, 100, 7)],
)
def test_recommend_picks_what_the_measurements_say(
    store: ProfileStore, qps: float, ttft_ms: float, tpot_ms: float
) -> None:
    targets = Targets("tiny-llama", ttft_ms / 1000, tpot_ms / 1000, qps)
    result = recommend(store, targets, load_prices())
    expected = cheapest_meeting(store, qps, ttft_ms / 1000, tpot_ms / 1000)
    assert (result.best.config.label if result.best else None) == expected
    assert not any(o.point.predicted for o in result.options)


def test_the_sweep_separates_one_two_replicas_and_pd(store: ProfileStore) -> None:
    prices = load_prices()
    # At 12 req/s one engine keeps up and two engines on two shared cores do not.
    at_12 = recommend(store, Targets("tiny-llama", 0.2, 0.03, 12), prices)
    assert at_12.best is not None and at_12.best.config.label == "cpu unified ×1 pow2"
    # At 8 req/s only two engines keep TTFT p90 under 50 ms.
    at_8 = recommend(store, Targets("tiny-llama", 0.05, 0.03, 8), prices)
    assert at_8.best is not None and at_8.best.config.label == "cpu unified ×2 pow2"
    # At 8 req/s only prefill/decode disaggregation keeps TPOT p90 under 7 ms.
    smooth = recommend(store, Targets("tiny-llama", 0.1, 0.007, 8), prices)
    assert smooth.best is not None and smooth.best.config.label == "cpu PD 1:1 pow2"
