"""The load generator against the fake server: timings, errors and bounds."""

from __future__ import annotations

import statistics
import time

import pytest

from rayfleet.bench.loadgen import (
    LoadConfig,
    RunResult,
    _self_checks,
    arrival_offsets,
    request_body,
    run_load,
)
from rayfleet.bench.metrics import itls, summarize
from rayfleet.bench.records import RequestRecord, RequestSpec

TOLERANCE_S = 0.03  # a shared 2-core machine: generous, still far below the delays


def config(server, **overrides) -> LoadConfig:
    values = {"target": server.url, "model": "fake-model", "rate": 20.0, "duration_s": 5.0}
    return LoadConfig(**{**values, **overrides})


def prompts(*texts: str, max_tokens: int = 5) -> list[RequestSpec]:
    return [RequestSpec(prompt=t, max_tokens=max_tokens) for t in texts]


async def test_ttft_and_itl_match_server_delays(fake_server):
    result = await run_load(config(fake_server, max_requests=6), prompts(*["a b c"] * 6))
    assert all(r.ok for r in result.records), [r.error for r in result.records]
    ttfts = [r.ttft_s for r in result.records]
    gaps = [gap for r in result.records for gap in itls(r)]
    assert statistics.median(ttfts) == pytest.approx(fake_server.ttft_s, abs=TOLERANCE_S)
    assert statistics.median(gaps) == pytest.approx(fake_server.itl_s, abs=TOLERANCE_S)
    assert all(len(r.chunk_s) == 5 for r in result.records)
    assert all(r.input_tokens == 3 and r.output_tokens == 5 for r in result.records)
    tpot = summarize(result.records)["tpot_s"]["p50"]
    assert tpot == pytest.approx(fake_server.itl_s, abs=TOLERANCE_S)


async def test_chat_ttft_skips_the_role_only_chunk(fake_server):
    fake_server.ttft_s = 0.1
    spec = RequestSpec(messages=({"role": "user", "content": "hi there"},), max_tokens=3)
    result = await run_load(config(fake_server, max_requests=1), [spec])
    (record,) = result.records
    assert record.ok and record.ttft_s == pytest.approx(0.1, abs=TOLERANCE_S)
    assert fake_server.bodies[0]["messages"] == [{"role": "user", "content": "hi there"}]
    assert fake_server.bodies[0]["stream_options"] == {"include_usage": True}


async def test_errors_are_classified(fake_server):
    texts = ["FAIL400", "FAIL500", "HANG", "BREAK", "ERRCHUNK", "fine"]
    started = time.perf_counter()
    result = await run_load(config(fake_server, rate=100.0, request_timeout_s=0.5), prompts(*texts))
    assert time.perf_counter() - started < 3
    kinds = {t: r.error_kind for t, r in zip(texts, result.records, strict=True)}
    assert kinds == {
        "FAIL400": "http_4xx",
        "FAIL500": "http_5xx",
        "HANG": "timeout",
        "BREAK": "stream_error",
        "ERRCHUNK": "stream_error",
        "fine": None,
    }
    assert result.records[0].status == 400
    summary = summarize(result.records)
    assert summary["requests_failed"] == 5 and summary["errors"]["stream_error"] == 2


async def test_connection_refused_is_a_connection_error():
    cfg = LoadConfig(target="http://127.0.0.1:9", model="m", rate=50.0, duration_s=1.0)
    result = await run_load(cfg, prompts("a"))
    assert result.records[0].error_kind == "connection"


async def test_max_requests_bounds_the_run(fake_server):
    result = await run_load(config(fake_server, rate=200.0, max_requests=4), prompts(*["a"] * 50))
    assert len(result.records) == 4 and result.stopped_by == "max_requests"


async def test_duration_bounds_sending(fake_server):
    started = time.perf_counter()
    result = await run_load(
        config(fake_server, rate=20.0, duration_s=0.5), prompts(*["a"] * 1000, max_tokens=2)
    )
    assert result.stopped_by == "duration"
    assert len(result.records) == 10  # constant arrivals at 0, 0.05, … 0.45 s
    assert time.perf_counter() - started < 2
    assert 0 < result.cpu_share < 5


async def test_closed_loop_keeps_concurrency(fake_server):
    cfg = LoadConfig(
        target=fake_server.url, model="m", concurrency=3, duration_s=5.0, max_requests=9
    )
    result = await run_load(cfg, prompts(*["a"] * 20, max_tokens=3))
    assert len(result.records) == 9 and all(r.ok for r in result.records)
    assert fake_server.max_in_flight == 3


async def test_session_turns_are_sent_one_after_another(fake_server):
    specs = [RequestSpec(prompt="a", max_tokens=4, session_id="s", turn=t) for t in range(3)]
    result = await run_load(config(fake_server, rate=100.0), specs)
    ends = [r.send_s + r.e2e_s for r in result.records]
    sends = [r.send_s for r in result.records]
    assert sends[1] >= ends[0] and sends[2] >= ends[1]
    assert fake_server.max_in_flight == 1


def test_poisson_arrivals_are_seeded_and_average_the_rate():
    cfg = LoadConfig(target="x", model="m", rate=10.0, arrival="poisson", seed=3)
    offsets = [o for o, _ in zip(arrival_offsets(cfg), range(2000), strict=False)]
    again = [o for o, _ in zip(arrival_offsets(cfg), range(2000), strict=False)]
    assert offsets == again
    assert offsets[-1] / 2000 == pytest.approx(0.1, rel=0.1)


def test_request_body_shapes():
    cfg = LoadConfig(target="x", model="m", rate=1.0)
    path, body = request_body(cfg, RequestSpec(prompt="p", max_tokens=7, ignore_eos=False))
    assert path == "/v1/completions" and body["prompt"] == "p" and "ignore_eos" not in body
    chat_cfg = LoadConfig(target="x", model="m", rate=1.0, api="chat")
    path, body = request_body(chat_cfg, RequestSpec(prompt="p", max_tokens=7))
    assert path == "/v1/chat/completions" and body["messages"][0]["content"] == "p"
    assert body["ignore_eos"] is True and body["stream"] is True


async def test_rate_with_a_concurrency_cap(fake_server):
    result = await run_load(config(fake_server, rate=200.0, concurrency=2), prompts(*["a"] * 6))
    assert all(r.ok for r in result.records) and fake_server.max_in_flight == 2


def test_late_sends_are_flagged():
    cfg = LoadConfig(target="x", model="m", rate=10.0)
    records = [
        RequestRecord(index=i, scheduled_s=i * 0.1, send_s=i * 0.1 + 0.2, max_tokens=1)
        for i in range(10)
    ]
    result = RunResult(cfg, records, started_at=0, wall_s=1, cpu_share=0.9, stopped_by="duration")
    messages = _self_checks(result)
    assert any("CPU" in m for m in messages) and any("late" in m for m in messages)
