"""Cluster commands: apply a spec as a RayService, and follow it with KubeRay's status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rayfleet import kuberay
from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import SpecError, load_spec

console = Console()
err = Console(stderr=True)
Namespace = Annotated[str | None, typer.Option(help="Namespace (default: the spec's).")]
Context = Annotated[str | None, typer.Option(help="kubeconfig context.")]


def _cluster_errors() -> tuple[type[BaseException], ...]:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    return (ApiException, ConfigException, kuberay.RayServiceNotFoundError, OSError)


def apply(
    spec: Annotated[Path, typer.Argument(help="Spec YAML.")],
    namespace: Namespace = None,
    context: Context = None,
) -> None:
    """Render the spec's RayService and server-side apply it."""
    try:
        plan = resolve(load_spec(spec))
        resource = kuberay.render_rayservice(plan, render_serve_config(plan))
    except (SpecError, ValueError) as error:
        err.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(2) from None
    try:
        kuberay.apply(resource, namespace or plan.spec.kubernetes.namespace, context)
    except _cluster_errors() as error:
        err.print(f"[bold red]error:[/] apply failed: {error}")
        raise typer.Exit(1) from None
    console.print(f"applied RayService {resource['metadata']['name']}")


def print_status(name: str, namespace: str, context: str | None) -> None:
    try:
        state = kuberay.status(name, namespace, context)
    except _cluster_errors() as error:
        err.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    ready = state.condition("Ready")
    console.print(
        f"RayService {namespace}/{name}: Ready={ready.status if ready else 'Unknown'} "
        f"({state.ready_reason or 'no reason yet'}); upgrade in progress: "
        f"{state.upgrade_in_progress}; active cluster: {state.active_cluster or '-'}; "
        f"pending cluster: {state.pending_cluster or '-'}"
    )
    table = Table()
    for column in ("side", "application", "status", "deployment", "deployment status"):
        table.add_column(column)
    for side, cluster in (("active", state.active), ("pending", state.pending)):
        for app in cluster.applications:
            for dep in app.deployments or (kuberay.client.DeploymentStatus("-", "-", ""),):
                table.add_row(side, app.name, app.status, dep.name, dep.status)
    console.print(table)


def wait(
    name: Annotated[str, typer.Argument(help="RayService name.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 1800,
    namespace: Annotated[str, typer.Option()] = "default",
    context: Context = None,
) -> None:
    """Exit 0 once the RayService is Ready; otherwise non-zero with the reason."""
    try:
        state = kuberay.wait(name, timeout, namespace, context)
    except kuberay.RayServiceNotReadyError as error:
        err.print(f"[bold red]not ready:[/] {error}")
        raise typer.Exit(1) from None
    except _cluster_errors() as error:
        err.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"RayService {namespace}/{name} is Ready ({state.ready_reason})")


def delete(
    name: Annotated[str, typer.Argument(help="RayService name.")],
    namespace: Annotated[str, typer.Option()] = "default",
    context: Context = None,
) -> None:
    """Delete a RayService."""
    try:
        gone = kuberay.delete(name, namespace, context)
    except _cluster_errors() as error:
        err.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"deleted RayService {namespace}/{name}" if gone else "already gone")


def register(app: typer.Typer) -> None:
    for command in (apply, wait, delete):
        app.command()(command)
