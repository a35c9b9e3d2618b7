"""Model families read from Hugging Face config.json: shipped checkpoints, family fields, refusals."""

from __future__ import annotations

import json

import pytest

from vidur.cli import main
from vidur.errors import VidurError
from vidur.model.catalog import CONFIG_DIR, load_config_file, load_model
from vidur.model.cost import layer_ops
from vidur.model.spec import ModelSpec

# published totals (model cards: Qwen3 "Number of Parameters", Meta's and Mistral's cards)
PUBLISHED = {
    "Qwen/Qwen3-32B": 32.8e9,
    "Qwen/Qwen3-8B": 8.2e9,
    "Qwen/Qwen3-0.6B": 0.6e9,
    "meta-llama/Llama-3.2-1B": 1.24e9,
    "mistralai/Mistral-7B-Instruct-v0.3": 7.25e9,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_dense_families_match_published_sizes(name):
    assert load_model(name).num_params() == pytest.approx(PUBLISHED[name], rel=0.01)


def test_qwen3_fields():
    m = load_model("Qwen/Qwen3-32B")
    assert m.architecture == "Qwen3ForCausalLM" and m.qk_norm
    assert (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim) == (5120, 64, 64, 8, 128)
    assert m.q_size == 8192 != m.hidden_size  # explicit head_dim, wider queries than the hidden state
    assert not m.attention_bias and not m.tie_word_embeddings and m.num_window_layers == 0
    assert "attn_qk_norm" in {op.name for op in layer_ops(m, 2)}
    assert "attn_qk_norm" not in {op.name for op in layer_ops(load_model("meta-llama/Llama-3.1-8B"), 1)}
    # qk-norm adds two head_dim-wide norms per layer
    plain = ModelSpec.from_hf_config("x", {**_raw("Qwen/Qwen3-8B"), "architectures": ["LlamaForCausalLM"]})
    assert load_model("Qwen/Qwen3-8B").num_params() - plain.num_params() == 36 * 2 * 128


def test_tied_embeddings_counted_once():
    m = load_model("Qwen/Qwen3-0.6B")
    untied = ModelSpec.from_hf_config("x", {**_raw("Qwen/Qwen3-0.6B"), "tie_word_embeddings": False})
    assert m.tie_word_embeddings and untied.num_params() - m.num_params() == m.vocab_size * m.hidden_size


def _raw(name):
    org, short = name.split("/")
    return json.loads((CONFIG_DIR / org / f"{short}.json").read_text())


def test_sliding_window_layers():
    mistral = load_model("mistralai/Mistral-7B-v0.1")
    assert (mistral.sliding_window, mistral.num_window_layers) == (4096, 32)
    assert load_model("mistralai/Mistral-7B-Instruct-v0.3").num_window_layers == 0  # sliding_window: null
    qwen = _raw("Qwen/Qwen2.5-7B")
    assert load_model("Qwen/Qwen2.5-7B").num_window_layers == 0  # use_sliding_window: false
    on = ModelSpec.from_hf_config("q", {**qwen, "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 20})
    assert (on.sliding_window, on.num_window_layers) == (4096, 8)  # layers 20..27 slide (Hugging Face Qwen2)
    typed = ModelSpec.from_hf_config(
        "t", {**_raw("meta-llama/Llama-3.2-1B"), "sliding_window": 512,
              "layer_types": ["sliding_attention", "full_attention"] * 8}
    )
    assert (typed.sliding_window, typed.num_window_layers, typed.num_full_layers) == (512, 8, 8)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architectures": ["FalconForCausalLM"]}, "architecture FalconForCausalLM is not supported"),
        ({"architectures": None, "model_type": "falcon"}, "model_type 'falcon' is not supported"),
        ({"num_local_experts": 8, "num_experts_per_tok": 2}, "num_local_experts=8 .* not modelled for llama"),
        ({"kv_lora_rank": 512}, "kv_lora_rank=512 .* not modelled for llama"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantization method 'bitsandbytes'"),
        ({"quantization_config": {"quant_method": "gptq", "bits": 8}}, "gptq with 8 bits"),
        ({"layer_types": ["chunked_attention"] * 16}, "layer type 'chunked_attention' is not modelled"),
        ({"sliding_window": 256}, "sliding_window=256 is not modelled for llama"),
    ],
)
def test_unmodelled_fields_are_refused_in_one_line(change, message):
    cfg = {**_raw("meta-llama/Llama-3.2-1B"), **change}
    with pytest.raises(VidurError, match=message) as err:
        ModelSpec.from_hf_config("m", cfg)
    text = str(err.value)
    assert "\n" not in text and "LlamaForCausalLM" in text and "Qwen3ForCausalLM" in text


def test_quantized_checkpoints_change_weight_bytes():
    fp8 = ModelSpec.from_hf_config("m", {**_raw("meta-llama/Llama-3.1-8B"), "quantization_config": {"quant_method": "fp8"}})
    bf16 = load_model("meta-llama/Llama-3.1-8B")
    assert fp8.weight_dtype == "fp8" and fp8.num_params() == bf16.num_params()
    emb = 2 * bf16.vocab_size * bf16.hidden_size * 2
    assert fp8.weights_bytes() - emb == pytest.approx((bf16.weights_bytes() - emb) / 2, rel=0.01)


def test_moe_config_by_path_is_refused_not_priced_dense(tmp_path, capsys, monkeypatch):
    """A Qwen3-MoE config.json given by path used to be priced as a dense model."""
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    cfg = {**_raw("Qwen/Qwen3-8B"), "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
           "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768}
    cfg["architectures"] = ["Qwen2MoeForCausalLM"]  # a family vidur does not model
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(VidurError, match="Qwen2MoeForCausalLM is not supported"):
        load_config_file(path)
    code = main(["run", "scenarios/quickstart.yaml", "--no-progress", "-s", "model", str(path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Qwen2MoeForCausalLM is not supported" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
