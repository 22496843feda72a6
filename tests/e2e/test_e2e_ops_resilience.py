"""End to end, on one cluster (2 engine replicas, bearer auth, small queues):
auth, fuzzing, overload, client disconnects, and an engine replica killed under load.

Figures the tests measure are printed with a ``FIGURE`` prefix (run with ``-s``)
and recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parents[1] / "deployments"))
from deployments_fakes import CHAT_BODIES, COMPLETION_BODIES, is_openai_error

pytestmark = pytest.mark.e2e
TOKEN = "e2e-ops-secret-7f3a"
OPS_ENV = {"RAYFLEET_E2E_OPS_KEY": TOKEN}
OPS_SPEC = """
name: rayfleet
models:
  - id: tiny-llama
    source: rayfleet:tiny
    max_model_len: 2048
    pools:
      unified:
        accelerator: {kind: cpu, cpus: 1, kv_cache_gib: 1}
        replicas: 2
        max_ongoing_requests: 4
        max_queued_requests: 4
http: {host: 127.0.0.1, port: 8000, metrics_port: 8080, request_timeout_s: 120}
auth: {api_key_env: RAYFLEET_E2E_OPS_KEY}
"""
MODEL = "tiny-llama"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METRICS = "http://127.0.0.1:8080/metrics"
SHORT = {"model": MODEL, "prompt": "hello there", "max_tokens": 32, "ignore_eos": True}
LONG_TOKENS = 1900
LONG = {"model": MODEL, "prompt": "tick", "max_tokens": LONG_TOKENS, "ignore_eos": True}


def figure(name: str, value: Any) -> None:
    print(f"FIGURE {name}: {value}")


def metric_sum(name: str, **labels: str) -> float:
    text = httpx.get(METRICS, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# Serve's details come through Ray's SDK, run in a child process: this test process
# imported Ray before the cluster (and its auth token) existed.
REPLICAS_SCRIPT = """
import json, sys, time
from rayfleet.platform import local
kind, victim, since = sys.argv[1], sys.argv[2], float(sys.argv[3])
def replicas():
    app = local.serve_details("http://127.0.0.1:8265")["applications"]["rayfleet"]
    for name, deployment in app["deployments"].items():
        if (name == "ingress") == (kind == "ingress"):
            return deployment["replicas"]
while True:
    found = replicas()
    running = [r for r in found if r["state"] == "RUNNING"]
    back = len(running) == 2 and victim not in {r["replica_id"] for r in running}
    if not victim or back or time.time() - since > 180:
        after = time.time() - since if back else None
        print(json.dumps({"replicas": found, "back_after_s": after}))
        break
    time.sleep(0.5)
"""


def run_script(script: str, *args: str) -> dict[str, Any]:
    """Run a script (REPLICAS_SCRIPT, SCALE_SCRIPT) in a child process; its last JSON line."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _replicas_call(kind: str, victim: str = "", since: float = 0.0) -> dict[str, Any]:
    return run_script(REPLICAS_SCRIPT, kind, victim, str(since))


def replicas(kind: str) -> list[dict[str, Any]]:
    """Replica details of the engine deployment ("engine") or the ingress ("ingress")."""
    return list(_replicas_call(kind)["replicas"])


def seconds_until_replaced(victim_id: str, killed_at: float) -> float | None:
    """Wait until the engine deployment has 2 RUNNING replicas again, none the victim."""
    return _replicas_call("engine", victim_id, killed_at)["back_after_s"]


def post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    return client.post(f"/v1/{path}", json=body)


@pytest.fixture(scope="module")
def api(ops_served: str) -> httpx.Client:
    return httpx.Client(base_url=ops_served, headers=AUTH, timeout=120)


