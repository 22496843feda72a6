"""``rayfleet emulate``: run a rendered RayService on a local multi-node Ray cluster.

The head and one raylet per worker-group host run on this machine, each raylet
with its group's Ray labels, resources and ``RAY_NODE_TYPE_NAME`` (which Ray turns
into ``ray.io/node-group``), as KubeRay would start them. The serveConfigV2,
rewritten to CPU engines (emulate_plan.py), is deployed through the dashboard like
KubeRay does, and readiness is reported with KubeRay's Ready condition. Running it
again with a changed serveConfigV2 redeploys to the same cluster (an in-place
update, as KubeRay does when only serveConfigV2 changes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer
from rich.console import Console

from rayfleet.kuberay.emulate_plan import (
    NODE_CPUS,
    NODE_OBJECT_STORE_BYTES,
    Manifest,
    ManifestError,
    NodeSpec,
    RewriteOptions,
    load_manifest,
    node_plan,
    rewrite_serve_config,
)
from rayfleet.platform import local

AGENT_PORT_BASE = 52400  # the head's agent keeps Ray's default 52365
NODE_GROUP_LABEL = "ray.io/node-group"
console = Console(soft_wrap=True)
err = Console(stderr=True)


class EmulationError(RuntimeError):
    """The emulated cluster could not be started or updated; the message says why."""


def group_counts(labels: list[dict[str, str]]) -> dict[str, int]:
    """Raylets per worker group (``ray.io/node-group``); the head has no group."""
    counts: dict[str, int] = {}
    for node in labels:
        group = node.get(NODE_GROUP_LABEL)
        if group and group != "headgroup":
            counts[group] = counts.get(group, 0) + 1
    return counts


def auth_env() -> dict[str, str]:
    """Every node runs with the head's auth mode (Ray 2.60 defaults the head to tokens)."""
    return {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}


def worker_args(node: NodeSpec) -> list[str]:
    args = [
        "start",
        f"--address=127.0.0.1:{local.GCS_PORT}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={NODE_CPUS}",
        f"--num-gpus={node.num_gpus}",
        f"--object-store-memory={NODE_OBJECT_STORE_BYTES}",
        f"--dashboard-agent-listen-port={AGENT_PORT_BASE + node.index}",
        f"--labels={node.labels_arg()}",
        "--disable-usage-stats",
    ]
    if node.resources:
        args.append(f"--resources={node.resources_arg()}")
    return args


def start_cluster(nodes: list[NodeSpec], metrics_port: int) -> str:
    """The head (no engines: 0 CPUs, like the manifest's) and one raylet per node."""
    dashboard = local.start_head(0, metrics_port)
    for node in nodes:
        env = {**node.env, **auth_env(), "RAY_NODE_TYPE_NAME": node.group}
        result = local._run_ray(worker_args(node), env=env)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-10:]
            raise EmulationError(f"raylet for group {node.group} failed:\n" + "\n".join(tail))
    _wait_for_nodes(dashboard, 1 + len(nodes))
    return dashboard


def ray_state(dashboard: str, resource: str) -> list[Any]:
    """Ray's own state API (``nodes``, ``actors``), alive entries only.

    The dashboard token is passed explicitly, as the local runtime does: Ray's SDK
    decides once per process whether auth is on, before this process started Ray.
    """
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(address=dashboard, headers=local.ray_auth_headers())
    alive: list[Any] = [("state", "=", "ALIVE")]
    options = ListApiOptions(limit=10000, filters=alive, detail=resource == "nodes")
    return client.list(StateResource(resource), options=options, raise_on_missing_output=False)


def node_labels(dashboard: str) -> dict[str, dict[str, str]]:
    """node_id → Ray labels of the alive nodes."""
    return {n.node_id: dict(n.labels or {}) for n in ray_state(dashboard, "nodes")}


