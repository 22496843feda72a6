"""`rayfleet bench` end to end against the fake server (short runs, real files)."""

from __future__ import annotations

import json
import shlex

from typer.testing import CliRunner

from rayfleet.bench.cli import bench_app
from rayfleet.bench.store import ProfileStore
from rayfleet.platform.spec import default_spec_path

runner = CliRunner()


def invoke(command: str, expect: int = 0):
    result = runner.invoke(bench_app, shlex.split(command), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def test_run_writes_summary_plots_and_store_row(fake_server, tmp_path):
    out, data = tmp_path / "run1", tmp_path / "data"
    invoke(
        f"run --target {fake_server.url} --rate 40 --duration 0.5 --workload synthetic"
        f" -p input_len=16 -p output_len=4 --out {out} --data-dir {data} --per-request"
        f" --metrics-url {fake_server.url}/metrics --slo-ttft-ms 5000"
    )
    summary = json.loads((out / "summary.json").read_text())
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert set(summary[key]) == {"mean", "p50", "p90", "p99"}
    assert summary["requests_ok"] == 20 and summary["requests_failed"] == 0
    assert summary["output_tokens_per_s"] > 0 and summary["requests_per_s"] > 0
    assert summary["prefix_cache"]["hit_rate"] is not None
    assert summary["run"]["model"] == "fake-model"
    assert summary["goodput"]["fraction"] == 1.0
    assert fake_server.bodies[0]["max_tokens"] == 4
    for name in ("summary.md", "latency_cdf.png", "requests.jsonl"):
        assert (out / name).stat().st_size > 0
    (entry,) = ProfileStore(data).runs()
    assert entry.run_dir == str(out.resolve()) and entry.summary["requests_ok"] == 20


def test_sweep_stops_when_saturated_and_compare(fake_server, tmp_path):
    data = tmp_path / "data"
    fake_server.ttft_s = 0.2
    common = (
        f"--target {fake_server.url} --duration 0.3 -p output_len=2 --data-dir {data}"
        f" --spec {default_spec_path()} --model tiny-llama"
    )
    invoke(
        f"run {common} --sweep 5,10,20 --stop-ttft-p90-ms 2000 --stop-min-answered 0.3"
        f" --out {tmp_path / 'a'}"
    )
    # A TTFT p90 bound below the server's TTFT saturates the first stage: the sweep ends.
    invoke(f"run {common} --sweep-geometric 5:20:2 --stop-ttft-p90-ms 100 --out {tmp_path / 'b'}")
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [s["load"] for s in a["stages"]] == [5, 10, 20]
    assert (tmp_path / "a" / "stage-02.json").exists() and (tmp_path / "a" / "sweep.png").exists()
    assert [s["load"] for s in b["stages"]] == [5]
    assert "TTFT p90" in b["stages"][0]["saturated"]
    assert a["run"]["served"]["spec_hash"] and a["run"]["served"]["router_policy"]

    listed = invoke(f"list --data-dir {data}").output
    assert a["run"]["run_id"] in listed and b["run"]["run_id"] in listed
    assert "TTFT" in invoke(f"show {a['run']['run_id']} --data-dir {data}").output
    out = tmp_path / "cmp"
    invoke(f"compare {tmp_path / 'a'} {b['run']['run_id']} --out {out} --data-dir {data}")
    assert (out / "compare.md").read_text().count("|") > 10
    assert (out / "compare_latency.png").exists() and (out / "compare_sweep.png").exists()


def test_closed_loop_multi_turn_chat(fake_server, tmp_path):
    out = tmp_path / "mt"
    invoke(
        f"run --target {fake_server.url} --concurrency 2 --duration 5 --max-requests 6"
        " -w multi-turn -p num_sessions=2 -p turns=3 -p user_len=8 -p output_len=2"
        f" --out {out} --no-save --metrics-url {fake_server.url}/missing"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_ok"] == 6
    assert summary["prefix_cache"] is None  # a metrics URL that fails doesn't fail the run
    assert summary["run"]["load"]["mode"] == "concurrency"
    assert max(len(b["messages"]) for b in fake_server.bodies) == 5  # u, a, u, a, u


def test_bad_options_fail_with_a_message(fake_server, tmp_path):
    bad_param = invoke(f"run --target {fake_server.url} --rate 1 -p nope=1 --no-save", expect=2)
    assert "nope" in bad_param.output
    no_server = invoke("run --target http://127.0.0.1:9 --rate 1 --no-save", expect=2)
    assert "cannot list models" in no_server.output
    assert (
        "not both"
        in invoke(f"run --sweep 1 --sweep-geometric 1:4:2 --data-dir {tmp_path}", 2).output
    )
    chat_as_completions = f"run --target {fake_server.url} --rate 1 -w multi-turn --api completions"
    assert "chat workload" in invoke(chat_as_completions, expect=2).output
    assert "no run" in invoke(f"show nope --data-dir {tmp_path}", expect=2).output
