"""Load sweeps: a list of rates (or concurrencies), stopped once the server saturates."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rayfleet.bench.loadgen import LoadConfig, OnRecord, RunResult, run_load
from rayfleet.bench.metrics import Slo, prefix_cache_delta, summarize
from rayfleet.bench.records import RequestSpec


def parse_sweep(text: str) -> list[float]:
    """`1,2,4` (a list) or `START:STOP:STEP` (linear, STOP included)."""
    text = text.strip()
    try:
        if ":" not in text:
            loads = [float(x) for x in text.split(",") if x.strip()]
        else:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            count = int((stop - start) / step + 1e-9) + 1
            loads = [round(start + i * step, 9) for i in range(count)]
    except ValueError:
        raise ValueError(f"bad sweep {text!r}: use 1,2,4 or START:STOP:STEP") from None
    return _checked(loads, text)


def parse_geometric(text: str) -> list[float]:
    """`START:STOP:FACTOR`, e.g. 1:64:2 → 1, 2, 4, … 64."""
    try:
        start, stop, factor = (float(x) for x in text.strip().split(":"))
    except ValueError:
        raise ValueError(f"bad geometric sweep {text!r}: use START:STOP:FACTOR") from None
    if start <= 0 or factor <= 1:
        raise ValueError(f"geometric sweep {text!r} needs START > 0 and FACTOR > 1")
    loads = []
    value = start
    while value <= stop * (1 + 1e-9):
        loads.append(round(value, 9))
        value *= factor
    return _checked(loads, text)


def _checked(loads: list[float], text: str) -> list[float]:
    if not loads or any(x <= 0 for x in loads):
        raise ValueError(f"sweep {text!r} must list positive loads")
    return loads


@dataclass(frozen=True)
class StopRule:
    """When a stage counts as saturated, ending the sweep."""

    min_achieved_fraction: float = 0.9  # answered requests/s over offered (open loop only)
    max_ttft_p90_s: float | None = None
    max_error_fraction: float = 0.1


@dataclass
class Stage:
    index: int
    load: float  # requests/s offered, or concurrency
    result: RunResult
    summary: dict[str, Any]
    saturated: str | None  # why this stage counts as saturated, if it does


def saturation(summary: dict[str, Any], config: LoadConfig, rule: StopRule) -> str | None:
    total = summary["requests_total"]
    if total == 0:
        return "no requests were sent"
    failed = summary["requests_failed"] / total
    if failed > rule.max_error_fraction:
        return f"{failed:.0%} of requests failed"
    achieved = summary["completion_rate_per_s"]
    rate = config.rate
    if rate is not None and achieved is not None and achieved < rule.min_achieved_fraction * rate:
        return f"answered {achieved:.2f} of {rate:g} req/s offered"
    ttft_p90 = summary["ttft_s"]["p90"]
    if rule.max_ttft_p90_s is not None and ttft_p90 is not None and ttft_p90 > rule.max_ttft_p90_s:
        return f"TTFT p90 {ttft_p90 * 1000:.0f} ms is above {rule.max_ttft_p90_s * 1000:.0f} ms"
    return None


SpecsForStage = Callable[[int], Iterable[RequestSpec]]
Scrape = Callable[[], dict[str, float] | None]  # prefix-cache counters, if any


async def run_sweep(
    base: LoadConfig,
    loads: list[float],
    specs_for_stage: SpecsForStage,
    rule: StopRule | None = None,
    slo: Slo | None = None,
    on_record: OnRecord | None = None,
    on_stage: Callable[[Stage], None] | None = None,
    scrape: Scrape | None = None,
) -> list[Stage]:
    """Run one stage per load (a rate if ``base`` has one, else a concurrency)."""
    rule = rule or StopRule()
    stages: list[Stage] = []
    for index, load in enumerate(loads):
        if base.rate is not None:
            config = dataclasses.replace(base, rate=load, stage=index)
        else:
            config = dataclasses.replace(base, concurrency=int(load), stage=index)
        before = scrape() if scrape else None
        result = await run_load(config, specs_for_stage(index), on_record)
        cache = prefix_cache_delta(before, scrape() if scrape else None)
        summary = summarize(result.records, slo, cache)
        stage = Stage(index, load, result, summary, saturation(summary, config, rule))
        stages.append(stage)
        if on_stage is not None:
            on_stage(stage)
        if stage.saturated:
            break
    return stages
