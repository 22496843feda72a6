"""Comparing a RayFleet run with an inference-perf report: tolerance, TPOT mapping, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayfleet.bench.compat import (
    CompatError,
    compare,
    inference_perf_p50s,
    main,
    rayfleet_p50s,
    tpot_last_chunk,
    within_tolerance,
)
from rayfleet.bench.records import RequestRecord


@pytest.mark.parametrize(
    ("ours", "reference", "expected"),
    [
        (0.100, 0.114, True),  # 12% off
        (0.100, 0.120, False),  # 17% of 0.120 off
        (0.001, 0.0039, True),  # 2.9 ms off: the 3 ms floor wins over 15%
        (0.001, 0.0045, False),  # 3.5 ms off
        (0.050, 0.050, True),
    ],
)
def test_within_tolerance_is_15_percent_or_3_ms(ours: float, reference: float, expected: bool):
    assert within_tolerance(ours, reference) is expected


def _record(chunks: list[float], out: int | None, e2e: float, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        index=0,
        scheduled_s=0.0,
        send_s=0.0,
        max_tokens=out or len(chunks),
        ttft_s=chunks[0] if chunks else None,
        e2e_s=e2e,
        chunk_s=chunks,
        output_tokens=out,
        error_kind=None if ok else "http_5xx",
    )


def test_tpot_last_chunk_ignores_time_after_the_last_text_chunk():
    # 9 tokens in 3 chunks; [DONE] arrives 0.5 s after the last text chunk.
    record = _record([0.1, 0.3, 0.9], out=9, e2e=1.4)
    assert tpot_last_chunk(record) == pytest.approx((0.9 - 0.1) / 8)


def test_tpot_last_chunk_is_none_without_two_chunks_or_on_failure():
    assert tpot_last_chunk(_record([0.1], out=5, e2e=0.5)) is None
    assert tpot_last_chunk(_record([0.1, 0.2], out=5, e2e=0.5, ok=False)) is None


def _write_rayfleet(folder: Path, records: list[RequestRecord], ttft_p50: float) -> None:
    folder.mkdir()
    summary = {"ttft_s": {"p50": ttft_p50}, "tpot_s": {"p50": 0.02}, "e2e_s": {"p50": 1.0}}
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = (json.dumps(r.to_json()) for r in records)
    (folder / "requests.jsonl").write_text("\n".join(lines) + "\n")


def _write_inference_perf(folder: Path, ttft: float, tpot: float) -> None:
    folder.mkdir()
    latency = {
        "time_to_first_token": {"median": ttft},
        "time_per_output_token": {"median": tpot},
        "request_latency": {"median": 1.0},
    }
    (folder / "summary_lifecycle_metrics.json").write_text(
        json.dumps({"successes": {"latency": latency}})
    )


def test_reports_compare_ttft_and_inference_perf_style_tpot(tmp_path: Path):
    records = [_record([0.05, 0.45], out=5, e2e=0.9), _record([0.07, 0.47], out=5, e2e=0.9)]
    _write_rayfleet(tmp_path / "rf", records, ttft_p50=0.06)
    _write_inference_perf(tmp_path / "ip", ttft=0.062, tpot=0.1)
    rows = {
        row.label: row
        for row in compare(rayfleet_p50s(tmp_path / "rf"), inference_perf_p50s(tmp_path / "ip"))
    }
    assert rows["TTFT p50"].agrees is True
    tpot = rows["TPOT p50"]
    assert tpot.rayfleet_s == pytest.approx(0.1)  # 0.4 s / 4 gaps, not (0.9 - 0.06) / 4
    assert tpot.agrees is True
    assert rows["TPOT p50 (RayFleet's own, to [DONE])"].agrees is False
    assert main([str(tmp_path / "rf"), str(tmp_path / "ip")]) == 0


def test_main_fails_when_a_judged_metric_disagrees(tmp_path: Path):
    _write_rayfleet(tmp_path / "rf", [_record([0.05, 0.45], out=5, e2e=0.9)], ttft_p50=0.2)
    _write_inference_perf(tmp_path / "ip", ttft=0.06, tpot=0.1)
    assert main([str(tmp_path / "rf"), str(tmp_path / "ip")]) == 1


def test_missing_reports_name_the_file(tmp_path: Path):
    with pytest.raises(CompatError, match=r"summary_lifecycle_metrics\.json"):
        inference_perf_p50s(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(CompatError, match="--per-request"):
        rayfleet_p50s(tmp_path)