def _wait_for_nodes(dashboard: str, expected: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            found = len(node_labels(dashboard))
            if found >= expected:
                return
            last = f"{found} alive"
        except Exception as error:  # the state API answers only once the dashboard is up
            last = f"{type(error).__name__}: {str(error)[:300]}"
        time.sleep(1)
    raise EmulationError(
        f"fewer than {expected} Ray nodes registered within {timeout_s:.0f} s ({last})"
    )


def replica_groups(dashboard: str) -> dict[str, list[str]]:
    """Serve deployment → the node group of each live replica, from Ray's actor state."""
    labels = node_labels(dashboard)
    actors = ray_state(dashboard, "actors")
    placed: dict[str, list[str]] = {}
    for actor in actors:
        name = actor.name or ""
        if not name.startswith("SERVE_REPLICA::"):
            continue
        deployment = name.split("::", 1)[1].split("#")[1]
        node = labels.get(actor.node_id or "", {})
        placed.setdefault(deployment, []).append(node.get(NODE_GROUP_LABEL, "head"))
    return {d: sorted(groups) for d, groups in sorted(placed.items())}


def _say_condition(ready: bool, reason: str, detail: str = "") -> None:
    color = "green" if ready else "yellow"
    tail = f": {detail}" if detail else ""
    console.print(f"[{color}]Ready={ready}[/] reason={reason}{tail}")


def deploy_and_wait(
    dashboard: str,
    serve_config: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float,
    updating: bool = False,
) -> None:
    """Deploy, then report KubeRay's Ready condition as it would move.

    An in-place update keeps Ready=True (the old replicas serve until replaced),
    so only the application's status is reported until the new config runs.
    """
    app = serve_config["applications"][0]["name"]
    api = f"http://127.0.0.1:{serve_config.get('http_options', {}).get('port', 8000)}"
    deployed_at = time.time()
    local.deploy(dashboard, serve_config)
    seen: list[str] = []

    def on_status(status: str) -> None:
        if seen and seen[-1] == status:
            return
        seen.append(status)
        if updating:
            console.print(f"application {app}: {status}")
        else:
            _say_condition(False, "Initializing", f"application {app} is {status}")

    try:
        if updating:
            _wait_for_new_config(dashboard, app, deployed_at, timeout_s)
        local.wait_until_serving(dashboard, app, api, headers, timeout_s, on_status)
    except local.LocalRuntimeError as error:
        _say_condition(False, "InitializingTimeout", str(error))
        raise
    _say_condition(True, "NonZeroServeEndpoints", f"numServeEndpoints=1, serving at {api}/v1")


def _wait_for_new_config(dashboard: str, app: str, deployed_at: float, timeout_s: float) -> None:
    """Until Serve has taken the new config (else the old RUNNING status would pass)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        details = local.serve_details(dashboard).get("applications", {}).get(app, {})
        if details.get("last_deployed_time_s", 0) >= deployed_at - 1:
            return
        time.sleep(0.5)
    raise local.LocalRuntimeError(f"Serve did not take the new config of {app!r}")


def _headers(serve_config: dict[str, Any]) -> dict[str, str]:
    """The bearer token the app's ingress will require, from this shell's environment."""
    for app in serve_config["applications"]:
        env = (app.get("args") or {}).get("api_key_env")
        if env and not os.environ.get(env):
            raise EmulationError(
                f"the manifest's app {app['name']!r} requires the API key in ${env} "
                "(on Kubernetes a Secret sets it); export it before emulating"
            )
        if env:
            return {"Authorization": f"Bearer {os.environ[env]}"}
    return {}


def _engine_count(serve_config: dict[str, Any]) -> int:
    return sum(
        len((a.get("args") or {}).get("engines") or []) for a in serve_config["applications"]
    )


def prepare(
    manifest: Manifest, scale: float, max_nodes: int, model: str | None
) -> tuple[list[NodeSpec], dict[str, Any] | None]:
    """The node plan and rewritten serve config, with the substitutions printed."""
    nodes = node_plan(manifest, scale, max_nodes)
    for node in nodes:
        console.print(
            f"raylet {node.index}: group {node.group}  labels {node.labels_arg()}  "
            f"GPUs {node.num_gpus}  resources {node.resources_arg()}"
        )
    if manifest.serve_config is None:
        return nodes, None
    engines = max(1, _engine_count(manifest.serve_config))
    budget = int(psutil.virtual_memory().available * 0.5 / engines)
    options = RewriteOptions(scale, model, budget, os.cpu_count() or 2)
    rewrite = rewrite_serve_config(manifest.serve_config, nodes, options)
    for note in rewrite.notes:
        console.print(f"[cyan]substituted[/] {note}")
    return nodes, rewrite.serve_config


def update_in_place(
    dashboard: str, nodes: list[NodeSpec], config: dict[str, Any] | None, timeout_s: float
) -> None:
    """Redeploy to the running cluster when it has exactly the manifest's raylets.

    The check reads Ray's own node labels, so it holds whoever started the cluster.
    """
    running = group_counts(list(node_labels(dashboard).values()))
    wanted = group_counts([{NODE_GROUP_LABEL: n.group} for n in nodes])
    if running != wanted:
        raise EmulationError(
            f"a Ray cluster with worker groups {running or 'none'} is running, but the "
            f"manifest needs {wanted}: KubeRay would build a new cluster; run "
            "`rayfleet down` and emulate again"
        )
    if config is None:
        console.print("the emulated cluster already has this shape; nothing to deploy")
        return
    console.print("emulated cluster already running: updating serveConfigV2 in place")
    deploy_and_wait(dashboard, config, _headers(config), timeout_s, updating=True)


def emulate(
    manifest: Annotated[Path, typer.Argument(help="Rendered RayService or RayCluster YAML.")],
    scale: Annotated[float, typer.Option(help="Multiply worker and pool replicas.")] = 1.0,
    max_nodes: Annotated[int, typer.Option(help="Most worker raylets (~200 MB each).")] = 4,
    model: Annotated[str | None, typer.Option(help="Serve this model source instead.")] = None,
    detach: Annotated[bool, typer.Option(help="Return once Ready.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Ready.")] = 900,
) -> None:
    """Run a RayService on a local multi-node Ray cluster shaped like its worker groups."""
    if scale <= 0 or max_nodes < 1:
        _fail("--scale must be > 0 and --max-nodes >= 1", 2)
    try:
        parsed = load_manifest(manifest)
        nodes, config = prepare(parsed, scale, max_nodes, model)
        headers = _headers(config) if config else {}
    except (ManifestError, EmulationError) as error:
        _fail(str(error), 2)
        return
    dashboard = f"http://127.0.0.1:{local.DASHBOARD_PORT}"
    if local.cluster_running(dashboard):
        try:
            update_in_place(dashboard, nodes, config, timeout)
        except (EmulationError, local.LocalRuntimeError) as error:
            _fail(str(error))
        _print_placement(dashboard)
        return
    _start_and_serve(parsed, nodes, config, headers, detach, timeout)


def _start_and_serve(
    manifest: Manifest,
    nodes: list[NodeSpec],
    config: dict[str, Any] | None,
    headers: dict[str, str],
    detach: bool,
    timeout: float,
) -> None:
    app = config["applications"][0]["name"] if config else manifest.name
    port = (config or {}).get("http_options", {}).get("port", 8000)
    dashboard_url = f"http://127.0.0.1:{local.DASHBOARD_PORT}"
    # Recorded like `rayfleet up`'s, so `rayfleet down` stops it.
    local.save_state(local.UpState(True, dashboard_url, app, f"http://127.0.0.1:{port}"))
    try:
        with console.status(f"starting a head and {len(nodes)} raylets…"):
            dashboard = start_cluster(nodes, manifest.metrics_port)
        if config is not None:
            deploy_and_wait(dashboard, config, headers, timeout)
            _print_placement(dashboard)
    except (EmulationError, local.LocalRuntimeError, KeyboardInterrupt) as error:
        _stop()
        _fail(str(error) or "interrupted")
    if detach:
        console.print("detached; `rayfleet down` stops it")
        return
    console.print("Ctrl-C stops the emulated cluster")

    def stop() -> None:
        console.print("stopping…")
        _stop()

    local.hold_until_interrupted(stop)


def _print_placement(dashboard: str) -> None:
    for deployment, groups in replica_groups(dashboard).items():
        console.print(f"placement: {deployment} → {', '.join(groups)}")


def _stop() -> None:
    local.stop_cluster()
    local.state_file().unlink(missing_ok=True)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
