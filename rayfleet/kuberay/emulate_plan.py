"""Manifest → what ``rayfleet emulate`` starts: pure functions, no Ray.

A rendered RayService (or RayCluster) becomes a node plan (one raylet per
worker-group replica × host, scaled and capped) and, for a RayService, a serve
config rewritten to run here: accelerator engines become CPU vLLM engines,
models too large for this machine become the embedded tiny model. Placement is
left to Ray's scheduler: each engine keeps (or gets) a bundle label selector on
its group's ``rayfleet.io/group`` node label, which the raylets carry.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rayfleet.platform.plan import GROUP_LABEL
from rayfleet.platform.spec import EMBEDDED_TINY

GPU_LIMIT = "nvidia.com/gpu"
TPU_LIMIT = "google.com/tpu"
ACCELERATOR_LABEL = "ray.io/accelerator-type"
TOPOLOGY_LABEL = "ray.io/tpu-topology"
# Logical CPUs per emulated raylet: room for one CPU engine plus the next one a
# rolling update starts; engines pin real cores themselves.
NODE_CPUS = 2
NODE_OBJECT_STORE_BYTES = 100 * 1024**2
TINY_MAX_MODEL_LEN = 2048
CPU_ENGINE_KWARGS = {"dtype": "float32", "enforce_eager": True}
# Engine kwargs that only mean something on GPUs/TPUs (or for the replaced model).
ACCELERATOR_ONLY_KWARGS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "gpu_memory_utilization",
    "quantization",
)
MODEL_ONLY_KWARGS = ("tokenizer", "chat_template", "revision", "hf_overrides")
KV_CACHE_GIB = "1"
SHARED_KV_ROOT = "/tmp/rayfleet-emulate-kv"
CPU_KV_CONNECTOR = "ExampleConnector"  # the connector that runs on vLLM-CPU (facts)


class ManifestError(ValueError):
    """The manifest is not a RayService/RayCluster RayFleet can emulate; says which field."""


@dataclass(frozen=True)
class NodeSpec:
    """One emulated raylet: a host of one worker-group replica."""

    group: str
    index: int  # position among all worker raylets (picks its ports)
    labels: dict[str, str]
    resources: dict[str, float]
    num_gpus: int
    slice_hosts: int = 1  # numOfHosts: one engine replica spans this many hosts
    env: dict[str, str] = field(default_factory=dict)  # the pod's plain env values

    def labels_arg(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items())

    def resources_arg(self) -> str:
        return json.dumps(self.resources, sort_keys=True)


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str
    cluster: dict[str, Any]
    serve_config: dict[str, Any] | None

    @property
    def worker_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.cluster.get("workerGroupSpecs") or []
        return groups

    @property
    def metrics_port(self) -> int:
        params = self.cluster.get("headGroupSpec", {}).get("rayStartParams", {})
        return int(params.get("metrics-export-port", 8080))


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Read a RayService or RayCluster; errors name the field that is wrong."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ManifestError(f"{source}: not YAML: {error}") from None
    if not isinstance(doc, dict) or doc.get("kind") not in ("RayService", "RayCluster"):
        raise ManifestError(f"{source}: kind must be RayService or RayCluster")
    spec = doc.get("spec") or {}
    name = (doc.get("metadata") or {}).get("name") or "rayfleet"
    if doc["kind"] == "RayCluster":
        return Manifest(name, "RayCluster", spec, None)
    cluster = spec.get("rayClusterConfig")
    if not isinstance(cluster, dict):
        raise ManifestError(f"{source}: spec.rayClusterConfig is missing")
    raw = spec.get("serveConfigV2")
    if not isinstance(raw, str):
        raise ManifestError(f"{source}: spec.serveConfigV2 must be a YAML string")
    serve_config = yaml.safe_load(raw)
    if not isinstance(serve_config, dict) or not isinstance(serve_config.get("applications"), list):
        raise ManifestError(f"{source}: spec.serveConfigV2 has no `applications` list")
    return Manifest(name, "RayService", cluster, serve_config)


def load_manifest(path: Path) -> Manifest:
    try:
        text = path.read_text()
    except OSError as error:
        raise ManifestError(f"cannot read {path}: {error.strerror}") from None
    return parse_manifest(text, str(path))


def scaled(count: int, scale: float, floor: int = 1) -> int:
    """``count`` × ``scale`` rounded up, never below ``floor`` (0 stays 0 when floor is 0)."""
    return max(floor, math.ceil(count * scale - 1e-9))


def _container(group: dict[str, Any]) -> dict[str, Any]:
    containers = group.get("template", {}).get("spec", {}).get("containers") or [{}]
    container: dict[str, Any] = containers[0]
    return container


def _limits(group: dict[str, Any]) -> dict[str, Any]:
    limits: dict[str, Any] = _container(group).get("resources", {}).get("limits", {})
    return limits


def _plain_env(group: dict[str, Any]) -> dict[str, str]:
    """The container's literal env (Serve's settings); secret references stay behind."""
    entries = _container(group).get("env") or []
    return {e["name"]: str(e["value"]) for e in entries if "value" in e}


def _group_node(group: dict[str, Any]) -> tuple[dict[str, str], dict[str, float], int]:
    """(labels, custom resources, GPUs) of one host, as KubeRay would start it."""
    name = group["groupName"]
    labels = {str(k): str(v) for k, v in (group.get("labels") or {}).items()}
    labels.setdefault(GROUP_LABEL, name)
    resources = {str(k): float(v) for k, v in (group.get("resources") or {}).items()}
    limits = _limits(group)
    if TPU_LIMIT in limits:
        resources.setdefault("TPU", float(limits[TPU_LIMIT]))
    return labels, resources, int(limits.get(GPU_LIMIT, 0))


def node_plan(manifest: Manifest, scale: float, max_nodes: int) -> list[NodeSpec]:
    """One raylet per worker-group replica × host, scaled, then capped at ``max_nodes``.

    Every group keeps at least one raylet, so every pool still has its own group;
    a cap below the number of groups is an error rather than a silent merge.
    """
    groups = manifest.worker_groups
    if not groups:
        raise ManifestError("the manifest has no workerGroupSpecs to emulate")
    if len(groups) > max_nodes:
        raise ManifestError(
            f"{len(groups)} worker groups need at least {len(groups)} raylets; "
            f"--max-nodes is {max_nodes}"
        )
    wanted: list[int] = []
    for i, group in enumerate(groups):
        if "groupName" not in group:
            raise ManifestError(f"workerGroupSpecs[{i}].groupName is missing")
        hosts = int(group.get("numOfHosts", 1))
        wanted.append(scaled(int(group.get("replicas", 1)), scale) * hosts)
    counts = _cap(wanted, max_nodes)
    nodes: list[NodeSpec] = []
    for group, count in zip(groups, counts, strict=True):
        labels, resources, gpus = _group_node(group)
        hosts, env = int(group.get("numOfHosts", 1)), _plain_env(group)
        for _ in range(count):
            nodes.append(
                NodeSpec(group["groupName"], len(nodes), labels, resources, gpus, hosts, env)
            )
    return nodes


def _cap(wanted: list[int], limit: int) -> list[int]:
    """Shrink the biggest groups first until the total fits; each keeps one."""
    counts = list(wanted)
    while sum(counts) > limit:
        biggest = max(range(len(counts)), key=lambda i: counts[i])
        counts[biggest] -= 1
    return counts


# ---- serve config rewriting -------------------------------------------------------

_PARAMS = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def model_bytes(source: str) -> int | None:
    """Float32 weight bytes of a model, when knowable without downloading it."""
    if source == EMBEDDED_TINY:
        return 0
    path = Path(source)
    if path.is_dir():
        weights = [*path.glob("*.safetensors"), *path.glob("*.bin")]
        return sum(w.stat().st_size for w in weights) * 2  # bf16 files run as float32
    found = _PARAMS.findall(source.rsplit("/", 1)[-1])
    return int(float(found[-1]) * 1e9 * 4) if found else None


def fits(source: str, budget_bytes: int) -> bool:
    size = model_bytes(source)
    return size is not None and size <= budget_bytes


@dataclass
class Rewrite:
    """The rewritten serve config and what was changed, for the user to read."""

    serve_config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RewriteOptions:
    scale: float = 1.0
    model: str | None = None  # replaces every model's source when given
    budget_bytes: int = 4 * 1024**3  # per engine; bigger models become the tiny one
    cores: int = 2


def rewrite_serve_config(
    config: dict[str, Any], nodes: list[NodeSpec], options: RewriteOptions
) -> Rewrite:
    """The deploy config to run on the emulated cluster (the input is not modified)."""
    out = copy.deepcopy(config)
    out["proxy_location"] = "HeadOnly"  # one proxy: the raylets share this host's ports
    out.setdefault("http_options", {})["host"] = "127.0.0.1"
    rewrite = Rewrite(out, ["serve: proxy_location HeadOnly, host 127.0.0.1 (one host)"])
    replicas_per_group = group_replicas(nodes)
    engine_index = 0
    for app in out["applications"]:
        for engine in (app.get("args") or {}).get("engines") or []:
            llm = engine["llm_config"]
            group = _group_of(llm, nodes)
            _rewrite_engine(llm, group, engine_index, options, rewrite.notes)
            room = replicas_per_group.get(group or "", len(nodes))
            _scale_replicas(llm, options.scale, room)
            engine_index += 1
    return rewrite


def group_replicas(nodes: list[NodeSpec]) -> dict[str, int]:
    """Emulated worker-group replicas (whole slices) per group; at least one each."""
    hosts: dict[str, int] = {}
    for node in nodes:
        hosts[node.group] = hosts.get(node.group, 0) + 1
    slice_hosts = {n.group: n.slice_hosts for n in nodes}
    return {g: max(1, count // slice_hosts[g]) for g, count in hosts.items()}


def _group_of(llm: dict[str, Any], nodes: list[NodeSpec]) -> str | None:
    """The worker group an engine belongs on: its own selector, else its accelerator."""
    selectors = llm.get("deployment_config", {}).get("placement_group_bundle_label_selector")
    if selectors and GROUP_LABEL in selectors[0]:
        return str(selectors[0][GROUP_LABEL])
    wanted = {ACCELERATOR_LABEL: llm.get("accelerator_type")}
    topology = (llm.get("accelerator_config") or {}).get("topology")
    if topology:
        wanted[TOPOLOGY_LABEL] = topology
    matches = {n.group for n in nodes if all(n.labels.get(k) == v for k, v in wanted.items() if v)}
    if wanted[ACCELERATOR_LABEL] and len(matches) == 1:
        return matches.pop()
    groups = {n.group for n in nodes}
    return groups.pop() if len(groups) == 1 else None


def _on_accelerator(llm: dict[str, Any]) -> bool:
    bundles = (llm.get("placement_group_config") or {}).get("bundles") or []
    accelerator_bundle = any("GPU" in b or "TPU" in b for b in bundles)
    return bool(llm.get("accelerator_type") or llm.get("accelerator_config") or accelerator_bundle)


def _rewrite_engine(
    llm: dict[str, Any], group: str | None, index: int, options: RewriteOptions, notes: list[str]
) -> None:
    loading = llm["model_loading_config"]
    name = llm["deployment_config"].get("name", loading["model_id"])
    kwargs = llm.setdefault("engine_kwargs", {})
    if _on_accelerator(llm):
        was = llm.get("accelerator_type") or "accelerator"
        for key in ("accelerator_type", "accelerator_config"):
            llm.pop(key, None)
        for key in ACCELERATOR_ONLY_KWARGS:
            kwargs.pop(key, None)
        kwargs.update(CPU_ENGINE_KWARGS)
        # CPU-only bundles: a GPU/TPU key would select vLLM's GPU backend.
        llm["placement_group_config"] = {"bundles": [{"CPU": 1}], "strategy": "PACK"}
        llm["deployment_config"]["ray_actor_options"] = {"num_cpus": 0}
        env = llm.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env.pop("RAYFLEET_EXPECT_TPU", None)
        env.update(
            VLLM_CPU_KVCACHE_SPACE=KV_CACHE_GIB,
            RAYFLEET_CPU_CORE_OFFSET=str(index % options.cores),
            RAYFLEET_CPUS_PER_ENGINE="1",
        )
        notes.append(f"engine {name}: {was} engine → CPU vLLM engine (float32, eager)")
    if group is not None:
        bundles = llm.get("placement_group_config", {}).get("bundles") or [{}]
        llm["deployment_config"]["placement_group_bundle_label_selector"] = [
            {GROUP_LABEL: group}
        ] * len(bundles)
    _swap_model(llm, name, options, notes)
    _cpu_kv_connector(kwargs, loading["model_id"], name, notes)


def _swap_model(llm: dict[str, Any], name: str, options: RewriteOptions, notes: list[str]) -> None:
    loading = llm["model_loading_config"]
    source = loading["model_source"]
    if options.model is not None:
        replacement = options.model
        why = "--model"
    elif fits(source, options.budget_bytes):
        return
    else:
        replacement = EMBEDDED_TINY
        size = model_bytes(source)
        why = "too large here" if size is not None else "size unknown"
        why += f", budget {options.budget_bytes / 1024**3:.1f} GiB per engine"
    if replacement == source:
        return
    loading["model_source"] = replacement
    kwargs = llm["engine_kwargs"]
    for key in MODEL_ONLY_KWARGS:
        kwargs.pop(key, None)
    kwargs["max_model_len"] = min(int(kwargs.get("max_model_len", TINY_MAX_MODEL_LEN)), 2048)
    notes.append(f"engine {name}: model {source} → {replacement} ({why})")


def _cpu_kv_connector(kwargs: dict[str, Any], model_id: str, name: str, notes: list) -> None:
    """Prefill/decode KV transfer through files: the connector vLLM-CPU runs."""
    kv = kwargs.get("kv_transfer_config")
    if not kv or kv.get("kv_connector") == CPU_KV_CONNECTOR:
        return
    kwargs["kv_transfer_config"] = {
        "kv_connector": CPU_KV_CONNECTOR,
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"shared_storage_path": f"{SHARED_KV_ROOT}/{model_id}"},
    }
    notes.append(f"engine {name}: KV connector {kv.get('kv_connector')} → {CPU_KV_CONNECTOR}")


def _scale_replicas(llm: dict[str, Any], scale: float, group_nodes: int) -> None:
    """Scale the pool like its group, and never past one engine per emulated replica."""
    deployment = llm["deployment_config"]
    autoscaling = deployment.get("autoscaling_config")
    if autoscaling:
        top = min(scaled(int(autoscaling.get("max_replicas", 1)), scale), group_nodes)
        low = min(scaled(int(autoscaling.get("min_replicas", 1)), scale, floor=0), top)
        autoscaling["max_replicas"], autoscaling["min_replicas"] = top, low
        if "initial_replicas" in autoscaling:
            autoscaling["initial_replicas"] = low
    elif "num_replicas" in deployment:
        deployment["num_replicas"] = min(
            scaled(int(deployment["num_replicas"]), scale), group_nodes
        )
