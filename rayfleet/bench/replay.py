"""Predict a held-out run: replay its own schedule and prompts through a calibrated engine.

``rayfleet bench calibrate`` fits the step costs on one run; this module replays
another run's requests (same arrival times, same prompts rebuilt from its workload
and seed, same output lengths) through one simulated engine in virtual time and
compares the replay's TTFT/TPOT percentiles with the measured ones. Unlike
``predict.simulate`` (a rate and replayed lengths, random prompts), shared prefixes
reach the simulator's prefix cache, so a shared-prefix run is predicted as served.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rayfleet.bench.metrics import stats, tpot
from rayfleet.bench.records import RequestRecord
from rayfleet.bench.sim.calibrate import load_records
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.virtual import run_virtual

HELD_OUT_METRICS = ("ttft_p50_s", "tpot_p50_s", "ttft_p90_s", "tpot_p90_s")


@dataclass(frozen=True)
class HeldOut:
    """A run's measured latencies against the simulator's replay of the same requests."""

    requests: int
    prompts: str  # "regenerated" (the run's workload and seed) or "random" (lengths only)
    sim_hit_rate: float  # prefix-cache hits / prompt tokens in the replay
    measured: dict[str, float | None]
    predicted: dict[str, float | None]
    errors: dict[str, float]  # |predicted - measured| / measured


def replay_records(
    params: SimParams,
    overhead_s: float,
    records: Sequence[RequestRecord],
    prompts: Sequence[Sequence[int]],
) -> tuple[list[RequestRecord], int]:
    """The records one simulated engine would have produced, and its prefix-hit tokens.

    Each request arrives when the run scheduled it and asks for its ``max_tokens``
    (the bench sets ignore_eos, so that is what the engine generated); ``overhead_s``
    (the fit's client/proxy time) is added to every latency, as in ``simulate``.
    """
    sims = [
        SimRequest(f"r{r.index}", prompt, max(1, r.max_tokens), arrival_s=r.scheduled_s)
        for r, prompt in zip(records, prompts, strict=True)
    ]
    run_virtual(SimEngineCore(params), sims)
    out = []
    for record, sim in zip(records, sims, strict=True):
        start = sim.arrival_s - overhead_s
        out.append(
            replace(
                record,
                send_s=record.scheduled_s,
                ttft_s=sim.token_times[0] - start,
                e2e_s=sim.token_times[-1] - start,
                chunk_s=[t - start for t in sim.token_times],
                input_tokens=sim.prompt_len,
                output_tokens=len(sim.token_times),
                status=200,
                error_kind=None,
                error=None,
            )
        )
    return out, sum(s.num_cached_tokens for s in sims)


def run_prompts(
    summary: dict[str, Any], records: Sequence[RequestRecord]
) -> tuple[list[list[int]], str]:
    """Token ids of each record's prompt, rebuilt from the run's workload and seed.

    Shared prefixes matter (the simulator's prefix cache must see them), so prompts are
    regenerated exactly as ``bench run`` made them (``runs.stage_workload``; request i is
    the i-th of its stage's stream). Without the workload or tokenizer, prompts fall back to
    random tokens of the measured lengths (no cache hits), and the second value says so.
    """
    try:
        by_stage = _regenerated(summary, records)
    except (KeyError, TypeError, ValueError, OSError):
        by_stage = None
    prompts, how = [], "regenerated" if by_stage is not None else "random"
    rng = np.random.default_rng(0)
    for record in records:
        length = record.input_tokens or record.expected_input_tokens or 1
        if by_stage is None:
            prompts.append(rng.integers(2000, 30000, size=length).tolist())
            continue
        ids = list(by_stage[record.stage][record.index])
        # Align with the server's count (special tokens): pad or cut the end, which keeps
        # the shared prefixes intact.
        pad = rng.integers(2000, 30000, size=max(0, length - len(ids))).tolist()
        prompts.append((ids + pad)[:length] if record.input_tokens else ids)
    return prompts, how


def _regenerated(
    summary: dict[str, Any], records: Sequence[RequestRecord]
) -> dict[int, list[tuple[int, ...]]]:
    # Imported here: runs pulls in the HTTP client stack, tokens the tokenizers.
    from rayfleet.bench.runs import make_workload, stage_workload
    from rayfleet.bench.sim.tokens import file_tokenizer

    meta = summary["run"]
    described = dict(meta["workload"])
    name, seed = described.pop("name"), int(described.pop("seed"))
    workload = make_workload(name, described, meta["tokenizer"], seed)
    tokenizer = file_tokenizer(meta["tokenizer"])
    counts: dict[int, int] = {}
    for record in records:
        counts[record.stage] = max(counts.get(record.stage, 0), record.index + 1)
    by_stage = {}
    for stage, count in counts.items():
        specs = stage_workload(workload, stage).take(count)
        by_stage[stage] = [
            tokenizer.encode(s.prompt)
            if s.prompt is not None
            else tokenizer.encode_chat(s.messages or ())
            for s in specs
        ]
    return by_stage


def predict_run(params: SimParams, overhead_s: float, run_dir: str | Path) -> HeldOut:
    """Replay a stored run (``requests.jsonl`` + ``summary.json``) and score the replay.

    Each stage is replayed on a fresh engine (stages use fresh seeds, so they share no
    prefixes); the p50/p90s pool the answered requests of all stages, as measured.
    """
    folder = Path(run_dir)
    if not (folder / "requests.jsonl").is_file():
        raise ValueError(f"{folder} has no requests.jsonl (run bench with --per-request)")
    summary = json.loads((folder / "summary.json").read_text())
    # Failed requests loaded the engine too, so all are replayed; only answered ones
    # are compared.
    sent = load_records(folder)
    answered = [r for r in sent if r.ok]
    if not answered:
        raise ValueError(f"{folder}: no answered requests to compare")
    prompts, how = run_prompts(summary, sent)
    replayed: dict[tuple[int, int], RequestRecord] = {}
    hits = 0
    for stage in sorted({r.stage for r in sent}):
        picked = [(r, p) for r, p in zip(sent, prompts, strict=True) if r.stage == stage]
        stage_records, stage_hits = replay_records(
            params, overhead_s, [r for r, _ in picked], [p for _, p in picked]
        )
        replayed.update(((r.stage, r.index), r) for r in stage_records)
        hits += stage_hits
    predicted = [replayed[r.stage, r.index] for r in answered]
    measured, guessed = _latencies(answered), _latencies(predicted)
    errors = {
        name: abs(got - want) / want
        for name in HELD_OUT_METRICS
        if (want := measured[name]) and (got := guessed[name]) is not None
    }
    tokens = sum(len(p) for p in prompts)
    return HeldOut(len(answered), how, hits / tokens if tokens else 0.0, measured, guessed, errors)


def _latencies(rows: Sequence[RequestRecord]) -> dict[str, float | None]:
    """The bench's own definitions (``metrics.tpot``), so both sides are measured alike."""
    ttft = stats(r.ttft_s for r in rows if r.ttft_s is not None)
    per_token = stats(v for r in rows if (v := tpot(r)) is not None)
    return {
        "ttft_p50_s": ttft["p50"],
        "tpot_p50_s": per_token["p50"],
        "ttft_p90_s": ttft["p90"],
        "tpot_p90_s": per_token["p90"],
    }
