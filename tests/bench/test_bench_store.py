"""Profile store round trip and queries."""

from __future__ import annotations

from rayfleet.bench.served import served_from_server, served_from_spec
from rayfleet.bench.store import ProfileStore, RunEntry, RunFilter, Served, default_data_dir
from rayfleet.platform.spec import load_spec, parse_spec


def stage(index: int, load: float, tok_s: float, ttft_p90: float, saturated=None) -> dict:
    latency = {"mean": ttft_p90, "p50": ttft_p90, "p90": ttft_p90, "p99": ttft_p90}
    return {
        "stage": index,
        "load": load,
        "saturated": saturated,
        "requests_ok": 10,
        "requests_failed": 0,
        "requests_per_s": load,
        "output_tokens_per_s": tok_s,
        "ttft_s": latency,
        "tpot_s": latency,
        "e2e_s": latency,
        "goodput": {"fraction": 1.0},
        "prefix_cache": {"hit_rate": 0.5},
    }


def entry(run_id: str, model: str, accelerator: str, stages: list[dict]) -> RunEntry:
    served = Served(model=model, spec_hash="abc", backend="vllm", accelerator=accelerator)
    return RunEntry(
        run_id=run_id,
        created_at=f"2026-11-28T00:00:0{run_id[-1]}+00:00",
        run_dir=f"/runs/{run_id}",
        target="http://x",
        served=served,
        workload={"name": "synthetic", "seed": 0, "input_len": "256"},
        load={"mode": "rate", "loads": [s["load"] for s in stages]},
        summary=stages[-1],
        stages=stages,
    )


def test_round_trip(tmp_path):
    store = ProfileStore(tmp_path)
    saved = entry("run-1", "llama", "nvidia-l4x1", [stage(0, 1, 50, 0.1), stage(1, 2, 90, 0.2)])
    store.save(saved)
    loaded = store.get("run-1")
    assert loaded == saved
    assert store.get("missing") is None
    store.save(saved)  # saving again replaces, never duplicates
    assert len(store.runs()) == 1 and len(store.stages()) == 2


def test_queries_for_recommendation(tmp_path):
    store = ProfileStore(tmp_path)
    store.save(entry("run-1", "llama", "l4", [stage(0, 1, 50, 0.1), stage(1, 4, 180, 0.9)]))
    store.save(entry("run-2", "llama", "h100", [stage(0, 4, 400, 0.2), stage(1, 8, 700, 3, "x")]))
    store.save(entry("run-3", "qwen", "l4", [stage(0, 2, 70, 0.1)]))

    assert [e.run_id for e in store.runs()] == ["run-3", "run-2", "run-1"]
    assert [e.run_id for e in store.runs(RunFilter(model="llama"), limit=1)] == ["run-2"]
    assert [e.run_id for e in store.runs(RunFilter(accelerator="l4"))] == ["run-3", "run-1"]

    llama_l4 = RunFilter(model="llama", accelerator="l4")
    best = store.best_stage(llama_l4, max_ttft_p90_s=0.5)
    assert best is not None and (best["run_id"], best["load"]) == ("run-1", 1)
    # saturated stages are left out unless asked for
    llama = RunFilter(model="llama")
    assert store.best_stage(llama)["output_tokens_per_s"] == 400
    assert store.stages(llama, include_saturated=True)[0]["output_tokens_per_s"] == 700
    assert store.best_stage(RunFilter(model="none")) is None

    assert store.delete("run-2") and not store.delete("run-2")
    assert store.stages(RunFilter(accelerator="h100"), include_saturated=True) == []


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLEET_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    assert ProfileStore().path.parent == tmp_path / "d"


def test_served_from_spec_and_server():
    spec = parse_spec(
        {
            "models": [
                {
                    "id": "m",
                    "pools": {
                        "prefill": {"accelerator": {"kind": "gpu", "type": "nvidia-l4"}},
                        "decode": {"accelerator": {"kind": "cpu"}},
                    },
                }
            ],
            "router": {"policy": "rayfleet"},
        }
    )
    served = served_from_spec(spec, "m")
    assert served.spec_hash == spec.digest() and served.router_policy == "rayfleet"
    assert served.accelerator == "cpu+nvidia-l4x1" and served.backend == "vllm+vllm-cpu"
    assert set(served.pools) == {"prefill", "decode"}
    models = [{"id": "m", "owned_by": "vllm", "root": "/x"}]
    from_server = served_from_server(models, "m")
    assert from_server.backend == "vllm" and from_server.spec_hash.startswith("server-")
    assert from_server.spec_hash == served_from_server(list(models), "m").spec_hash
    assert load_spec  # the loader the CLI uses for --spec
