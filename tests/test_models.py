"""Model specs: shipped Hugging Face configs, loading, validation, parallelism checks."""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.errors import VidurError
from vidur.hardware.catalog import get_node
from vidur.model import catalog
from vidur.model.catalog import (
    ALIASES,
    CONFIG_DIR,
    TINY_MODEL,
    builtin_model_names,
    check_parallelism,
    kv_heads_per_rank,
    load_config_file,
    load_model,
)
from vidur.model.cost import kv_bytes_per_token, layer_params_per_rank, stage_weights_bytes
from vidur.model.spec import ModelSpec
from vidur.plugins import PluginHost

# published parameter counts (model cards / safetensors totals)
PUBLISHED = {
    "meta-llama/Llama-2-7b-hf": 6.74e9,
    "meta-llama/Llama-2-13b-hf": 13.0e9,
    "meta-llama/Llama-2-70b-hf": 69.0e9,
    "meta-llama/Meta-Llama-3-8B": 8.03e9,
    "meta-llama/Meta-Llama-3-70B": 70.6e9,
    "meta-llama/Llama-3.1-8B": 8.03e9,
    "meta-llama/Llama-3.1-70B": 70.6e9,
    "mistralai/Mistral-7B-v0.1": 7.24e9,
    "Qwen/Qwen2.5-7B": 7.61e9,
    "Qwen/Qwen2.5-72B": 72.7e9,
    "codellama/CodeLlama-34b-Instruct-hf": 33.7e9,
    "internlm/internlm-20b": 20.0e9,
    "Qwen/Qwen-72B": 72.3e9,
    "microsoft/phi-2": 2.78e9,
}


def test_every_required_model_is_shipped():
    names = set(builtin_model_names())
    assert set(PUBLISHED) <= names
    assert TINY_MODEL in names
    assert "meta-llama/Meta-Llama-3.1-8B" in names


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_counts_match_published(name):
    spec = load_model(name)
    assert spec.num_params() == pytest.approx(PUBLISHED[name], rel=0.02)


