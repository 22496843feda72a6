"""``rayfleet bench baselines``: RayFleet vs bare vLLM vs stock ray.serve.llm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rayfleet.bench.baselines import (
    SERVERS,
    headline,
    measure,
    median_headlines,
    ratio,
    ratio_rows,
)
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import SpecError, default_spec_path, load_spec

console = Console()


def baselines(
    spec: Annotated[Path | None, typer.Argument(help="Spec (default: embedded tiny CPU).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/baselines"),
    servers: Annotated[str, typer.Option(help="Comma-separated subset of servers.")] = ",".join(
        SERVERS
    ),
    workload: Annotated[str, typer.Option(help="Workload name.")] = "shared-prefix",
    rate: Annotated[float, typer.Option(help="Requests/s.")] = 3.0,
    duration: Annotated[float, typer.Option(help="Seconds of load per server.")] = 30.0,
    seed: Annotated[int, typer.Option()] = 0,
    rounds: Annotated[
        int, typer.Option(min=1, help="Rounds of all servers in turn; figures are medians.")
    ] = 1,
) -> None:
    """Start each server in turn with the same engine settings and the same load."""
    chosen = [s.strip() for s in servers.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SERVERS))
    if unknown:
        raise typer.BadParameter(f"unknown servers {unknown}; choose from {list(SERVERS)}")
    try:
        plan = resolve(load_spec(spec or default_spec_path()))
    except SpecError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    load = [
        "--workload",
        workload,
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--seed",
        str(seed),
    ]
    per_round: list[dict[str, dict[str, float]]] = []
    for r in range(1, rounds + 1):
        folder = out if rounds == 1 else out / f"round-{r}"
        per_round.append({})
        for server in chosen:
            console.print(f"[bold]{server}[/]: starting (round {r}/{rounds})")
            per_round[-1][server] = headline(measure(server, plan, folder / server, load))
            console.print(f"  {per_round[-1][server]}")
    results = median_headlines(per_round)
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.json").write_text(
        json.dumps({"workload": load, "results": results, "rounds": per_round}, indent=2)
    )
    medians = f" (medians of {rounds} rounds)" if rounds > 1 else ""
    table = Table(title=f"{workload} at {rate:g} req/s for {duration:g} s{medians}")
    table.add_column("metric")
    for server in results:
        table.add_column(server, justify="right")
    for server in results:
        table.add_column(f"{server} / vllm", justify="right")
    for row in ratio_rows(results, "vllm"):
        table.add_row(*row)
    console.print(table)
    if rounds > 1 and "vllm" in chosen:
        for server in (s for s in chosen if s != "vllm"):
            shown = ", ".join(
                ratio(r[server]["ttft_p50_s"], r["vllm"]["ttft_p50_s"]) for r in per_round
            )
            console.print(f"{server} / vllm TTFT p50 per round: {shown}")
