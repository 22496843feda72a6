"""`rayfleet profiles`: stored measurements per fleet configuration, with costs and plots."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rayfleet.bench.cli import DataDir
from rayfleet.bench.costs import PriceError, PriceTable, load_prices
from rayfleet.bench.profiles import FleetConfig, Point, measured_points, rate_runs
from rayfleet.bench.report import fmt_ms
from rayfleet.bench.store import ProfileStore

profiles_app = typer.Typer(
    help="Measured profiles: throughput, latency and cost per configuration.",
    no_args_is_help=True,
)
console = Console()

Prices = Annotated[
    Path | None, typer.Option(help="Price table YAML (default: the packaged examples).")
]
ModelOpt = Annotated[str | None, typer.Option(help="Only this model.")]


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def prices_or_exit(path: Path | None) -> PriceTable:
    try:
        return load_prices(path)
    except PriceError as error:
        raise fail(str(error)) from None


def money(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"${value:.{digits}f}"


def configurations(data_dir: Path | None, model: str | None) -> dict[FleetConfig, list[Point]]:
    grouped = measured_points(rate_runs(ProfileStore(data_dir), model))
    return dict(sorted(grouped.items(), key=lambda item: (item[0].model, item[0].label)))


def point_row(point: Point, prices: PriceTable) -> dict[str, Any]:
    """One point as a flat record (CSV, JSON, tables)."""
    config = point.config
    hourly, per_out, per_in = point.costs(prices)
    return {
        "model": config.model,
        "configuration": config.label,
        "accelerator": config.accelerator,
        "layout": config.layout,
        "router": config.router,
        "workload": config.workload,
        "load_req_s": point.load,
        "requests_per_s": point.requests_per_s,
        "input_tokens_per_s": point.input_tokens_per_s,
        "output_tokens_per_s": point.output_tokens_per_s,
        "ttft_p90_s": point.ttft_p90_s,
        "tpot_p90_s": point.tpot_p90_s,
        "saturated": point.saturated,
        "usd_per_hour": hourly,
        "usd_per_million_output": per_out,
        "usd_per_million_input": per_in,
        "predicted": point.predicted,
        "source": point.source,
    }


def points_table(points: Sequence[Point], prices: PriceTable, title: str) -> Table:
    table = Table(
        "load req/s",
        "req/s",
        "out tok/s",
        "TTFT p90 ms",
        "TPOT p90 ms",
        "$/M out",
        "$/M in",
        "saturated",
        "source",
        title=title,
    )
    for point in points:
        _, per_out, per_in = point.costs(prices)
        table.add_row(
            f"{point.load:g}",
            f"{point.requests_per_s:.2f}",
            f"{point.output_tokens_per_s:.1f}",
            fmt_ms(point.ttft_p90_s),
            fmt_ms(point.tpot_p90_s),
            money(per_out),
            money(per_in, 4),
            point.saturated or "",
            point.source,
        )
    return table


@profiles_app.command("list")
def list_profiles(model: ModelOpt = None, prices: Prices = None, data_dir: DataDir = None) -> None:
    """Configurations with stored rate sweeps: their range, best throughput and cost."""
    table_prices = prices_or_exit(prices)
    table = Table(
        "#",
        "model",
        "configuration",
        "workload",
        "stages",
        "max unsaturated req/s",
        "best out tok/s",
        "$/hour",
        "$/M out at best",
    )
    for number, (config, points) in enumerate(configurations(data_dir, model).items(), 1):
        fine = [p for p in points if p.saturated is None] or points
        best = max(fine, key=lambda p: p.output_tokens_per_s)
        hourly, per_out, _ = best.costs(table_prices)
        table.add_row(
            str(number),
            config.model,
            config.label,
            config.workload,
            str(len(points)),
            f"{max(p.load for p in fine):g}",
            f"{best.output_tokens_per_s:.1f}",
            money(hourly),
            money(per_out),
        )
    console.print(table)


def _select(
    ref: str, grouped: Mapping[FleetConfig, list[Point]]
) -> tuple[FleetConfig, list[Point]]:
    """A configuration by its number in `profiles list`, or the one a run id belongs to."""
    items = list(grouped.items())
    if ref.isdigit() and 1 <= int(ref) <= len(items):
        return items[int(ref) - 1]
    for config, points in items:
        if any(p.source.partition("#")[0] == ref for p in points):
            return config, points
    raise fail(f"no configuration {ref!r}: give a number from `profiles list` or a run id")


@profiles_app.command()
def show(
    ref: Annotated[str, typer.Argument(metavar="REF", help="Number from `list`, or a run id.")],
    model: ModelOpt = None,
    prices: Prices = None,
    data_dir: DataDir = None,
) -> None:
    """Every measured load point of one configuration, with $/M tokens."""
    config, points = _select(ref, configurations(data_dir, model))
    table_prices = prices_or_exit(prices)
    console.print(f"[bold]{config.model}[/bold] {config.label}  workload {config.workload}")
    console.print(f"{money(config.hourly_usd(table_prices))}/hour at the price table's rates")
    console.print(points_table(points, table_prices, title=config.label))


@profiles_app.command()
def export(
    out: Annotated[Path, typer.Option(help="Folder for profiles.csv, .json and plots.")],
    model: ModelOpt = None,
    prices: Prices = None,
    data_dir: DataDir = None,
) -> None:
    """Write every point as CSV and JSON, and plot throughput against latency."""
    grouped = configurations(data_dir, model)
    if not grouped:
        raise fail("no stored rate sweeps with a spec to export")
    table_prices = prices_or_exit(prices)
    rows = [point_row(p, table_prices) for points in grouped.values() for p in points]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "profiles.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "profiles.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot_throughput_latency(grouped, out / "throughput_latency.png")
    console.print(f"wrote {len(rows)} points to {out}")


def plot_throughput_latency(grouped: Mapping[FleetConfig, Sequence[Point]], path: Path) -> None:
    """Output tokens/s against p90 TTFT and p90 TPOT, one line per configuration."""
    from matplotlib.figure import Figure  # Agg via the object API: no GUI, no pyplot state

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    ttft_axes, tpot_axes = figure.subplots(1, 2)
    for config, points in grouped.items():
        label = f"{config.model} {config.label}"
        throughput = [p.output_tokens_per_s for p in points]
        for axes, metric in ((ttft_axes, "ttft_p90_s"), (tpot_axes, "tpot_p90_s")):
            values = [getattr(p, metric) for p in points]
            latency = [float("nan") if v is None else v * 1000 for v in values]
            axes.plot(throughput, latency, marker="o", label=label)
    for axes, name in ((ttft_axes, "TTFT p90 (ms)"), (tpot_axes, "TPOT p90 (ms)")):
        axes.set_xlabel("output tokens/s")
        axes.set_ylabel(name)
        axes.set_yscale("log")
        axes.grid(True, alpha=0.3)
    ttft_axes.legend(fontsize="small")
    figure.suptitle("throughput against latency per configuration")
    figure.savefig(path, dpi=100)
