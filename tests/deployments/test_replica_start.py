"""Replica start: Ray's per-node download is skipped only when it would fetch nothing."""

from pathlib import Path

import pytest
from ray.llm._internal.common.utils.import_utils import load_class
from ray.llm._internal.serve.engines.vllm.vllm_models import VLLMEngineConfig
from ray.serve.llm import LLMConfig

from rayfleet.deployments.llm_config import NODE_INIT_CALLBACK
from rayfleet.deployments.replica_start import (
    SkipEmptyNodeDownload,
    can_skip_node_download,
    download_is_empty,
)
from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def engine_config(source: str) -> VLLMEngineConfig:
    config = LLMConfig(model_loading_config={"model_id": "m", "model_source": source})
    return VLLMEngineConfig.from_llm_config(config)


@pytest.mark.parametrize(
    ("source", "empty"),
    [
        ("/models/llama", True),  # a local folder: nothing to fetch
        ("meta-llama/Llama-3.1-8B-Instruct", True),  # vLLM downloads it itself
        ("s3://bucket/llama", False),
        ("gs://bucket/llama", False),
    ],
)
def test_only_cloud_sources_need_ray_s_download(source: str, empty: bool) -> None:
    engine = engine_config(source)
    assert download_is_empty(engine.actual_hf_model_id, engine.mirror_config) is empty


def test_nothing_to_name_is_not_skipped() -> None:
    assert not download_is_empty(None, None)
    assert not download_is_empty("", None)


def test_skipped_only_when_every_bundle_is_on_the_replica_s_node() -> None:
    assert can_skip_node_download("/m", None, ["node-a", "node-a"], "node-a")
    assert not can_skip_node_download("/m", None, ["node-a", "node-b"], "node-a")
    assert not can_skip_node_download("/m", None, ["node-b"], "node-a")
    assert not can_skip_node_download("/m", None, [], "node-a")
    assert not can_skip_node_download("s3://b/m", None, ["node-a"], "node-a")


def test_rendered_configs_name_the_callback_ray_loads() -> None:
    app = render_serve_config(resolve(load_spec(EXAMPLES / "cpu-tiny.yaml")))["applications"][0]
    config = app["args"]["engines"][0]["llm_config"]
    assert config["callback_config"] == {"callback_class": NODE_INIT_CALLBACK}
    ray_config = LLMConfig.model_validate(config)
    assert load_class(ray_config.callback_config.callback_class) is SkipEmptyNodeDownload


async def test_without_a_placement_group_ray_s_step_runs() -> None:
    config = LLMConfig(model_loading_config={"model_id": "m", "model_source": "/m"})
    callback = SkipEmptyNodeDownload(llm_config=config, ctx_kwargs={"placement_group": None})
    await callback.on_before_node_init()
    assert callback.ctx.run_init_node is True
