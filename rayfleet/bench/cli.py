"""`rayfleet bench`: run benchmarks, list and show stored runs, compare them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from rayfleet.bench import report
from rayfleet.bench.calibrate_cli import calibrate, predict_run_command
from rayfleet.bench.loadgen import LoadConfig, request_body
from rayfleet.bench.metrics import Slo
from rayfleet.bench.records import RequestRecord
from rayfleet.bench.runs import (
    RunPlan,
    execute,
    make_workload,
    new_run_id,
    request_budget,
    resolve_served,
    run_metadata,
    stage_config,
    store_run,
    write_outputs,
)
from rayfleet.bench.served import ServedError
from rayfleet.bench.store import ProfileStore, RunFilter
from rayfleet.bench.sweep import Stage, StopRule, parse_geometric, parse_sweep
from rayfleet.bench.workloads import WORKLOADS, WorkloadError, parse_params
from rayfleet.platform.spec import SpecError, load_spec

bench_app = typer.Typer(
    help="Measure an OpenAI-compatible server: latency, throughput, prefix-cache hits.",
    no_args_is_help=True,
)
console = Console()

DataDir = Annotated[
    Path | None,
    typer.Option(
        envvar="RAYFLEET_DATA_DIR", help="Profile store (default: ~/.local/share/rayfleet)."
    ),
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _ms(value: float | None) -> float | None:
    return None if value is None else value / 1000


def _loads(
    rate: float | None, concurrency: int | None, sweep: str | None, geometric: str | None
) -> tuple[float | None, int | None, list[float]]:
    """The base rate/concurrency and the stage loads (a rate sweep unless closed loop)."""
    if sweep and geometric:
        raise ValueError("give --sweep or --sweep-geometric, not both")
    loads = parse_sweep(sweep) if sweep else parse_geometric(geometric) if geometric else None
    closed_loop = rate is None and concurrency is not None
    if loads is None:
        single = concurrency if closed_loop else rate
        if single is None:
            raise ValueError("give --rate, --concurrency or a sweep")
        loads = [float(single)]
    if closed_loop:
        return None, int(loads[0]), loads
    return loads[0], concurrency, loads


@bench_app.command()
def run(
    target: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    workload: Annotated[
        str, typer.Option("--workload", "-w", help=f"One of: {', '.join(WORKLOADS)}.")
    ] = "synthetic",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Workload parameter KEY=VALUE, e.g. input_len=512."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Requests/s (open loop).")] = None,
    arrival: Annotated[str, typer.Option(help="constant or poisson.")] = "constant",
    concurrency: Annotated[
        int | None,
        typer.Option(help="Closed-loop workers; with --rate, a cap on requests in flight."),
    ] = None,
    sweep: Annotated[
        str | None, typer.Option(help="Loads to sweep: 1,2,4 or START:STOP:STEP.")
    ] = None,
    sweep_geometric: Annotated[
        str | None, typer.Option(help="Geometric sweep START:STOP:FACTOR, e.g. 1:64:2.")
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of sending per stage.")] = 60.0,
    max_requests: Annotated[int | None, typer.Option(help="Requests per stage at most.")] = None,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 60.0,
    model: Annotated[
        str | None, typer.Option(help="Model id (default: the first of /v1/models).")
    ] = None,
    api: Annotated[str, typer.Option(help="auto, completions or chat.")] = "auto",
    api_key: Annotated[str | None, typer.Option(envvar="RAYFLEET_API_KEY")] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Tokenizer folder or file (default: the server's, else tiny)."),
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="The spec being served (tags the stored run).")
    ] = None,
    metrics_url: Annotated[
        str | None, typer.Option(help="Prometheus URL for prefix-cache counters.")
    ] = None,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="Goodput TTFT target.")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="Goodput TPOT target.")] = None,
    stop_ttft_p90_ms: Annotated[
        float | None,
        typer.Option(help="End a sweep when TTFT p90 exceeds this (default: --slo-ttft-ms)."),
    ] = None,
    stop_min_answered: Annotated[
        float, typer.Option(help="End a sweep when answered/offered req/s falls below this.")
    ] = 0.9,
    seed: Annotated[int, typer.Option(help="Workload and arrival seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: DATA_DIR/runs/RUN_ID).")
    ] = None,
    per_request: Annotated[bool, typer.Option(help="Also write requests.jsonl.")] = False,
    save: Annotated[bool, typer.Option(help="Save the run in the profile store.")] = True,
    data_dir: DataDir = None,
) -> None:
    """Run a benchmark (or a sweep of loads) and write DIR/summary.json, .md and plots."""
    try:
        base_rate, base_concurrency, loads = _loads(rate, concurrency, sweep, sweep_geometric)
        spec_obj = load_spec(spec) if spec else None
        model_id, served, tokenizer_src = resolve_served(
            target, model, spec_obj, api_key, tokenizer
        )
        work = make_workload(workload, parse_params(param or []), tokenizer_src, seed)
        base = LoadConfig(
            target=target,
            model=model_id,
            rate=base_rate,
            arrival=_literal(arrival, ("constant", "poisson"), "--arrival"),
            concurrency=base_concurrency,
            duration_s=duration,
            max_requests=max_requests,
            request_timeout_s=timeout,
            seed=seed,
            api=_literal(api, ("auto", "completions", "chat"), "--api"),
            api_key=api_key,
        )
        request_body(base, work.take(1)[0])  # e.g. a chat workload with --api completions
    except (ValueError, SpecError, ServedError, WorkloadError, OSError) as error:
        raise _fail(str(error)) from None
    stop_ms = stop_ttft_p90_ms if stop_ttft_p90_ms is not None else slo_ttft_ms
    plan = RunPlan(
        base=base,
        loads=loads,
        workload=work,
        served=served,
        tokenizer=tokenizer_src,
        slo=Slo(ttft_s=_ms(slo_ttft_ms), tpot_s=_ms(slo_tpot_ms)),
        stop=StopRule(min_achieved_fraction=stop_min_answered, max_ttft_p90_s=_ms(stop_ms)),
        metrics_url=metrics_url,
    )
    _run_plan(plan, out, per_request, save, data_dir)


def _literal(value: str, allowed: tuple[str, ...], option: str) -> Any:
    if value not in allowed:
        raise ValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _run_plan(
    plan: RunPlan, out: Path | None, per_request: bool, save: bool, data_dir: Path | None
) -> None:
    started = datetime.now(UTC)
    run_id = new_run_id(plan.workload.name)
    store = ProfileStore(data_dir) if save or out is None else None
    out_dir = out or (store.data_dir if store else Path(".")) / "runs" / run_id
    console.print(
        f"[bold]{run_id}[/bold]: {plan.workload.name} → {plan.base.target} "
        f"model [cyan]{plan.base.model}[/cyan], loads {plan.loads}"
    )
    stages = _execute_with_progress(plan)
    summary = write_outputs(out_dir, run_metadata(plan, run_id, started), stages, per_request)
    if save and store is not None:
        store_run(store, summary, out_dir)
    _print_summary(summary)
    for warning in summary["run"]["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"wrote {out_dir}")


def _execute_with_progress(plan: RunPlan) -> list[Stage]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[int, Any] = {}

        def on_record(record: RequestRecord) -> None:
            if record.stage not in tasks:
                config = stage_config(plan, record.stage)
                load = plan.loads[record.stage]
                unit = "req/s" if plan.sweeps_rate else "in flight"
                tasks[record.stage] = progress.add_task(
                    f"stage {record.stage} ({load:g} {unit})",
                    total=request_budget(config),
                    failed=0,
                )
            task = tasks[record.stage]
            failed = progress.tasks[task].fields["failed"] + (not record.ok)
            progress.update(task, advance=1, failed=failed)

        def on_stage(stage: Stage) -> None:
            if stage.index in tasks:
                progress.update(tasks[stage.index], total=len(stage.result.records))
            if stage.saturated:
                progress.console.print(f"stage {stage.index} saturated: {stage.saturated}")

        return asyncio.run(execute(plan, on_record, on_stage))


def _print_summary(summary: dict[str, Any], title: str = "summary") -> None:
    table = Table(title=title, show_header=False)
    for label, value in report.summary_rows(summary):
        table.add_row(label, value)
    console.print(table)
    stages = summary.get("stages") or []
    if len(stages) > 1:
        sweep = Table("load", "req/s", "out tok/s", "TTFT p90 ms", "TPOT p50 ms", "saturated")
        for s in stages:
            sweep.add_row(
                f"{s['load']:g}",
                f"{s['requests_per_s']:.2f}",
                f"{s['output_tokens_per_s']:.1f}",
                report.fmt_ms(s["ttft_s"]["p90"]),
                report.fmt_ms(s["tpot_s"]["p50"]),
                s.get("saturated") or "",
            )
        console.print(sweep)


@bench_app.command("list")
def list_runs(
    model: Annotated[str | None, typer.Option()] = None,
    accelerator: Annotated[str | None, typer.Option()] = None,
    workload: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
    data_dir: DataDir = None,
) -> None:
    """Stored runs, newest first."""
    store = ProfileStore(data_dir)
    where = RunFilter(model=model, accelerator=accelerator, workload=workload)
    table = Table("model", "accelerator", "workload", "req/s", "out tok/s", "TTFT p90 ms")
    table.columns.insert(0, Column("run", no_wrap=True))  # ids are what `show` takes
    for entry in store.runs(where, limit=limit):
        s = entry.summary
        table.add_row(
            entry.run_id,
            entry.served.model,
            entry.served.accelerator,
            str(entry.workload.get("name")),
            f"{s.get('requests_per_s', 0):.2f}",
            f"{s.get('output_tokens_per_s', 0):.1f}",
            report.fmt_ms((s.get("ttft_s") or {}).get("p90")),
        )
    console.print(table)


def _load_run(ref: str, data_dir: Path | None) -> tuple[str, dict[str, Any], Path]:
    """A run by folder (holding summary.json) or by id in the profile store."""
    folder = Path(ref)
    if (folder / "summary.json").is_file():
        summary = json.loads((folder / "summary.json").read_text())
        return summary.get("run", {}).get("run_id", folder.name), summary, folder
    entry = ProfileStore(data_dir).get(ref)
    if entry is None:
        raise _fail(f"no run {ref!r}: not a folder with summary.json, nor a stored run id")
    run_dir = Path(entry.run_dir)
    if (run_dir / "summary.json").is_file():
        return entry.run_id, json.loads((run_dir / "summary.json").read_text()), run_dir
    return entry.run_id, {**entry.summary, "stages": entry.stages}, run_dir


@bench_app.command()
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or run folder.")],
    data_dir: DataDir = None,
) -> None:
    """One run's summary (and its sweep, if it had one)."""
    name, summary, folder = _load_run(run_ref, data_dir)
    meta = summary.get("run", {})
    console.print(f"[bold]{name}[/bold] in {folder}")
    if meta:
        console.print(f"workload {json.dumps(meta.get('workload'))}")
        console.print(f"load {json.dumps(meta.get('load'))}")
    _print_summary(summary, title=name)


