"""End to end: a short arena on a local Ray cluster, two simulated replicas, two routers.

Run under the heavy lock; it starts (and stops) the shared local cluster on 8000/8080.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayfleet.bench.arena import ArenaOptions, run_arena
from rayfleet.bench.arena_results import PLOT_FILE, RESULT_FILE, ROUTER_METRICS

pytestmark = pytest.mark.e2e


def test_short_shared_prefix_arena_writes_both_routers_results(tmp_path: Path) -> None:
    options = ArenaOptions(
        workload="shared-prefix",
        out=tmp_path,
        routers=("pow2", "rayfleet"),
        replicas=2,
        duration_s=6.0,
        params={"system_prompt_len": 1024, "num_prompts_per_group": 4, "question_len": 32},
        sim={"num_kv_blocks": 64, "max_model_len": 2048},
    )
    run_arena(options)
    document = json.loads((tmp_path / RESULT_FILE).read_text())
    assert set(document["routers"]) == {"pow2", "rayfleet"}
    assert document["sizing"]["fits_fleet"] and not document["sizing"]["fits_one_replica"]
    assert 0 < document["oracle_hit_rate"] <= 1
    for row in document["routers"].values():
        assert set(ROUTER_METRICS) <= row.keys()
        assert row["requests_failed"] == 0 and row["requests_ok"] == document["requests"]
        assert row["prefix_hit_rate"] is not None  # the engines' counters arrived
        assert 1.0 <= row["max_over_mean_load"] <= 2.0
    assert (tmp_path / PLOT_FILE).is_file()
