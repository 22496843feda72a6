"""`rayfleet recommend`: the cheapest configuration meeting latency targets, with evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from rayfleet.bench.profiles_cli import DataDir, Prices, console, fail, money, prices_or_exit
from rayfleet.bench.recommend import Option, Predictor, Recommendation, Targets, recommend
from rayfleet.bench.recommend import spec_data as make_spec_data
from rayfleet.bench.report import fmt_ms
from rayfleet.bench.store import ProfileStore
from rayfleet.platform.spec import SpecError


def _percent(error: dict[str, float] | None, metric: str) -> str:
    """The median |relative error| and, in brackets, the largest."""
    value, worst = (error or {}).get(metric), (error or {}).get(f"{metric}_max")
    if value is None:
        return "–"
    return f"{value:.0%}" + (f" (max {worst:.0%})" if worst is not None else "")


def _evidence(option: Option) -> str:
    point = option.point
    if not point.predicted:
        return f"measured {point.source}"
    error = point.held_out_error
    return (
        f"predicted (held-out error TTFT {_percent(error, 'ttft_p90_s')}, "
        f"TPOT {_percent(error, 'tpot_p90_s')}, tok/s {_percent(error, 'output_tokens_per_s')})"
    )


def options_table(result: Recommendation) -> Table:
    table = Table(
        "",
        "configuration",
        "load req/s",
        "out tok/s",
        "TTFT p90 ms",
        "TPOT p90 ms",
        "$/hour",
        "$/M out",
        "$/M in",
        "evidence",
        title=f"{result.targets.model}: candidates, cheapest first",
    )
    for option in result.options:
        point = option.point
        mark = "[green]✓[/]" if option.meets else "[red]✗[/]"
        if option is result.best:
            mark = "[bold green]★[/]"
        table.add_row(
            mark,
            point.config.label,
            f"{point.load:g}",
            f"{point.output_tokens_per_s:.1f}",
            fmt_ms(point.ttft_p90_s),
            fmt_ms(point.tpot_p90_s),
            money(option.hourly_usd),
            money(option.per_million_output),
            money(option.per_million_input, 4),
            _evidence(option)
            + (f"; {point.saturated}" if point.saturated else "")
            + (f"; {option.note}" if option.note else ""),
        )
    return table


def errors_table(predictors: list[Predictor]) -> Table:
    table = Table(
        "calibrated on",
        "leave-one-out stages",
        "TTFT p90 error",
        "TPOT p90 error",
        "out tok/s error",
        "other replica counts: stages, TTFT / TPOT / tok/s error",
        title="simulator: held-out error, median (max) of |pred - meas| / meas",
    )
    for predictor in predictors:
        error = predictor.error
        table.add_row(
            f"{predictor.base.label} ({len(predictor.model.sources)} stages)",
            f"{error['stages']:.0f}",
            _percent(error, "ttft_p90_s"),
            _percent(error, "tpot_p90_s"),
            _percent(error, "output_tokens_per_s"),
            _transfer(predictor.transfer_error),
        )
    return table


def _transfer(error: dict[str, float]) -> str:
    if not error["stages"]:
        return "–"
    metrics = ("ttft_p90_s", "tpot_p90_s", "output_tokens_per_s")
    return f"{error['stages']:.0f}: " + " / ".join(_percent(error, m) for m in metrics)


def recommend_command(
    model: Annotated[str, typer.Option(help="Model id, as served and stored.")],
    ttft_p90: Annotated[float, typer.Option("--ttft-p90", help="Target p90 TTFT, ms.")],
    tpot_p90: Annotated[float, typer.Option("--tpot-p90", help="Target p90 TPOT, ms.")],
    qps: Annotated[
        float | None, typer.Option(help="Requests/s to serve; without it, the best $/M tokens.")
    ] = None,
    accelerators: Annotated[
        str | None, typer.Option(help="Comma list to consider, e.g. cpu,nvidia-l4.")
    ] = None,
    max_replicas: Annotated[
        int, typer.Option(help="Largest replica count to predict for unmeasured sizes.")
    ] = 4,
    emit: Annotated[
        Path | None, typer.Option(help="Write the recommended spec (for `rayfleet render`).")
    ] = None,
    prices: Prices = None,
    data_dir: DataDir = None,
) -> None:
    """The cheapest configuration whose stored (or predicted) profile meets the targets."""
    try:
        targets = Targets(
            model=model,
            ttft_p90_s=ttft_p90 / 1000,
            tpot_p90_s=tpot_p90 / 1000,
            qps=qps,
            accelerators=tuple(a.strip() for a in (accelerators or "").split(",") if a.strip()),
            max_replicas=max_replicas,
        )
        result = recommend(ProfileStore(data_dir), targets, prices_or_exit(prices))
    except (ValueError, LookupError) as error:
        raise fail(str(error)) from None
    console.print(options_table(result))
    if result.predictors:
        console.print(errors_table(result.predictors))
    at = f" at {qps:g} req/s" if qps is not None else ""
    goal = f"TTFT p90 ≤ {ttft_p90:g} ms and TPOT p90 ≤ {tpot_p90:g} ms{at}"
    if result.best is None:
        console.print(f"[red]no configuration meets {goal}[/red]")
        raise typer.Exit(1)
    best = result.best
    kind = "predicted" if best.point.predicted else "measured"
    console.print(
        f"[bold green]recommended:[/] {best.config.label} for {goal} "
        f"({kind}; {money(best.hourly_usd)}/hour, {money(best.per_million_output)}/M output tokens)"
    )
    if emit is not None:
        _emit(best, emit)


def _emit(best: Option, path: Path) -> None:
    try:
        data = make_spec_data(best.config)
    except SpecError as error:
        raise fail(str(error)) from None
    evidence = _evidence(best)
    header = f"# Recommended by `rayfleet recommend`: {best.config.label}, {evidence}.\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    console.print(f"wrote {path}; `rayfleet render {path} --rayservice rs.yaml` renders it")
