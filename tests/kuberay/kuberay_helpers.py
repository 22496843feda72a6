"""Test helpers: example plans, a hand-made serve config and a fake Kubernetes API server."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from kubernetes import client as k8s

from rayfleet.platform.plan import Plan, resolve
from rayfleet.platform.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "gpu-l4": REPO / "examples" / "gpu-l4-llama-8b.yaml",
    "tpu-v6e-2x4": REPO / "examples" / "tpu-v6e-2x4-llama-8b.yaml",
    "tpu-v6e-4x4": REPO / "examples" / "tpu-v6e-4x4-llama-70b.yaml",
    "gpu-h100-pd": REPO / "examples" / "gpu-h100-pd-llama-70b.yaml",
}


def example_plan(name: str) -> Plan:
    return resolve(load_spec(EXAMPLES[name]))


def hand_serve_config(plan: Plan) -> dict[str, Any]:
    """A small Ray Serve deploy config shaped like the lead's render_serve_config output."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": plan.spec.http.port},
        "applications": [
            {
                "name": plan.spec.name,
                "route_prefix": "/",
                "import_path": "rayfleet.deployments.app:build_app",
                "args": {"deployments": [e.deployment_name for e in plan.engines]},
            }
        ],
    }


# --- A fake Kubernetes API server for ray.io/v1 custom objects -----------------------

OBJECT_PATH = "/apis/ray.io/v1/namespaces/{ns}/{plural}/{name}"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: str


@dataclass
class FakeKubeApi:
    """In-memory GET / PATCH (server-side apply only) / DELETE of namespaced ray.io objects.

    Behaves like the API server where the client depends on it: apply needs the
    apply-patch content type and a fieldManager, the body's namespace and name
    must match the URL, spec changes bump metadata.generation, status survives
    applies, and missing objects answer 404 with a Status body.
    """

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """What the KubeRay operator would write to the status subresource."""
        with self.lock:
            self.objects[(namespace, "rayservices", name)]["status"] = status

    def generation(self, namespace: str, name: str) -> int:
        with self.lock:
            return int(self.objects[(namespace, "rayservices", name)]["metadata"]["generation"])

    def handle(self, method: str, raw_path: str, content_type: str, body: str) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        self.requests.append(RecordedRequest(method, url.path, query, content_type, body))
        parts = url.path.strip("/").split("/")
        if len(parts) != 7 or parts[:4] != ["apis", "ray.io", "v1", "namespaces"]:
            return 404, _status(404, "NotFound", f"no route for {url.path}")
        key = (parts[4], parts[5], parts[6])
        with self.lock:
            if method == "GET":
                return self._get(key)
            if method == "PATCH":
                return self._apply(key, query, content_type, body)
            if method == "DELETE":
                found = self.objects.pop(key, None)
                return (200, _status(200, "", "deleted")) if found else self._missing(key)
        return 405, _status(405, "MethodNotAllowed", method)

    def _missing(self, key: tuple[str, str, str]) -> tuple[int, Any]:
        return 404, _status(404, "NotFound", f'{key[1]}.ray.io "{key[2]}" not found')

    def _get(self, key: tuple[str, str, str]) -> tuple[int, Any]:
        return (200, self.objects[key]) if key in self.objects else self._missing(key)

    def _apply(
        self, key: tuple[str, str, str], query: dict[str, list[str]], content_type: str, body: str
    ) -> tuple[int, Any]:
        if content_type != "application/apply-patch+yaml":
            return 415, _status(415, "UnsupportedMediaType", f"unsupported {content_type}")
        if not query.get("fieldManager"):
            return 422, _status(422, "Invalid", "fieldManager is required for apply requests")
        applied = yaml.safe_load(body)
        metadata = applied.get("metadata", {})
        if (metadata.get("namespace"), metadata.get("name")) != (key[0], key[2]):
            return 400, _status(400, "BadRequest", "object namespace/name do not match the URL")
        stored = self.objects.get(key)
        if stored is None:
            metadata.update(generation=1, uid=str(uuid.uuid4()), resourceVersion="1")
            self.objects[key] = applied
            return 201, applied
        if applied.get("spec") != stored.get("spec"):
            stored["metadata"]["generation"] += 1
        stored["spec"] = applied.get("spec")
        stored["metadata"]["labels"] = metadata.get("labels", {})
        stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)
        return 200, stored


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    outcome = "Success" if code < 400 else "Failure"
    return {"kind": "Status", "apiVersion": "v1", "status": outcome, "message": message,
            "reason": reason, "code": code}  # fmt: skip


def _handler(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            code, payload = api.handle(
                self.command, self.path, self.headers.get("Content-Type", ""), body
            )
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve_fake_kube() -> Iterator[tuple[FakeKubeApi, k8s.ApiClient]]:
    """The fake on 127.0.0.1 (random port) and a real kubernetes ApiClient pointed at it."""
    api = FakeKubeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    api_client = k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{server.server_port}"))
    try:
        yield api, api_client
    finally:
        api_client.close()
        server.shutdown()
        server.server_close()