# --- security ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("GET", "/health"), ("POST", "/v1/completions")],
)
def test_every_route_needs_the_bearer_token(ops_served: str, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.request(method, f"{ops_served}{path}", headers=headers, json=SHORT)
        assert response.status_code == 401 and is_openai_error(response.json())
    assert httpx.request(method, f"{ops_served}{path}", headers=AUTH, json=SHORT).status_code == 200


def test_the_token_is_never_logged() -> None:
    session = Path("/tmp/ray/session_latest/logs")
    leaks = [
        str(path)
        for path in session.rglob("*")
        if path.is_file() and TOKEN.encode() in path.read_bytes()
    ]
    assert not leaks


# --- bad input ---------------------------------------------------------------------

FUZZED: Counter[str] = Counter()
FUZZ = settings(
    max_examples=260,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: each case is a real request
    suppress_health_check=list(HealthCheck),
)


def fuzz_one(api: httpx.Client, path: str, body: bytes) -> None:
    response = api.post(path, content=body, headers={"content-type": "application/json"})
    FUZZED[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, (body[:120], response.text[:300])
    if response.status_code >= 400:
        assert is_openai_error(response.json()), response.text[:300]


@FUZZ
@given(body=COMPLETION_BODIES)
def test_fuzz_completions(api: httpx.Client, body: bytes) -> None:
    fuzz_one(api, "/v1/completions", body)


@FUZZ
@given(body=CHAT_BODIES)
def test_fuzz_chat(api: httpx.Client, body: bytes) -> None:
    fuzz_one(api, "/v1/chat/completions", body)


def test_still_serving_after_fuzz(api: httpx.Client) -> None:
    figure("fuzz cases answered by class", dict(FUZZED))
    assert sum(FUZZED.values()) >= 500 and "5xx" not in FUZZED
    assert post(api, "completions", SHORT).status_code == 200


# --- overload ----------------------------------------------------------------------


Result = tuple[int, float, str, str | None]  # status, seconds, body, Retry-After


async def _one(client: httpx.AsyncClient, results: list[Result]) -> None:
    started = time.monotonic()
    try:
        response = await client.post("/v1/completions", json=SHORT)
        results.append(
            (
                response.status_code,
                time.monotonic() - started,
                response.text,
                response.headers.get("retry-after"),
            )
        )
    except httpx.HTTPError as error:
        results.append((-1, time.monotonic() - started, repr(error), None))


async def _closed_loop(url: str, workers: int, seconds: float) -> int:
    done = 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                if (await client.post("/v1/completions", json=SHORT)).status_code == 200:
                    done += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def _open_loop(url: str, rate: float, seconds: float) -> list[Result]:
    results: list[Result] = []
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120, limits=limits) as client:
        tasks = []
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(_one(client, results)))
        await asyncio.gather(*tasks)
    return results


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.2)


def test_five_times_capacity_is_shed_with_429s(api: httpx.Client, ops_served: str) -> None:
    # Capacity: completions per second with every engine slot busy (2 replicas x 4).
    measure_s = 6.0
    capacity = asyncio.run(_closed_loop(ops_served, workers=8, seconds=measure_s)) / measure_s
    ingress_pid = replicas("ingress")[0]["pid"]
    sampler = RssSampler(ingress_pid)
    rss_before = sampler.peak
    sampler.start()
    results = asyncio.run(_open_loop(ops_served, rate=5 * capacity, seconds=8.0))
    sampler.running = False
    sampler.join()
    statuses = Counter(status for status, *_ in results)
    figure("capacity req/s", round(capacity, 1))
    figure("offered req/s", round(5 * capacity, 1))
    figure("answers", dict(statuses))
    shed = [r for r in results if r[0] == 429]
    ok = [t for s, t, *_ in results if s == 200]
    figure("429 latency median s", round(statistics.median(r[1] for r in shed), 3))
    figure("200 latency median s", round(statistics.median(ok), 3))
    figure("ingress RSS before/peak MiB", (rss_before >> 20, sampler.peak >> 20))
    assert set(statuses) <= {200, 429}, statuses  # nothing lost, nothing hung
    assert statuses[429] > 0 and statuses[200] > 0
    assert all(is_openai_error(json.loads(text)) and after for _, _, text, after in shed)
    assert sampler.peak - rss_before < 300 << 20
    assert post(api, "completions", SHORT).status_code == 200


