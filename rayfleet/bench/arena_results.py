"""The arena's results: per-replica engine counters, load imbalance, arena.json and its plot.

Pure (no Ray). Engine counters are read from Prometheus text (Ray's metrics endpoint):
``ray_vllm_prefix_cache_{hits,queries}_total`` per ``ReplicaId``, which real vLLM engines
and the simulator both export. Queries count prompt tokens, so the per-replica query
deltas are also the prompt tokens each replica served.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rayfleet.bench.metrics import summarize
from rayfleet.bench.records import RequestRecord

HITS = "ray_vllm_prefix_cache_hits_total"
QUERIES = "ray_vllm_prefix_cache_queries_total"
RESULT_FILE = "arena.json"
PLOT_FILE = "arena.png"
ROUTER_METRICS = (
    "ttft_p50",
    "ttft_p90",
    "ttft_p99",
    "tpot_p50",
    "tpot_p99",
    "e2e_p99",
    "output_tok_s",
    "prefix_hit_rate",
    "max_over_mean_load",
)


@dataclass(frozen=True)
class ReplicaCounters:
    hits: float = 0.0
    queries: float = 0.0


Counters = dict[str, ReplicaCounters]


def parse_replica_counters(text: str, model: str | None = None) -> Counters:
    """Prefix-cache hits and queries per ReplicaId (summed over engines), one model's."""
    hits: dict[str, float] = {}
    queries: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            target = hits if sample.name == HITS else queries if sample.name == QUERIES else None
            if target is None or (model and sample.labels.get("model_name") != model):
                continue
            replica = sample.labels.get("ReplicaId", "")
            target[replica] = target.get(replica, 0.0) + sample.value
    return {r: ReplicaCounters(hits.get(r, 0.0), queries.get(r, 0.0)) for r in {*hits, *queries}}


def counters_delta(before: Counters, after: Counters) -> Counters:
    """What each replica counted in between; replicas new in ``after`` count from zero."""
    zero = ReplicaCounters()
    delta = {}
    for replica, now in after.items():
        then = before.get(replica, zero)
        delta[replica] = ReplicaCounters(now.hits - then.hits, now.queries - then.queries)
    return delta


def total_queries(counters: Counters) -> float:
    return sum(c.queries for c in counters.values())


def hit_rate(delta: Counters) -> float | None:
    queries = total_queries(delta)
    return sum(c.hits for c in delta.values()) / queries if queries > 0 else None


def max_over_mean(per_replica: Sequence[float], replicas: int) -> float | None:
    """Max over replicas of the work served / the mean; replicas that served nothing
    (and so never exported a series) count as zeros."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    if len(per_replica) > replicas:
        raise ValueError(f"{len(per_replica)} replicas reported work, but the fleet has {replicas}")
    total = sum(per_replica)
    if total <= 0:
        return None
    return max(per_replica) / (total / replicas)


def router_result(
    records: Sequence[RequestRecord], delta: Counters, replicas: int
) -> dict[str, Any]:
    """One router's row of arena.json (times in seconds) plus its detail."""
    summary = summarize(records)
    served = [c.queries for c in delta.values() if c.queries > 0]
    return {
        "ttft_p50": summary["ttft_s"]["p50"],
        "ttft_p90": summary["ttft_s"]["p90"],
        "ttft_p99": summary["ttft_s"]["p99"],
        "tpot_p50": summary["tpot_s"]["p50"],
        "tpot_p99": summary["tpot_s"]["p99"],
        "e2e_p99": summary["e2e_s"]["p99"],
        "output_tok_s": summary["output_tokens_per_s"],
        "prefix_hit_rate": hit_rate(delta),
        "max_over_mean_load": max_over_mean(served, replicas),
        "load_unit": "prompt tokens per replica (engine prefix-cache queries)",
        "prompt_tokens_per_replica": sorted(served, reverse=True),
        "requests_ok": summary["requests_ok"],
        "requests_failed": summary["requests_failed"],
        "errors": summary["errors"],
        "requests_per_s": summary["requests_per_s"],
    }


def ratios(routers: Mapping[str, Mapping[str, Any]], ours: str = "rayfleet") -> dict[str, Any]:
    """rayfleet's value / each baseline's, for the done-when checks."""
    if ours not in routers:
        return {}
    mine = routers[ours]
    out: dict[str, Any] = {}
    for name, theirs in routers.items():
        if name == ours:
            continue
        out[f"{ours}/{name}"] = {
            key: (mine[key] / theirs[key]) if mine.get(key) and theirs.get(key) else None
            for key in ("ttft_p90", "ttft_p99", "output_tok_s", "prefix_hit_rate")
        }
    return out


def arena_document(
    routers: Mapping[str, Mapping[str, Any]], oracle_hit_rate: float, extra: Mapping[str, Any]
) -> dict[str, Any]:
    document = {"routers": dict(routers), "oracle_hit_rate": oracle_hit_rate, **extra}
    document["ratios"] = ratios(routers)
    hit = (routers.get("rayfleet") or {}).get("prefix_hit_rate")
    document["rayfleet_hit_rate_over_oracle"] = (
        hit / oracle_hit_rate if hit and oracle_hit_rate else None
    )
    return document


def write_arena(out: Path, document: Mapping[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULT_FILE
    path.write_text(json.dumps(document, indent=2) + "\n")
    plot_arena(document, out / PLOT_FILE)
    return path


def plot_arena(document: Mapping[str, Any], path: Path) -> None:
    """TTFT percentiles, output tok/s and hit rate (with the oracle) per router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routers = document["routers"]
    names = list(routers)
    fig, (ttft, tput, hits) = plt.subplots(1, 3, figsize=(14, 4.2))
    width = 0.8 / 3
    for i, key in enumerate(("ttft_p50", "ttft_p90", "ttft_p99")):
        xs = [n + (i - 1) * width for n in range(len(names))]
        ttft.bar(xs, [routers[n][key] or 0 for n in names], width, label=key.replace("_", " "))
    ttft.set_title("TTFT (s)")
    ttft.legend()
    tput.bar(names, [routers[n]["output_tok_s"] or 0 for n in names], color="tab:green")
    tput.set_title("output tokens/s")
    hits.bar(names, [routers[n]["prefix_hit_rate"] or 0 for n in names], color="tab:purple")
    hits.axhline(document["oracle_hit_rate"], color="black", linestyle="--", label="oracle")
    hits.set_ylim(0, 1)
    hits.set_title("prefix-cache hit rate")
    hits.legend()
    for axis in (ttft, tput, hits):
        axis.set_xticks(range(len(names)), names)
    workload = (document.get("workload") or {}).get("name", "")
    fig.suptitle(f"arena: {workload}, {document.get('replicas', '?')} replicas")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
