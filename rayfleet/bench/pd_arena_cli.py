"""``rayfleet bench pd-arena``: unified vs always- vs conditionally-disaggregated serving.

The three modes get the same pd-mix requests and the same total number of simulated
engines (``rayfleet.bench.pd_sim``, virtual time). The table shows each mode's ratio to
unified serving; ``DIR/pd_arena.json`` keeps the settings and the figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from rayfleet.bench.arena_cli import key_values
from rayfleet.bench.pd_sim import MODES, compare
from rayfleet.bench.sim.params import SimParams
from rayfleet.deployments.pd_policy import PDPolicy

RESULT_FILE = "pd_arena.json"
METRICS = ("ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p99_s")
console = Console()


# Set by the comparison itself: each mode gives its engines their roles, and prompts are
# tokenized with the tiny model's tokenizer.
FIXED_SIM_FIELDS = ("role", "tokenizer")


def _sim_params(pairs: list[str] | None) -> SimParams:
    values = key_values(pairs, "--sim")
    fixed = sorted(set(values) & set(FIXED_SIM_FIELDS))
    if fixed:
        raise typer.BadParameter(f"{', '.join(fixed)}: set by pd-arena", param_hint="--sim")
    try:
        return SimParams.model_validate(values)
    except ValidationError as error:
        raise typer.BadParameter(str(error), param_hint="--sim") from None


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}×" if value is not None and base else "-"


def _finite(modes: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """NaN (no request with two tokens, so no TPOT) becomes null: JSON has no NaN."""
    return {
        mode: {k: v if math.isfinite(v) else None for k, v in row.items()}
        for mode, row in modes.items()
    }


def results_table(document: dict[str, Any]) -> Table:
    modes = document["modes"]
    table = Table("metric", *modes, *(f"{m} / unified" for m in modes if m != "unified"))
    for key in METRICS:
        base = modes["unified"][key]
        values = [modes[m][key] for m in modes]
        ratios = [_ratio(modes[m][key], base) for m in modes if m != "unified"]
        table.add_row(key, *("-" if v is None else f"{v * 1000:.1f} ms" for v in values), *ratios)
    table.add_row("remote prefills", *(str(modes[m]["disaggregated"]) for m in modes))
    return table


def pd_arena(
    out: Annotated[Path, typer.Option(help="Folder for pd_arena.json.")],
    replicas: Annotated[int, typer.Option(help="Engines in every mode.")] = 4,
    prefill: Annotated[int, typer.Option(help="Of those, prefill engines when split.")] = 1,
    rate: Annotated[float, typer.Option(help="Requests per simulated second.")] = 6.0,
    requests: Annotated[int, typer.Option(help="Requests per mode.")] = 600,
    seed: Annotated[int, typer.Option(help="Workload and arrival seed.")] = 0,
    min_uncached_tokens: Annotated[
        int, typer.Option(help="Shorter uncached prompts prefill on decode.")
    ] = PDPolicy.min_uncached_tokens,
    max_prefill_queue: Annotated[
        int, typer.Option(help="Above this many remote prefills, a decode engine goes local.")
    ] = PDPolicy.max_prefill_queue,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="pd-mix parameter KEY=VALUE.")
    ] = None,
    sim: Annotated[
        list[str] | None,
        typer.Option(help="Simulated engine parameter KEY=VALUE, e.g. max_model_len=16384."),
    ] = None,
) -> None:
    """Prefill/decode modes side by side on the simulated engine, in virtual time."""
    if not 1 <= prefill < replicas:
        raise typer.BadParameter(
            f"needs 1 <= prefill < replicas, got prefill={prefill}, replicas={replicas}",
            param_hint="--prefill",
        )
    if rate <= 0:
        raise typer.BadParameter(f"must be > 0, got {rate}", param_hint="--rate")
    if requests < 1:
        raise typer.BadParameter(f"must be >= 1, got {requests}", param_hint="--requests")
    params = _sim_params(sim)
    workload = key_values(param, "--param")
    policy = PDPolicy(min_uncached_tokens, max_prefill_queue)
    try:
        modes = compare(replicas, prefill, rate, requests, policy, params, workload, seed)
    except ValueError as error:  # WorkloadError included
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    document = {
        "modes": _finite({mode: modes[mode] for mode in MODES}),
        # No decode can beat a step that carries only itself: TPOT below this is impossible.
        "tpot_floor_s": params.step_time(0, 1, 0, 0),
        "settings": {
            "replicas": replicas,
            "prefill": prefill,
            "rate": rate,
            "requests": requests,
            "seed": seed,
            "policy": {
                "min_uncached_tokens": min_uncached_tokens,
                "max_prefill_queue": max_prefill_queue,
            },
            "workload": workload,
            "sim": params.model_dump(mode="json"),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).write_text(json.dumps(document, indent=2))
    console.print(results_table(document))
    console.print(f"wrote {out / RESULT_FILE}")