# --- client disconnect ---------------------------------------------------------------


def settled_metric(name: str, timeout_s: float = 90) -> float:
    """``name`` once the engines are idle and Ray's periodic export has caught up.

    Ray exports engine metrics every few seconds, so a single read can miss tokens an
    earlier test generated; two equal reads one export period apart cannot.
    """
    last = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = metric_sum(name)
        if value == last and metric_sum("ray_vllm_num_requests_running") == 0:
            return value
        last = value
        time.sleep(6)
    raise AssertionError(f"{name} did not settle within {timeout_s} s")


def test_client_disconnect_aborts_generation(api: httpx.Client, ops_served: str) -> None:
    before = settled_metric("ray_vllm_generation_tokens_total")
    streams = 4
    for _ in range(streams):
        with httpx.stream(
            "POST",
            f"{ops_served}/v1/completions",
            json={**LONG, "stream": True},
            headers=AUTH,
            timeout=60,
        ) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # generation has started; now hang up
    generated = settled_metric("ray_vllm_generation_tokens_total") - before
    figure("tokens generated for 4 abandoned streams of 1900", generated)
    assert generated < streams * LONG_TOKENS / 2


# --- an engine replica killed under load ------------------------------------------------


def shed_wait_s(response: httpx.Response) -> float | None:
    """How long a client waits before retrying a shed request (429 + Retry-After), as
    the OpenAI SDK does (capped at 5 s); None if the response was not shed."""
    if response.status_code == 429 and "retry-after" in response.headers:
        return min(float(response.headers["retry-after"]), 5)
    return None


