"""Prefill/decode configuration: the KV connector per backend, and pool agreement.

Pure Python (rendering runs without Ray or vLLM). The decode engine also carries
the per-request policy in its LLMConfig's ``experimental_configs`` under
``PD_SETTINGS_KEY``, where ``pd.RayFleetPDDecodeServer`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rayfleet.platform.spec import Accelerator, Disaggregation, Model, Role, Router

PD_SETTINGS_KEY = "rayfleet_pd"
# Ray's PD builder moves decode's NIXL side channel off prefill's default (20000),
# so a prefill and a decode replica on one node do not collide.
DECODE_NIXL_PORT_BASE = 22000
SHARED_STORAGE_ROOT = "/tmp/rayfleet-kv"
AUTO_CONNECTOR = {"cpu": "shared-storage", "gpu": "nixl", "tpu": "tpu"}
CONNECTOR_KINDS = {  # which accelerators each connector moves KV between
    "nixl": {"gpu"},
    "tpu": {"tpu"},
    "lmcache": {"gpu"},
    "shared-storage": {"cpu", "gpu"},
}
# Engine settings that change the KV layout: the two pools must agree on them.
KV_KEYS = (
    "dtype",
    "kv_cache_dtype",
    "block_size",
    "max_model_len",
    "tokenizer",
    "revision",
    "quantization",
    "hf_overrides",
)


class PoolMismatchError(ValueError):
    """The prefill and decode pools cannot share KV caches."""


def disaggregation_of(model: Model) -> Disaggregation:
    return model.disaggregation or Disaggregation()


def resolve_connector(model: Model) -> str:
    """The connector name after ``auto``, checked against the pools' hardware."""
    assert model.pools.prefill is not None and model.pools.decode is not None
    kind = model.pools.decode.accelerator.kind
    connector = disaggregation_of(model).connector
    if connector == "auto":
        return AUTO_CONNECTOR[kind]
    if kind not in CONNECTOR_KINDS[connector]:
        raise PoolMismatchError(
            f"model {model.id!r}: disaggregation.connector {connector!r} does not run on "
            f"{kind} pools (it needs {' or '.join(sorted(CONNECTOR_KINDS[connector]))})"
        )
    return connector


def kv_transfer_config(connector: str, model_id: str, role: Role) -> dict[str, Any]:
    """vLLM's ``kv_transfer_config`` for one engine; both pools use ``kv_both``."""
    if connector == "nixl":
        return {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    if connector == "tpu":
        return {
            "kv_connector": "TPUConnector",
            "kv_connector_module_path": "tpu_inference.distributed.tpu_connector",
            "kv_role": "kv_both",
        }
    if connector == "lmcache":
        return {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    if connector == "shared-storage":
        # vLLM's ExampleConnector: prefill writes full KV blocks to files that decode
        # reads back. The folder must be shared by both pools (one host, or a shared FS
        # set through the pool's engine_kwargs.kv_transfer_config).
        return {
            "kv_connector": "ExampleConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {
                "shared_storage_path": f"{SHARED_STORAGE_ROOT}/{model_id}"
            },
        }
    raise ValueError(f"unknown KV connector {connector!r}")


def _kv_settings(
    model: Model, role: Role, backend_kwargs: Callable[[Accelerator], dict[str, Any]]
) -> dict[str, Any]:
    pool = getattr(model.pools, role)
    merged = {
        "max_model_len": model.max_model_len,
        "tokenizer": model.tokenizer,
        **backend_kwargs(pool.accelerator),
        **model.engine_kwargs,
        **pool.engine_kwargs,
    }
    return {key: merged.get(key) for key in KV_KEYS}


def validate_pools_agree(
    model: Model, backend_kwargs: Callable[[Accelerator], dict[str, Any]]
) -> None:
    """Raise when prefill's KV could not be read by decode."""
    prefill, decode = model.pools.prefill, model.pools.decode
    if prefill is None or decode is None:
        raise PoolMismatchError(f"model {model.id!r}: disaggregation needs prefill and decode")
    if prefill.accelerator.kind != decode.accelerator.kind:
        raise PoolMismatchError(
            f"model {model.id!r}: prefill runs on {prefill.accelerator.kind} but decode on "
            f"{decode.accelerator.kind}; KV caches cannot move between them"
        )
    resolve_connector(model)
    p_kv = _kv_settings(model, "prefill", backend_kwargs)
    d_kv = _kv_settings(model, "decode", backend_kwargs)
    differing = {k: (p_kv[k], d_kv[k]) for k in KV_KEYS if p_kv[k] != d_kv[k]}
    if differing:
        details = ", ".join(f"{k}: prefill={p!r} decode={d!r}" for k, (p, d) in differing.items())
        raise PoolMismatchError(
            f"model {model.id!r}: the prefill and decode pools must agree on KV-cache "
            f"settings; they differ in {details}"
        )


def pd_settings(model: Model, role: Role, router: Router) -> tuple[dict, dict]:
    """(kv_transfer_config, experimental_configs) for one engine of a split model."""
    connector = resolve_connector(model)
    kv = kv_transfer_config(connector, model.id, role)
    if role != "decode":
        return kv, {}
    policy = disaggregation_of(model)
    experimental: dict[str, Any] = {
        PD_SETTINGS_KEY: {
            "min_uncached_tokens": policy.min_uncached_tokens,
            "max_prefill_queue": policy.max_prefill_queue,
            "block_tokens": router.block_tokens,
            "cache_capacity_blocks": router.cache_capacity_blocks,
            "chars_per_token": router.chars_per_token,
        }
    }
    if connector == "nixl":
        experimental["NIXL_SIDE_CHANNEL_PORT_BASE"] = DECODE_NIXL_PORT_BASE
    return kv, experimental
