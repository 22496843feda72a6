"""``rayfleet bench router-cost``: time RayFleet's routing decision against Ray's PrefixTree.

The lead mounts ``router_cost`` on the bench command group; ``app`` runs it standalone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rayfleet.router.cost import CostWorkload, measure

RESULT_FILE = "router_cost.json"
POLICIES = ("rayfleet", "ray-prefix")
METRICS = (("p50_us", "decision p50"), ("p99_us", "decision p99"), ("total_p99_us", "total p99"))

console = Console()
app = typer.Typer(help="Router decision cost.", no_args_is_help=True)


def _replica_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"not a comma-separated list of integers: {text!r}") from None
    if not counts or any(count < 1 for count in counts):
        raise typer.BadParameter("replica counts must be positive integers")
    return counts


def ratio_table(results: dict[str, dict[str, dict[str, float]]]) -> Table:
    """One row per replica count and measure; ratio = ray-prefix time / rayfleet time."""
    table = Table(title="Routing decision cost (µs)")
    for name in ("replicas", "measure", *POLICIES, "ray-prefix / rayfleet"):
        table.add_column(name, justify="right")
    for count, ours in results["rayfleet"].items():
        theirs = results["ray-prefix"][count]
        for key, label in METRICS:
            ratio = theirs[key] / ours[key] if ours[key] else float("inf")
            table.add_row(count, label, f"{ours[key]:.1f}", f"{theirs[key]:.1f}", f"{ratio:.1f}×")
        table.add_section()
    return table


def router_cost(
    out: Annotated[Path, typer.Option(help="Directory to write router_cost.json into.")],
    replicas: Annotated[str, typer.Option(help="Comma-separated replica counts.")] = "16,1024",
    requests: Annotated[int, typer.Option(min=100, help="Timed requests per count.")] = 2000,
) -> None:
    """Time both policies in-process on the same ~3,000-character shared-prefix prompts."""
    workload = CostWorkload(timed_requests=requests)
    results: dict[str, dict[str, dict[str, float]]] = {policy: {} for policy in POLICIES}
    for count in _replica_counts(replicas):
        with console.status(f"timing {count} replicas"):
            measured = measure(count, workload)
        for policy in POLICIES:
            results[policy][str(count)] = measured[policy]
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULT_FILE
    path.write_text(json.dumps(results, indent=2) + "\n")
    console.print(ratio_table(results))
    console.print(f"wrote {path}")


@app.callback()
def _group() -> None:
    """Keeps ``router-cost`` a subcommand even though it is the only one."""


app.command("router-cost")(router_cost)

if __name__ == "__main__":
    app()