def _load(url: str, stop: threading.Event, outcomes: Counter[str]) -> None:
    """A client that retries shed requests; counts final outcomes."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
        while not stop.is_set():
            response = client.post("/v1/completions", json=SHORT)
            while (wait_s := shed_wait_s(response)) is not None:
                outcomes["429 then retried"] += 1
                time.sleep(wait_s)
                response = client.post("/v1/completions", json=SHORT)
            outcomes[str(response.status_code)] += 1


def _stream_once(url: str, ends: list[str]) -> None:
    body = {**LONG, "max_tokens": 1200, "stream": True}
    for _ in range(10):
        with httpx.stream(
            "POST", f"{url}/v1/completions", json=body, headers=AUTH, timeout=120
        ) as r:
            wait_s = shed_wait_s(r)
            if wait_s is None:
                status = r.status_code
                events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
                break
        time.sleep(wait_s)
    else:
        ends.append("status 429 ten times")
        return
    if status != 200:
        ends.append(f"status {status}")
        return
    last = json.loads(events[-2]) if len(events) > 1 else {}
    done = bool(events) and events[-1] == "[DONE]"
    ends.append("error" if "error" in last else "complete" if done else "cut")


@contextlib.contextmanager
def under_load(url: str, streams: int) -> Iterator[tuple[Counter[str], list[str]]]:
    """3 request loops and ``streams`` long streams, running for the block (from 2 s
    before it); yields their outcomes and stream endings, complete after the block."""
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    ends: list[str] = []
    workers = [threading.Thread(target=_load, args=(url, stop, outcomes)) for _ in range(3)]
    streamers = [threading.Thread(target=_stream_once, args=(url, ends)) for _ in range(streams)]
    for thread in (*workers, *streamers):
        thread.start()
    time.sleep(2)
    try:
        yield outcomes, ends
    finally:
        stop.set()
        for thread in (*workers, *streamers):
            thread.join(timeout=150)


LOAD_AFTER_KILL_S = 20


def test_killed_replica_loses_no_request_and_comes_back(ops_served: str) -> None:
    victim = replicas("engine")[0]
    retries_before = metric_sum("ray_rayfleet_ingress_retries_total")
    with under_load(ops_served, streams=3) as (outcomes, ends):
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.time()
        # Through Serve noticing the death and routing around it; a load kept up until
        # the new engine is running would only slow that start down (2 cores).
        time.sleep(LOAD_AFTER_KILL_S)
    recovered_s = seconds_until_replaced(victim["replica_id"], killed_at)
    figure("non-streamed requests during kill", dict(outcomes))
    figure("stream endings", dict(Counter(ends)))
    figure("replica recovery s", recovered_s and round(recovered_s, 1))
    resent = metric_sum("ray_rayfleet_ingress_retries_total") - retries_before
    figure("re-sent after replica death (as exported so far)", resent)
    assert recovered_s is not None, "Serve did not bring the killed replica back"
    # 0 lost: re-sent to the live replica, or shed with a 429 the client retried.
    assert set(outcomes) - {"429 then retried"} == {"200"}, outcomes
    assert set(ends) <= {"complete", "error"} and len(ends) == 3, ends  # none cut or hung
    with httpx.Client(base_url=ops_served, headers=AUTH, timeout=60) as client:
        assert post(client, "completions", SHORT).status_code == 200


# --- metrics -----------------------------------------------------------------------


def test_ingress_errors_are_on_the_prometheus_endpoint() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if metric_sum("ray_rayfleet_ingress_errors_total", kind="overloaded", status="429") > 0:
            break
        time.sleep(2)
    assert metric_sum("ray_rayfleet_ingress_errors_total", kind="overloaded", status="429") > 0
    assert metric_sum("ray_rayfleet_ingress_errors_total", kind="unauthorized", status="401") > 0


def test_status_shows_live_pool_figures(ops_served: str) -> None:
    status = subprocess.run(
        [str(Path(sys.executable).parent / "rayfleet"), "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "RAY_AUTH_MODE": "token"},
    )
    assert status.returncode == 0, status.stderr[-2000:]
    print(status.stdout)
    assert "Pools (live" in status.stdout and "tiny-llama-unified" in status.stdout
    assert "overloaded 429" in status.stdout


# --- an ingress replica stopped under load -------------------------------------------

# Scales the ingress in place (the serve config's per-deployment override, as
# `serve deploy` users do); waits until it has exactly that many RUNNING replicas.
SCALE_SCRIPT = """
import json, sys, time
from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform import local
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import load_spec
spec, count = sys.argv[1], int(sys.argv[2])
config = render_serve_config(resolve(load_spec(spec)))
config["applications"][0]["deployments"] = [{"name": "ingress", "num_replicas": count}]
started = time.time()
local.deploy("http://127.0.0.1:8265", config)
while time.time() - started < 180:
    app = local.serve_details("http://127.0.0.1:8265")["applications"]["rayfleet"]
    states = [r["state"] for r in app["deployments"]["ingress"]["replicas"]]
    if states == ["RUNNING"] * count:
        break
    time.sleep(0.5)
print(json.dumps({"states": states, "seconds": time.time() - started}))
"""


def scale_ingress(spec: Path, count: int) -> dict[str, Any]:
    return run_script(SCALE_SCRIPT, str(spec), str(count))


def test_ingress_scale_in_under_load_loses_no_request(ops_served: str, tmp_path: Path) -> None:
    """A stopping ingress replica stays reachable for Serve's drain period (5 s in
    SERVE_ENV, not Ray's 30 s), then refuses new connections, which HAProxy retries
    elsewhere; what it already holds, streams included, finishes."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(OPS_SPEC)
    assert scale_ingress(spec, 2)["states"] == ["RUNNING"] * 2
    with under_load(ops_served, streams=4) as (outcomes, ends):
        scaled_in = scale_ingress(spec, 1)
        time.sleep(2)
    figure("ingress scale-in 2 -> 1 s", round(scaled_in["seconds"], 1))
    figure("non-streamed requests during scale-in", dict(outcomes))
    figure("stream endings", dict(Counter(ends)))
    assert scaled_in["states"] == ["RUNNING"], scaled_in
    assert scaled_in["seconds"] < 20, scaled_in  # Ray's default drain alone is 30 s
    assert set(outcomes) - {"429 then retried"} == {"200"}, outcomes
    assert ends == ["complete"] * 4, ends
