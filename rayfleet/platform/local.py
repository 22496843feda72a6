"""The local runtime: a Ray head on this machine, and Serve deploys through its dashboard.

Deploying goes through the same REST call as Ray's own ``serve deploy``, with the
rendered serve config, so local runs exercise what a cluster would run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from rayfleet.deployments.serve_config import SERVE_ENV
from rayfleet.platform.tiny_model import cache_dir

DASHBOARD_PORT = 8265
GCS_PORT = 6379


class LocalRuntimeError(RuntimeError):
    """Starting, deploying or stopping the local cluster failed; the message says why."""


@dataclass
class UpState:
    started_cluster: bool
    dashboard_url: str
    app_name: str
    api_url: str


def state_file() -> Path:
    return cache_dir() / "up.json"


def save_state(state: UpState) -> None:
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_text(json.dumps(asdict(state)))


def load_state() -> UpState | None:
    try:
        return UpState(**json.loads(state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def ray_cli() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def _run_ray(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ray_cli(), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def cluster_running(dashboard_url: str) -> bool:
    try:
        httpx.get(f"{dashboard_url}/api/version", timeout=2)
        return True  # any answer, 401 included: a dashboard is there
    except httpx.HTTPError:
        return False


def start_head(num_cpus: int, metrics_port: int) -> str:
    """Start a Ray head bound to loopback; returns the dashboard URL.

    Ray 2.60's `ray start --head` turns on token auth and writes the token where
    ``ray_auth_headers`` reads it.
    """
    result = _run_ray(
        [
            "start",
            "--head",
            f"--port={GCS_PORT}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--metrics-export-port={metrics_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={DASHBOARD_PORT}",
            "--disable-usage-stats",
        ],
        env={**SERVE_ENV, **{k: v for k, v in os.environ.items() if k in SERVE_ENV}},
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise LocalRuntimeError("ray start failed:\n" + "\n".join(tail))
    return f"http://127.0.0.1:{DASHBOARD_PORT}"


def _ray_process_tree() -> list[psutil.Process]:
    """The raylets and GCS on this machine, and everything they started."""
    roots = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("raylet", "gcs_server"):
            roots.append(proc)
    tree = list(roots)
    for root in roots:
        with contextlib.suppress(psutil.Error):
            tree.extend(root.children(recursive=True))
    return tree


def stop_cluster() -> None:
    """`ray stop`, then end what it leaves behind.

    vLLM's engine processes and Serve's HAProxy outlive their Ray workers when
    those are killed; each leftover engine holds gigabytes of RAM.
    """
    tree = _ray_process_tree()
    _run_ray(["stop", "--force"])
    survivors = [p for p in tree if p.is_running()]
    for proc in survivors:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(survivors, timeout=10)


def ray_auth_headers() -> dict[str, str]:
    """The dashboard's bearer token, from where Ray keeps it.

    Passed explicitly: Ray's SDK decides once per process whether auth is on,
    from whether a token file existed at that moment, which goes stale when this
    process starts the cluster itself.
    """
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if not token and path.exists():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _submission_client(dashboard_url: str) -> Any:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(dashboard_url, headers=ray_auth_headers())


def deploy(dashboard_url: str, serve_config: dict[str, Any]) -> None:
    try:
        _submission_client(dashboard_url).deploy_applications(serve_config)
    except Exception as error:  # the SDK raises bare RuntimeErrors with the server's text
        raise LocalRuntimeError(f"deploying to {dashboard_url} failed: {error}") from None


def delete_apps(dashboard_url: str, timeout_s: float = 120.0) -> None:
    """Delete every app and wait until Serve's controller has exited.

    The dashboard deletes by shutting Serve down; the applications list empties while the
    controller is still exiting, and a deploy that reaches it then is ignored ("Serve
    controller is shutting down"), so the next app would never start.
    """
    _submission_client(dashboard_url).delete_applications()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            details = serve_details(dashboard_url)
        except RuntimeError as error:  # the SDK's error carries the dashboard's text
            # The controller was killed while the dashboard asked it: still exiting.
            if "ActorDiedError" not in str(error):
                raise
        else:
            if not details.get("applications") and not details.get("controller_info"):
                return
        time.sleep(1.0)
    raise LocalRuntimeError(f"Serve did not shut down within {timeout_s:.0f} s")


def app_status(dashboard_url: str, app_name: str) -> tuple[str, str]:
    """(status, message) of one Serve application, from the dashboard."""
    app = serve_details(dashboard_url).get("applications", {}).get(app_name)
    if app is None:
        return "NOT_STARTED", ""
    return app.get("status", "UNKNOWN"), app.get("message", "")


METRICS_URL = "http://127.0.0.1:8080/metrics"


def scrape_metrics(url: str = METRICS_URL) -> str:
    """The node's Prometheus text (Ray's, Serve's, vLLM's and RayFleet's series)."""
    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise LocalRuntimeError(f"scraping {url} failed: {error}") from None
    return response.text


def serve_details(dashboard_url: str) -> dict[str, Any]:
    details: dict[str, Any] = _submission_client(dashboard_url).get_serve_details()
    return details


def answers(url: str, headers: dict[str, str] | None = None) -> bool:
    """Whether a GET of ``url`` returns 200 now."""
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_answer(
    url: str, timeout_s: float, proc: subprocess.Popen | None = None, poll_s: float = 1.0
) -> None:
    """Block until ``url`` answers 200; fail early if the server process ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LocalRuntimeError(
                f"server exited with code {proc.returncode} before {url} answered"
            )
        if answers(url):
            return
        time.sleep(poll_s)
    raise LocalRuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def wait_until_serving(
    dashboard_url: str,
    app_name: str,
    api_url: str,
    headers: dict[str, str],
    timeout_s: float,
    on_status: Callable[[str], None],
) -> None:
    """Block until the app is RUNNING and /v1/models answers, or fail with Serve's message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, message = app_status(dashboard_url, app_name)
        on_status(status)
        if status == "DEPLOY_FAILED":
            raise LocalRuntimeError(f"application {app_name!r} failed to deploy:\n{message}")
        if status == "RUNNING" and answers(f"{api_url}/v1/models", headers):
            return
        time.sleep(1.0)
    raise LocalRuntimeError(f"application {app_name!r} was not serving after {timeout_s:.0f} s")


def hold_until_interrupted(stop: Callable[[], None]) -> None:
    """Block in the foreground until Ctrl-C or SIGTERM, then run ``stop``."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stop()
