"""`rayfleet bench calibrate` and `bench predict-run`: fit the simulator, test it held out.

``calibrate RUN --out PARAMS.yaml`` fits the step costs to one single-engine run's
``requests.jsonl`` (``rayfleet.bench.sim.calibrate``); ``predict-run PARAMS.yaml RUN``
replays another run through the fitted engine (``rayfleet.bench.replay``) and prints
predicted against measured TTFT/TPOT with the relative errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from rayfleet.bench import report
from rayfleet.bench.predict import DEFAULT_BATCHED_TOKENS, KV_BLOCKS
from rayfleet.bench.replay import HELD_OUT_METRICS, HeldOut, predict_run
from rayfleet.bench.sim.calibrate import calibrate_run
from rayfleet.bench.sim.params import SimParams

console = Console()


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def write_params(path: Path, params: SimParams, fit: dict[str, Any]) -> None:
    """``sim:`` holds SimParams fields (usable as a spec's sim config), ``fit:`` the provenance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"sim": params.model_dump(mode="json"), "fit": fit}
    path.write_text(
        "# Simulator parameters fitted by `rayfleet bench calibrate`.\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )


def read_params(path: Path) -> tuple[SimParams, float]:
    """The fitted SimParams and the fit's overhead (client/proxy seconds per request)."""
    doc = yaml.safe_load(path.read_text()) or {}
    params = SimParams.model_validate(doc.get("sim") or {})
    return params, float((doc.get("fit") or {}).get("overhead_s", 0.0))


def calibrate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Folder of a bench run.")],
    out: Annotated[Path, typer.Option(help="PARAMS.yaml to write.")],
    max_num_batched_tokens: Annotated[
        int, typer.Option(help="The engine's chunked-prefill budget.")
    ] = DEFAULT_BATCHED_TOKENS,
    max_num_seqs: Annotated[int, typer.Option(help="The engine's most running sequences.")] = 256,
    hit_rate: Annotated[
        float, typer.Option(help="The run's prefix-cache hit rate (0 for distinct prompts).")
    ] = 0.0,
    statistic: Annotated[
        str,
        typer.Option(
            "--fit", help="median (least absolute deviations, for p50s) or mean (least squares)."
        ),
    ] = "median",
) -> None:
    """Fit the simulator's step costs to one engine's run (needs --per-request records)."""
    if statistic not in ("median", "mean"):
        raise _fail(f"--fit must be median or mean, got {statistic!r}")
    if not (run_dir / "requests.jsonl").is_file():
        raise _fail(f"{run_dir} has no requests.jsonl (run bench with --per-request)")
    try:
        fitted = calibrate_run(
            run_dir, max_num_batched_tokens, hit_rate, "median" if statistic == "median" else "mean"
        )
    except ValueError as error:
        raise _fail(str(error)) from None
    base = SimParams(
        num_kv_blocks=KV_BLOCKS,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
    )
    fit = {
        "source": str(run_dir),
        "hit_rate": hit_rate,
        "fit": statistic,
        "overhead_s": fitted.overhead_s,
        "decode_rows": fitted.decode_rows,
        "prefill_rows": fitted.prefill_rows,
        "decode_rms_s": fitted.decode_rms_s,
        "prefill_rms_s": fitted.prefill_rms_s,
    }
    write_params(out, fitted.apply(base), fit)
    table = Table("cost", "fitted", title=f"calibrated on {run_dir}")
    for name, value in {**fitted.costs(), "overhead_s": fitted.overhead_s}.items():
        table.add_row(name, f"{value:.3g}")
    console.print(table)
    console.print(f"wrote {out}")


def predict_run_command(
    params_file: Annotated[Path, typer.Argument(metavar="PARAMS.yaml", help="From calibrate.")],
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="The held-out run.")],
    out: Annotated[Path | None, typer.Option(help="Also write the comparison as JSON.")] = None,
) -> None:
    """Replay a held-out run through the calibrated simulator; compare TTFT and TPOT."""
    try:
        params, overhead_s = read_params(params_file)
        held = predict_run(params, overhead_s, run_dir)
    except (ValueError, ValidationError, OSError, yaml.YAMLError) as error:
        raise _fail(str(error)) from None
    _print_held_out(held, run_dir)
    if out is not None:
        report.write_json(out, held_out_json(held, params_file, run_dir))
        console.print(f"wrote {out}")


def held_out_json(held: HeldOut, params_file: Path, run_dir: Path) -> dict[str, Any]:
    return {
        "params": str(params_file),
        "run": str(run_dir),
        "requests": held.requests,
        "prompts": held.prompts,
        "sim_hit_rate": held.sim_hit_rate,
        "measured": held.measured,
        "predicted": held.predicted,
        "errors": held.errors,
    }


def _print_held_out(held: HeldOut, run_dir: Path) -> None:
    table = Table("metric", "measured", "predicted", "error", title=f"held out: {run_dir}")
    for name in HELD_OUT_METRICS:
        error = held.errors.get(name)
        table.add_row(
            name.removesuffix("_s").replace("_", " "),
            report.fmt_ms(held.measured[name]),
            report.fmt_ms(held.predicted[name]),
            "" if error is None else f"{error:.0%}",
        )
    console.print(table)
    measured_hits = _measured_hit_rate(run_dir)
    console.print(
        f"{held.requests} requests, prompts {held.prompts}; prefix-cache hit rate "
        f"simulated {held.sim_hit_rate:.1%}"
        + ("" if measured_hits is None else f", measured {measured_hits:.1%}")
    )


def _measured_hit_rate(run_dir: Path) -> float | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    value = (summary.get("prefix_cache") or {}).get("hit_rate")
    return None if value is None else float(value)
