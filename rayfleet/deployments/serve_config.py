"""Plan → the Ray Serve deploy config (what `serve deploy` and serveConfigV2 take).

Every runtime deploys this dict: `rayfleet up` locally, KubeRay as serveConfigV2,
and the emulator. The app builder named in ``import_path`` only instantiates it.
"""

from __future__ import annotations

from typing import Any

from rayfleet.deployments.llm_config import llm_config
from rayfleet.platform.plan import Plan

APP_BUILDER = "rayfleet.deployments.app:build_app"
# Environment Ray Serve must start with (read by `ray start`, so it is set on the
# nodes, not in the serve config). Measured on a 2-core host (docs/benchmarks.md):
# HAProxy forwards HTTP straight to the ingress replica instead of through Ray's
# Python proxy; the throughput-optimized mode removes thread hand-offs and uses gRPC
# between replicas (together: TTFT p50 30 -> 17 ms); and workers at niceness 0
# instead of Ray's 15 keep Ray's own daemons from pre-empting the engine and the
# ingress (1.23x -> 0.98x bare vLLM's TTFT p50 in an A/B, medians of 3 rounds each);
# Serve's control loop every 0.5 s instead of 0.1 s cuts the controller's CPU, shared
# with the engine, from 1.2 to 0.5 s per 35 s benchmark run; its TTFT effect was
# within the noise.
# Replica changes reach the routes up to 0.4 s later.
# A stopping ingress replica stays reachable 5 s (Ray's default is 30 s, sized for
# external load balancers) before it refuses new connections: only Serve's own
# HAProxy sends to it, which drops it from its config within about a second and
# retries a refused connection on another replica. Deleting an app, scaling in and
# rolling updates finish 25 s sooner.
SERVE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_worker_niceness": "0",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
}


def render_app_args(plan: Plan) -> dict[str, Any]:
    spec = plan.spec
    return {
        "engines": [
            {
                "model_id": e.model.id,
                "role": e.role,
                "llm_config": llm_config(e, spec.router, plan.places_by_group),
            }
            for e in plan.engines
        ],
        "api_key_env": spec.auth.api_key_env,
        "request_timeout_s": spec.http.request_timeout_s,
        "ingress_replicas": spec.http.ingress_replicas,
        "engine_in_ingress": plan.engine_in_ingress,
    }


def render_serve_config(plan: Plan) -> dict[str, Any]:
    spec = plan.spec
    return {
        "proxy_location": "EveryNode",
        "http_options": {
            "host": spec.http.host,
            "port": spec.http.port,
            "request_timeout_s": spec.http.request_timeout_s,
        },
        "applications": [
            {
                "name": spec.name,
                "route_prefix": "/",
                "import_path": APP_BUILDER,
                "args": render_app_args(plan),
            }
        ],
    }
