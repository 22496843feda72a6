"""The ``rayfleet`` command line."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from rayfleet.bench.arena_cli import arena
from rayfleet.bench.baselines_cli import baselines
from rayfleet.bench.cli import bench_app
from rayfleet.bench.pd_arena_cli import pd_arena
from rayfleet.bench.profiles_cli import profiles_app
from rayfleet.bench.recommend_cli import recommend_command
from rayfleet.bench.sim.app import render_sim_serve_config
from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.kuberay.emulate import emulate
from rayfleet.platform import cluster_cli, local
from rayfleet.platform.plan import Plan, resolve
from rayfleet.platform.spec import SpecError, default_spec_path, load_spec
from rayfleet.router.cli import router_cost

app = typer.Typer(help="LLM serving on Ray Serve and KubeRay.", no_args_is_help=True)
model_app = typer.Typer(help="Models RayFleet makes itself.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")
app.add_typer(profiles_app, name="profiles")
app.command("recommend")(recommend_command)
bench_app.command()(baselines)
bench_app.command("router-cost")(router_cost)
bench_app.command()(arena)
bench_app.command("pd-arena")(pd_arena)
console = Console()
err = Console(stderr=True)

SpecArg = Annotated[
    Path | None, typer.Argument(help="Spec YAML; default: the embedded CPU tiny-model spec.")
]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _plan(spec_path: Path | None) -> Plan:
    try:
        return resolve(load_spec(spec_path or default_spec_path()))
    except SpecError as error:
        _fail(str(error), 2)
        raise  # unreachable; keeps type checkers happy


def _auth_headers(plan: Plan) -> dict[str, str]:
    env = plan.spec.auth.api_key_env
    if env and os.environ.get(env):
        return {"Authorization": f"Bearer {os.environ[env]}"}
    return {}


def _write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@app.command()
def render(
    spec: Annotated[Path, typer.Argument(help="Spec YAML.")],
    serve_config: Annotated[
        Path | None, typer.Option(help="Write the `serve deploy` config.")
    ] = None,
    rayservice: Annotated[Path | None, typer.Option(help="Write a KubeRay RayService.")] = None,
    raycluster: Annotated[Path | None, typer.Option(help="Write a KubeRay RayCluster.")] = None,
    check: Annotated[bool, typer.Option(help="Validate the KubeRay resources.")] = False,
) -> None:
    """Render a spec into Ray Serve and KubeRay resources."""
    plan = _plan(spec)
    config = render_serve_config(plan)
    if serve_config:
        _write_yaml(serve_config, config)
        console.print(f"wrote {serve_config}")
    if not (rayservice or raycluster or check):
        if not serve_config:
            console.print(yaml.safe_dump(config, sort_keys=False))
        return
    from rayfleet import kuberay

    resources = {
        "RayService": kuberay.render_rayservice(plan, config),
        "RayCluster": kuberay.render_raycluster(plan),
    }
    for path, kind in ((rayservice, "RayService"), (raycluster, "RayCluster")):
        if path:
            _write_yaml(path, resources[kind])
            console.print(f"wrote {path}")
    if check:
        problems = [
            f"{kind}: {p}" for kind, r in resources.items() for p in kuberay.check_resource(r)
        ]
        for problem in problems:
            err.print(f"[red]✗[/] {problem}")
        if problems:
            raise typer.Exit(1)
        console.print("[green]✓[/] RayService and RayCluster pass the KubeRay CRD and pod schemas")


def _start_or_join(plan: Plan) -> local.UpState:
    spec = plan.spec
    api_url = f"http://{spec.http.host}:{spec.http.port}"
    address = os.environ.get("RAY_ADDRESS")
    if address:
        dashboard = os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265")
        return local.UpState(False, dashboard, spec.name, api_url)
    dashboard = f"http://127.0.0.1:{local.DASHBOARD_PORT}"
    if local.cluster_running(dashboard):
        _fail("a Ray cluster is already running here; run `rayfleet down` or set RAY_ADDRESS")
    cpus_needed = sum(
        getattr(e.pool.accelerator, "cpus", 1) * e.pool.max_replicas for e in plan.engines
    )
    # Logical CPUs: engines pin real cores themselves; Ray only needs room to place them.
    local.start_head(max(os.cpu_count() or 2, cpus_needed + 2), spec.http.metrics_port)
    return local.UpState(True, dashboard, spec.name, api_url)


def _teardown(state: local.UpState) -> None:
    if state.started_cluster:
        local.stop_cluster()
    else:
        local.delete_apps(state.dashboard_url)
    local.state_file().unlink(missing_ok=True)


@app.command()
def up(
    spec: SpecArg = None,
    detach: Annotated[bool, typer.Option(help="Return once the API answers.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the API.")] = 900,
    simulate: Annotated[
        bool, typer.Option(help="Serve with the simulated engine instead of vLLM.")
    ] = False,
) -> None:
    """Start a local Ray cluster (or join RAY_ADDRESS), deploy, and serve."""
    plan = _plan(spec)
    config = render_sim_serve_config(plan) if simulate else render_serve_config(plan)
    state = _start_or_join(plan)
    local.save_state(state)
    started = time.monotonic()
    try:
        with console.status("deploying…") as status:
            local.deploy(state.dashboard_url, config)
            local.wait_until_serving(
                state.dashboard_url,
                state.app_name,
                state.api_url,
                _auth_headers(plan),
                timeout,
                lambda s: status.update(
                    f"application {state.app_name}: {s} ({time.monotonic() - started:.0f} s)"
                ),
            )
    except (local.LocalRuntimeError, KeyboardInterrupt) as error:
        _teardown(state)
        _fail(str(error) or "interrupted")
    console.print(
        f"[green]serving[/] {', '.join(m.id for m in plan.spec.models)} at "
        f"[bold]{state.api_url}/v1[/] after {time.monotonic() - started:.0f} s\n"
        f"metrics: http://127.0.0.1:{plan.spec.http.metrics_port}/metrics   "
        f"dashboard: {state.dashboard_url}"
    )
    if detach:
        console.print("detached; `rayfleet down` stops it")
        return
    console.print("Ctrl-C stops everything")

    def stop() -> None:
        console.print("stopping…")
        _teardown(state)

    local.hold_until_interrupted(stop)


@app.command()
def down() -> None:
    """Stop what `rayfleet up` started."""
    state = local.load_state()
    if state is None:
        console.print("nothing started by `rayfleet up` is recorded; stopping any local Ray")
        local.stop_cluster()
        return
    _teardown(state)
    console.print("stopped")


def _local_status(dashboard_url: str) -> None:
    if not local.cluster_running(dashboard_url):
        _fail(f"no Ray dashboard answers at {dashboard_url}")
    details = local.serve_details(dashboard_url)
    table = Table(title="Serve applications")
    for column in ("application", "status", "deployment", "deployment status", "replicas"):
        table.add_column(column)
    for app_name, app_info in details.get("applications", {}).items():
        for dep_name, dep in app_info.get("deployments", {}).items():
            replicas = dep.get("replicas", [])
            running = sum(r.get("state") == "RUNNING" for r in replicas)
            table.add_row(
                app_name,
                app_info.get("status", "?"),
                dep_name,
                dep.get("status", "?"),
                f"{running}/{len(replicas)} running",
            )
    console.print(table)
    _print_pool_figures(details)


def _print_pool_figures(details: dict[str, Any]) -> None:
    """Live per-pool figures from Ray's Prometheus endpoint (vLLM's engine metrics)."""
    from rayfleet.deployments import metrics

    pools = {
        name: [r["replica_id"] for r in dep.get("replicas", [])]
        for app_info in details.get("applications", {}).values()
        for name, dep in app_info.get("deployments", {}).items()
        if name != "ingress"
    }
    try:
        text = local.scrape_metrics()
    except local.LocalRuntimeError as error:
        err.print(f"[yellow]no live figures:[/] {error}")
        return
    table = Table(title=f"Pools (live, from {local.METRICS_URL})")
    for column in metrics.POOL_COLUMNS:
        table.add_column(column)
    for pool, figures in metrics.pool_figures(text, pools).items():
        table.add_row(pool, *metrics.pool_row(figures))
    console.print(table)
    errors = metrics.ingress_error_totals(text)
    if errors:
        console.print("ingress errors: " + ", ".join(f"{k}: {n}" for k, n in errors.items()))


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="RayService name (cluster mode).")] = None,
    namespace: Annotated[str, typer.Option()] = "default",
    context: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Health of the local Serve apps, or of a RayService when NAME is given."""
    if name is None:
        state = local.load_state()
        _local_status(state.dashboard_url if state else f"http://127.0.0.1:{local.DASHBOARD_PORT}")
        return
    cluster_cli.print_status(name, namespace, context)


@model_app.command("make-tiny")
def make_tiny_command(
    directory: Annotated[Path, typer.Argument(help="Output folder.")],
    seed: Annotated[int, typer.Option(help="Weights and tokenizer seed.")] = 0,
) -> None:
    """Write the tiny random-weight Llama (head_dim 64) with its own tokenizer."""
    from rayfleet.platform.tiny_model import make_tiny

    console.print(f"wrote {make_tiny(directory, seed=seed)}")


cluster_cli.register(app)
app.command()(emulate)


def main() -> None:
    app()
