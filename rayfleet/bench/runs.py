"""One benchmark run end to end: plan it, run its stages, write its outputs, store it.

The CLI only parses options into a RunPlan and shows progress; everything else
lives here so it can be driven from tests and other tools too.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from rayfleet.bench import report
from rayfleet.bench.loadgen import LoadConfig, OnRecord
from rayfleet.bench.metrics import Slo, scrape_prefix_counters
from rayfleet.bench.records import RequestSpec
from rayfleet.bench.served import (
    ServedError,
    fetch_models,
    pick_model,
    served_from_server,
    served_from_spec,
    spec_model,
    tokenizer_path,
)
from rayfleet.bench.store import ProfileStore, RunEntry, Served
from rayfleet.bench.sweep import Stage, StopRule, run_sweep
from rayfleet.bench.text import TextMaker, load_tokenizer
from rayfleet.bench.workloads import Workload, build_workload
from rayfleet.platform.spec import Spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What to run: resolved from the command line, before anything is sent."""

    base: LoadConfig  # the first stage's config; stages vary rate or concurrency
    loads: list[float]
    workload: Workload
    served: Served
    tokenizer: str
    slo: Slo = field(default_factory=Slo)
    stop: StopRule = field(default_factory=StopRule)
    metrics_url: str | None = None

    @property
    def sweeps_rate(self) -> bool:
        return self.base.rate is not None


