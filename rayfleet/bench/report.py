"""Run reports: summary.md, comparison tables, and PNG plots.

Plots use matplotlib's object API (Figure, no pyplot), so no GUI backend or
global state is involved: Agg renders the PNGs. matplotlib is imported only when
plotting, so `rayfleet` commands start fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rayfleet.bench.metrics import itls, tpot
from rayfleet.bench.records import RequestRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LATENCY_ROWS = (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("ITL", "itl_s"), ("E2E", "e2e_s"))
STATS = ("mean", "p50", "p90", "p99")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_records(path: Path) -> list[RequestRecord]:
    with path.open() as lines:
        return [RequestRecord.from_json(json.loads(line)) for line in lines if line.strip()]


def write_records(path: Path, records: Sequence[RequestRecord]) -> None:
    with path.open("w") as out:
        for record in records:
            out.write(json.dumps(record.to_json()) + "\n")


def fmt_ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows shared by summary.md, `show` and `compare`."""
    cache = summary.get("prefix_cache") or {}
    goodput = summary.get("goodput") or {}
    rows = [
        ("requests ok / failed", f"{summary['requests_ok']} / {summary['requests_failed']}"),
        ("requests/s", _num(summary["requests_per_s"])),
        ("output tokens/s", _num(summary["output_tokens_per_s"], 1)),
        ("total tokens/s", _num(summary["total_tokens_per_s"], 1)),
    ]
    for label, key in LATENCY_ROWS:
        values = summary[key]
        shown = " / ".join(fmt_ms(values[stat]) for stat in STATS)
        rows.append((f"{label} ms (mean/p50/p90/p99)", shown))
    rows.append(("goodput (share within SLO)", _num(goodput.get("fraction"))))
    rows.append(("prefix-cache hit rate", _num(cache.get("hit_rate"))))
    errors = {k: v for k, v in (summary.get("errors") or {}).items() if v}
    rows.append(("errors", ", ".join(f"{k}: {v}" for k, v in errors.items()) or "none"))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(summary: Mapping[str, Any], stages: Sequence[Mapping[str, Any]]) -> str:
    run = summary.get("run", {})
    parts = [
        f"# Benchmark {run.get('run_id', '')}",
        "",
        f"- target: {run.get('target')} — model `{run.get('model')}`",
        f"- workload: `{json.dumps(run.get('workload'))}`",
        f"- load: `{json.dumps(run.get('load'))}`",
        f"- served: `{json.dumps(run.get('served', {}).get('accelerator'))}`"
        f" on `{run.get('served', {}).get('backend')}`,"
        f" router `{run.get('served', {}).get('router_policy')}`",
        "",
        _table(["metric", "value"], summary_rows(summary)),
    ]
    if len(stages) > 1:
        parts += ["", "## Sweep", "", _stage_table(stages)]
    for warning in run.get("warnings", []):
        parts += ["", f"> warning: {warning}"]
    return "\n".join(parts) + "\n"


def _stage_table(stages: Sequence[Mapping[str, Any]]) -> str:
    header = ["load", "req/s", "out tok/s", "TTFT p50", "TTFT p90", "TPOT p50", "saturated"]
    rows = [
        [
            f"{s['load']:g}",
            _num(s["requests_per_s"]),
            _num(s["output_tokens_per_s"], 1),
            fmt_ms(s["ttft_s"]["p50"]),
            fmt_ms(s["ttft_s"]["p90"]),
            fmt_ms(s["tpot_s"]["p50"]),
            s.get("saturated") or "",
        ]
        for s in stages
    ]
    return _table(header, rows)


def compare_markdown(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """A side-by-side table, one column per run."""
    names = list(summaries)
    columns = [dict(summary_rows(s)) for s in summaries.values()]
    labels = list(columns[0])
    rows = [[label, *(column[label] for column in columns)] for label in labels]
    return "# Comparison\n\n" + _table(["metric", *names], rows) + "\n"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _latency_samples(records: Sequence[RequestRecord]) -> dict[str, list[float]]:
    ok = [r for r in records if r.ok]
    return {
        "TTFT": [r.ttft_s for r in ok if r.ttft_s is not None],
        "TPOT": [v for r in ok if (v := tpot(r)) is not None],
        "ITL": [gap for r in ok for gap in itls(r)],
        "E2E": [r.e2e_s for r in ok if r.e2e_s is not None],
    }


def plot_latency_cdfs(series: Mapping[str, Sequence[RequestRecord]], path: Path) -> None:
    """One panel per latency, one CDF line per labelled set of records."""
    figure = _figure(11, 8)
    axes = figure.subplots(2, 2).flatten()
    for label, records in series.items():
        for ax, values in zip(axes, _latency_samples(records).values(), strict=True):
            if values:
                xs = np.sort(np.asarray(values) * 1000)
                ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=label)
    for ax, (name, _) in zip(axes, LATENCY_ROWS, strict=True):
        unit = "gaps" if name == "ITL" else "requests"
        ax.set(title=f"{name} CDF", xlabel="ms", ylabel=f"share of {unit}", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    figure.savefig(path, dpi=100)


def plot_sweep(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> None:
    """Latency against output throughput, one curve per run (its sweep's stages)."""
    figure = _figure(11, 4.5)
    axes = figure.subplots(1, 2)
    for label, stages in curves.items():
        throughput = [s["output_tokens_per_s"] for s in stages]
        for ax, key in zip(axes, ("ttft_s", "tpot_s"), strict=True):
            for stat, style in (("p50", "o-"), ("p90", "s--")):
                ys = [_ms_or_nan(s[key][stat]) for s in stages]
                ax.plot(throughput, ys, style, label=f"{label} {stat}")
    for ax, name in zip(axes, ("TTFT", "TPOT"), strict=True):
        ax.set(title=f"{name} vs throughput", xlabel="output tokens/s", ylabel=f"{name} ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.savefig(path, dpi=100)


def _ms_or_nan(value: float | None) -> float:
    return float("nan") if value is None else value * 1000


def plot_compare_bars(summaries: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """p50 and p90 of each latency, grouped by run."""
    figure = _figure(12, 4)
    axes = figure.subplots(1, len(LATENCY_ROWS))
    names = list(summaries)
    positions = np.arange(len(names))
    for ax, (label, key) in zip(axes, LATENCY_ROWS, strict=True):
        for offset, stat in ((-0.2, "p50"), (0.2, "p90")):
            values = [_ms_or_nan(s[key][stat]) for s in summaries.values()]
            ax.bar(positions + offset, values, width=0.4, label=stat)
        ax.set_xticks(positions, names, rotation=30, ha="right", fontsize="small")
        ax.set(title=f"{label} ms")
        ax.legend(fontsize="small")
    figure.savefig(path, dpi=100)
