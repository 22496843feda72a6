"""``rayfleet bench arena``: the options, and a table of the results with ratios."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rayfleet.bench.arena import DEFAULT_DURATION_S, ENGINES, ROUTERS, ArenaOptions, run_arena
from rayfleet.bench.arena_results import RESULT_FILE, ROUTER_METRICS
from rayfleet.bench.arena_sizing import DEFAULT_MAX_WALL_RATE, WORKLOAD_NAMES, SizingError
from rayfleet.bench.workloads import WorkloadError, parse_params
from rayfleet.platform.local import LocalRuntimeError

console = Console()


def key_values(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """KEY=VALUE options as a mapping; a malformed one is a usage error naming ``option``."""
    try:
        return dict(parse_params(pairs or []))
    except WorkloadError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def results_table(document: dict[str, Any]) -> Table:
    routers = document["routers"]
    table = Table(
        "metric", *routers, title=f"arena (oracle hit rate {document['oracle_hit_rate']:.3f})"
    )
    for key in ROUTER_METRICS:
        cells = [routers[name].get(key) for name in routers]
        table.add_row(key, *("-" if v is None else f"{v:.4g}" for v in cells))
    return table


def arena(
    workload: Annotated[str, typer.Option(help=f"One of: {', '.join(WORKLOAD_NAMES)}.")],
    out: Annotated[Path, typer.Option(help="Folder for arena.json and arena.png.")],
    routers: Annotated[str, typer.Option(help="Comma-separated, in run order.")] = ",".join(
        ROUTERS
    ),
    replicas: Annotated[int, typer.Option(help="Engine replicas.")] = 8,
    engine: Annotated[str, typer.Option(help=f"One of: {', '.join(ENGINES)}.")] = "sim",
    rate: Annotated[
        float | None,
        typer.Option(help="Wall requests/s (default: 70% of the estimated capacity)."),
    ] = None,
    duration: Annotated[
        float, typer.Option(help="Seconds of sending per router.")
    ] = DEFAULT_DURATION_S,
    seed: Annotated[int, typer.Option(help="Workload and arrival seed.")] = 0,
    time_scale: Annotated[
        float | None,
        typer.Option(help="Simulated seconds per wall second (default: fit --max-wall-rate)."),
    ] = None,
    max_wall_rate: Annotated[
        float, typer.Option(help="Highest wall requests/s the default load may reach.")
    ] = DEFAULT_MAX_WALL_RATE,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Workload parameter KEY=VALUE.")
    ] = None,
    sim: Annotated[
        list[str] | None,
        typer.Option(help="Simulator parameter KEY=VALUE, e.g. num_kv_blocks=256."),
    ] = None,
) -> None:
    """Routers side by side: same deployment shape, same request schedule."""
    logging.basicConfig(level=logging.WARNING)
    try:
        options = ArenaOptions(
            workload=workload,
            out=out,
            routers=tuple(r.strip() for r in routers.split(",") if r.strip()),
            replicas=replicas,
            engine=engine,
            rate=rate,
            duration_s=duration,
            seed=seed,
            time_scale=time_scale,
            max_wall_rate=max_wall_rate,
            params=key_values(param, "--param"),
            sim=key_values(sim, "--sim"),
        )
        document = run_arena(options, on_status=lambda m: console.print(f"[dim]{m}[/dim]"))
    except (ValueError, SizingError, WorkloadError, LocalRuntimeError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    console.print(results_table(document))
    console.print(f"wrote {out / RESULT_FILE}")