def new_run_id(workload: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{workload}-{secrets.token_hex(2)}"


def resolve_served(
    target: str,
    model: str | None,
    spec: Spec | None,
    api_key: str | None,
    tokenizer: str | None,
) -> tuple[str, Served, str]:
    """The model id, what serves it, and the tokenizer to build prompts with."""
    try:
        models = fetch_models(target, api_key)
    except ServedError:
        if model is None:
            raise
        models = []  # a server without /v1/models still works when --model is given
    info = pick_model(models, model) if models or model is None else {"id": model}
    model_id = str(info["id"])
    if spec is not None:
        served = served_from_spec(spec, model_id)
        chosen = tokenizer or str(tokenizer_path(spec_model(spec, model_id), info))
    else:
        served = served_from_server(models, model_id)
        chosen = tokenizer or str(tokenizer_path(None, info))
    return model_id, served, chosen


def make_workload(name: str, params: dict[str, Any], tokenizer: str, seed: int) -> Workload:
    return build_workload(name, params, TextMaker(load_tokenizer(tokenizer)), seed)


def request_budget(config: LoadConfig) -> int | None:
    """How many requests a stage can send at most, when that is knowable up front."""
    bounds = [config.max_requests] if config.max_requests is not None else []
    if config.rate is not None:
        expected = config.rate * config.duration_s
        # Poisson counts vary; 6 standard deviations above the mean never bind in practice.
        slack = 0 if config.arrival == "constant" else 6 * math.sqrt(expected) + 10
        bounds.append(math.ceil(expected + slack))
    return min(bounds) if bounds else None


def stage_config(plan: RunPlan, index: int) -> LoadConfig:
    load = plan.loads[index]
    if plan.sweeps_rate:
        return dataclasses.replace(plan.base, rate=load, stage=index)
    return dataclasses.replace(plan.base, concurrency=int(load), stage=index)


def stage_workload(workload: Workload, index: int) -> Workload:
    """Stage ``index``'s workload: its own seed, so no stage hits the cache of the one before."""
    return dataclasses.replace(workload, seed=workload.seed + index)


def stage_specs(plan: RunPlan, index: int) -> Iterable[RequestSpec]:
    """The stage's requests, made up front when its size is known so that building
    prompts never delays a send."""
    workload = stage_workload(plan.workload, index)
    budget = request_budget(stage_config(plan, index))
    if budget is None:
        return workload.requests()
    return list(itertools.islice(workload.requests(), budget))


async def execute(
    plan: RunPlan,
    on_record: OnRecord | None = None,
    on_stage: Callable[[Stage], None] | None = None,
) -> list[Stage]:
    metrics_url = plan.metrics_url

    def scrape() -> dict[str, float] | None:
        if not metrics_url:
            return None
        try:
            counters = scrape_prefix_counters(metrics_url)
        except httpx.HTTPError as error:  # metrics are a bonus: never fail the run
            log.warning("cannot scrape %s: %s", metrics_url, error)
            return None
        if counters is None:
            log.warning("no prefix-cache counters at %s", metrics_url)
        return counters

    return await run_sweep(
        plan.base,
        plan.loads,
        lambda index: stage_specs(plan, index),
        rule=plan.stop,
        slo=plan.slo,
        on_record=on_record,
        on_stage=on_stage,
        scrape=scrape if metrics_url else None,
    )


def stage_summary(stage: Stage) -> dict[str, Any]:
    result = stage.result
    return {
        "stage": stage.index,
        "load": stage.load,
        "saturated": stage.saturated,
        "stopped_by": result.stopped_by,
        "generator_cpu_share": result.cpu_share,
        "warnings": result.warnings,
        **stage.summary,
    }


def selected_stage(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's headline: the highest load that did not saturate (else the first)."""
    fine = [s for s in stages if not s["saturated"]]
    return fine[-1] if fine else stages[0]


def run_metadata(plan: RunPlan, run_id: str, started: datetime) -> dict[str, Any]:
    base = plan.base
    load = {
        "mode": "rate" if plan.sweeps_rate else "concurrency",
        "arrival": base.arrival if plan.sweeps_rate else "closed-loop",
        "loads": plan.loads,
        "duration_s": base.duration_s,
        "max_requests": base.max_requests,
        "request_timeout_s": base.request_timeout_s,
        "concurrency_cap": base.concurrency if plan.sweeps_rate else None,
        "seed": base.seed,
        "api": base.api,
    }
    return {
        "run_id": run_id,
        "created_at": started.isoformat(timespec="seconds"),
        "target": base.target,
        "model": base.model,
        "tokenizer": plan.tokenizer,
        "workload": plan.workload.describe(),
        "load": load,
        "served": dataclasses.asdict(plan.served),
        "slo": dataclasses.asdict(plan.slo),
    }


def write_outputs(
    out_dir: Path,
    meta: dict[str, Any],
    stages: list[Stage],
    per_request: bool,
) -> dict[str, Any]:
    """summary.json (+ stage-N.json for sweeps), summary.md, plots, requests.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [stage_summary(s) for s in stages]
    headline = selected_stage(summaries)
    warnings = sorted({w for s in summaries for w in s["warnings"]})
    meta = {**meta, "warnings": warnings, "selected_stage": headline["stage"]}
    summary = {**headline, "run": meta, "stages": summaries}
    report.write_json(out_dir / "summary.json", summary)
    if len(stages) > 1:
        for item in summaries:
            report.write_json(out_dir / f"stage-{item['stage']:02d}.json", item)
        curve = {meta["run_id"]: summaries}
        report.plot_sweep(curve, out_dir / "sweep.png")
    if per_request:
        records = [r for s in stages for r in s.result.records]
        report.write_records(out_dir / "requests.jsonl", records)
    (out_dir / "summary.md").write_text(report.summary_markdown(summary, summaries))
    series = {f"load {s.load:g}": s.result.records for s in stages}
    report.plot_latency_cdfs(series, out_dir / "latency_cdf.png")
    return summary


def store_run(store: ProfileStore, summary: dict[str, Any], out_dir: Path) -> RunEntry:
    meta = summary["run"]
    headline = {k: v for k, v in summary.items() if k not in ("run", "stages")}
    entry = RunEntry(
        run_id=meta["run_id"],
        created_at=meta["created_at"],
        run_dir=str(out_dir.resolve()),
        target=meta["target"],
        served=Served(**meta["served"]),
        workload=meta["workload"],
        load=meta["load"],
        summary=headline,
        stages=summary["stages"],
    )
    store.save(entry)
    return entry