@bench_app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Run ids or folders.")],
    out: Annotated[Path, typer.Option(help="Folder for compare.md, .json and plots.")],
    data_dir: DataDir = None,
) -> None:
    """Runs side by side: a table, latency bars, sweep curves and CDFs where possible."""
    if len(runs) < 2:
        raise _fail("compare needs at least two runs")
    loaded = [_load_run(ref, data_dir) for ref in runs]
    summaries = {name: summary for name, summary, _ in loaded}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(report.compare_markdown(summaries))
    report.write_json(out / "compare.json", summaries)
    report.plot_compare_bars(summaries, out / "compare_latency.png")
    curves = {name: s["stages"] for name, s in summaries.items() if len(s.get("stages", [])) > 1}
    if curves:
        report.plot_sweep(curves, out / "compare_sweep.png")
    series = {
        name: report.read_records(folder / "requests.jsonl")
        for name, _, folder in loaded
        if (folder / "requests.jsonl").is_file()
    }
    if series:
        report.plot_latency_cdfs(series, out / "compare_cdf.png")
    table = Table("metric", *summaries)
    columns = [dict(report.summary_rows(s)) for s in summaries.values()]
    for label in columns[0]:
        table.add_row(label, *(column[label] for column in columns))
    console.print(table)
    console.print(f"wrote {out}")


bench_app.command()(calibrate)
bench_app.command("predict-run")(predict_run_command)