def test_exact_param_counts():
    # exact totals of the Hugging Face checkpoints
    assert load_model("meta-llama/Llama-2-7b-hf").num_params() == 6_738_415_616
    assert load_model("meta-llama/Meta-Llama-3-8B").num_params() == 8_030_261_248
    assert load_model("mistralai/Mistral-7B-v0.1").num_params() == 7_241_732_096
    assert load_model("microsoft/phi-2").num_params() == 2_779_683_840


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*/*.json")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_config_loads(path):
    name = f"{path.parent.name}/{path.stem}"
    spec = load_config_file(path, name=name)
    assert spec.name == name
    assert load_model(name) == spec
    assert spec.num_heads % spec.num_kv_heads == 0
    raw = json.loads(path.read_text())
    assert raw["num_hidden_layers"] == spec.num_layers
    assert raw["vocab_size"] == spec.vocab_size


def test_builtin_models_are_registered_plugins():
    host = PluginHost(autoload=False)
    for name in builtin_model_names():
        assert host.get("model", name).name == name


def test_aliases_share_the_shape():
    for alias, target in ALIASES.items():
        assert attrs.evolve(load_model(alias), name=target) == load_model(target)


def test_llama_shapes():
    m = load_model("meta-llama/Llama-2-70b-hf")
    assert (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim) == (8192, 80, 64, 8, 128)
    assert m.intermediate_size == 28672 and m.gated_mlp and m.norm == "rmsnorm"
    l3 = load_model("meta-llama/Llama-3.1-8B")
    assert l3.max_position_embeddings == 131072 and l3.rope_theta == 500000.0 and l3.vocab_size == 128256


def test_qwen1_fields_are_mapped():
    m = load_model("Qwen/Qwen-72B")
    assert m.intermediate_size == 24576  # HF intermediate_size 49152 counts w1 and w2
    assert m.head_dim == 128 and m.num_kv_heads == 64
    assert m.attention_bias and not m.output_bias
    assert m.rope_theta == 1_000_000.0
    assert m.max_position_embeddings == 32768


def test_phi2_fields_are_mapped():
    m = load_model("microsoft/phi-2")
    assert m.norm == "layernorm" and not m.gated_mlp and m.parallel_attn_mlp
    assert m.activation == "gelu_new"
    assert m.partial_rotary_factor == pytest.approx(0.4)
    assert m.attention_bias and m.output_bias and m.mlp_bias and m.lm_head_bias
    assert m.head_dim == 80 and m.norms_per_layer == 1


def test_qwen2_and_internlm():
    q = load_model("Qwen/Qwen2.5-7B")
    assert q.attention_bias and not q.output_bias and q.num_kv_heads == 4 and q.head_dim == 128
    i = load_model("internlm/internlm-20b")
    assert i.num_layers == 60 and i.vocab_size == 103168 and not i.attention_bias


def test_tiny_model():
    m = load_model(TINY_MODEL)
    assert (m.hidden_size, m.num_heads, m.num_kv_heads, m.num_layers) == (256, 4, 2, 4)
    assert (m.intermediate_size, m.vocab_size, m.max_position_embeddings) == (688, 1024, 2048)
    assert m.num_params() < 5e6


def test_short_name_lookup():
    assert load_model("Llama-2-7b-hf").name == "meta-llama/Llama-2-7b-hf"


def test_unknown_name_lists_close_matches():
    with pytest.raises(VidurError, match="Llama-2-7b-hf"):
        load_model("meta-llama/Llama-2-7b")


def test_local_file_and_directory(tmp_path):
    cfg = json.loads((CONFIG_DIR / "meta-llama" / "Llama-2-7b-hf.json").read_text())
    cfg["num_hidden_layers"] = 2
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    by_dir = load_model(str(d))
    assert by_dir.num_layers == 2 and by_dir.name == "my-model"
    by_file = load_model(str(d / "config.json"))
    assert by_file == by_dir
    other = tmp_path / "custom.json"
    other.write_text(json.dumps(cfg))
    assert load_model(other).name == "custom"


def test_bad_paths(tmp_path):
    with pytest.raises(VidurError, match="does not exist"):
        load_model(str(tmp_path / "nope.json"))
    with pytest.raises(VidurError, match="no config.json"):
        load_model(str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VidurError, match="bad.json.*not valid JSON"):
        load_model(str(bad))
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(VidurError, match="JSON object"):
        load_model(str(arr))


def test_missing_field_is_named(tmp_path):
    f = tmp_path / "partial.json"
    f.write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(VidurError, match="num_hidden_layers"):
        load_model(str(f))


def test_inconsistent_heads_rejected():
    base = json.loads((CONFIG_DIR / "vidur" / "tiny-llama.json").read_text())
    with pytest.raises(VidurError, match="multiple of"):
        ModelSpec.from_hf_config("x", {**base, "num_key_value_heads": 3})
    no_head_dim = {k: v for k, v in base.items() if k != "head_dim"}
    with pytest.raises(VidurError, match="not divisible"):
        ModelSpec.from_hf_config("x", {**no_head_dim, "num_attention_heads": 3, "num_key_value_heads": 3})
    with pytest.raises(VidurError, match="positive integer"):
        ModelSpec.from_hf_config("x", {**base, "intermediate_size": 0})


def test_check_parallelism():
    m = load_model("meta-llama/Llama-2-7b-hf")
    check_parallelism(m, 4, 2)
    with pytest.raises(VidurError, match="not divisible by tensor_parallel=3"):
        check_parallelism(m, 3, 1)
    with pytest.raises(VidurError, match="pipeline_parallel=3"):
        check_parallelism(m, 1, 3)
    with pytest.raises(VidurError, match="does not fit in one"):
        check_parallelism(m, 8, 1, get_node("a100_pairwise_nvlink"))
    with pytest.raises(VidurError, match="positive integer"):
        check_parallelism(m, 0, 1)
    l3 = load_model("meta-llama/Meta-Llama-3-8B")
    check_parallelism(l3, 16, 1)  # 8 KV heads replicated over 16 ranks
    assert kv_heads_per_rank(l3, 16) == 1 and kv_heads_per_rank(l3, 4) == 2


def test_weights_per_stage():
    m = load_model("meta-llama/Llama-2-7b-hf")
    assert stage_weights_bytes(m, 1, 1, 0) == m.weights_bytes()
    # untied embeddings: stages of a pipeline add up to the whole model
    assert sum(stage_weights_bytes(m, 1, 4, s) for s in range(4)) == m.weights_bytes()
    assert kv_bytes_per_token(m, 1, 2) * 2 == kv_bytes_per_token(m, 1, 1) == m.kv_bytes_per_token()


llama_configs = st.builds(
    lambda heads, group, hd, layers, inter, vocab, tie: {
        "model_type": "llama",
        "hidden_size": heads * hd,
        "num_attention_heads": heads,
        "num_key_value_heads": heads // group,
        "num_hidden_layers": layers,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": tie,
    },
    heads=st.sampled_from([4, 8, 16, 32]),
    group=st.sampled_from([1, 2, 4]),
    hd=st.sampled_from([16, 64, 128]),
    layers=st.integers(1, 12),
    inter=st.integers(1, 5000),
    vocab=st.integers(1, 50000),
    tie=st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(cfg=llama_configs, tp=st.sampled_from([1, 2, 4]))
def test_sharding_conserves_weights(cfg, tp):
    m = ModelSpec.from_hf_config("h/m", cfg)
    per_layer = m.params_per_layer()
    shard = layer_params_per_rank(m, tp)
    if tp == 1:
        assert shard == per_layer
        assert stage_weights_bytes(m, 1, 1, 0) == m.weights_bytes()
    else:
        assert shard < per_layer
        if m.num_kv_heads % tp == 0 and m.intermediate_size % tp == 0:
            norms = m.norms_per_layer * m.norm_params
            assert (shard - norms) * tp == per_layer - norms


def test_catalog_cache_is_per_process():
    assert catalog._shipped() is catalog._shipped()
