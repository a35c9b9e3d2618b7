"""Mixture of experts, MLA, sliding windows and quantized weights/KV: sizes against published
figures, costs against their definitions, expert parallelism, routing conservation."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape
from vidur.memory.paged import PagedConfig, PagedMemoryPlanner
from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
from vidur.hardware.catalog import default_node, get_device
from vidur.model.catalog import CONFIG_DIR, check_parallelism, deploy, load_model
from vidur.model.cost import batch_flops, kv_bytes_per_token, max_stage_weights_bytes
from vidur.model.routing import active_experts, busiest_rank_assignments, rank_loads, sample_routing
from vidur.model.spec import ModelSpec

GIB = 2**30
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"
DSV3 = "deepseek-ai/DeepSeek-V3"
OSS = "openai/gpt-oss-120b"


def roofline(model, device="h200", tp=1, pp=1, **cfg):
    return RooflineEstimator(RooflineConfig(**cfg), model, get_device(device), default_node(device), tp, pp)


def plan(model, device="h200", tp=1, pp=1, **cfg):
    return PagedMemoryPlanner(PagedConfig(**cfg)).plan(model, get_device(device), tp, pp)


# -- sizes against published figures -------------------------------------------------------


@pytest.mark.parametrize(
    "name, total, active",
    [
        # Mistral AI, "Mixtral of experts" (arXiv 2401.04088): 47B parameters, 13B active
        (MIXTRAL, 46.7e9, 12.9e9),
        ("mistralai/Mixtral-8x22B-v0.1", 141e9, 39e9),  # Mistral AI announcement: 141B, 39B active
        # DeepSeek-V3 technical report (arXiv 2412.19437): 671B total, 37B activated per token
        (DSV3, 671e9, 37e9),
        ("Qwen/Qwen3-30B-A3B", 30.5e9, 3.3e9),  # Qwen3 model cards
        ("Qwen/Qwen3-235B-A22B", 235e9, 22e9),
    ],
)
def test_moe_parameter_counts_match_published(name, total, active):
    m = load_model(name)
    assert m.num_params() == pytest.approx(total, rel=0.01)
    assert m.active_params() == pytest.approx(active, rel=0.02)


@pytest.mark.parametrize("name, total, active, checkpoint_gib", [(OSS, 116.83e9, 5.13e9, 60.8), ("openai/gpt-oss-20b", 20.91e9, 3.61e9, 12.8)])
def test_gpt_oss_against_its_model_card(name, total, active, checkpoint_gib):
    """OpenAI's gpt-oss model card (Aug 2025), table 1: total and active parameters (active counts one
    embedding matrix: the unembedding) and checkpoint sizes with MXFP4 experts."""
    m = load_model(name)
    assert m.num_params() == pytest.approx(total, rel=0.002)
    assert m.active_params() - m.vocab_size * m.hidden_size == pytest.approx(active, rel=0.01)
    assert m.expert_weight_dtype == "mxfp4" and m.weight_dtype == "auto"
    assert m.weights_bytes() == pytest.approx(checkpoint_gib * GIB, rel=0.01)
    assert (m.sliding_window, m.num_window_layers, m.num_full_layers) == (128, m.num_layers // 2, m.num_layers // 2)


def test_mixtral_weights_and_kv_per_gpu():
    m = load_model(MIXTRAL)
    # bf16: 2 bytes per parameter, split evenly by TP (norms and the router replicated)
    assert max_stage_weights_bytes(m, 2, 1) == pytest.approx(m.num_params() * 2 / 2, rel=0.001)
    # 32 layers x 8 KV heads x 128 x (K and V) x 2 bytes = 128 KiB per token, halved per GPU at TP2
    assert kv_bytes_per_token(m, 1, 1) == 128 * 1024
    assert plan(m, tp=2).kv_bytes_per_token == 64 * 1024
    assert plan(m, tp=2, kv_dtype_bytes=1).kv_bytes_per_token == 32 * 1024
    with pytest.raises(VidurError, match="needs 93.4 GB of weights per GPU"):
        plan(m, device="h100", tp=1)  # 93 GB of bf16 weights do not fit an 80 GB GPU


def test_deepseek_v3_weights_and_mla_kv_per_gpu():
    m = load_model(DSV3)
    assert m.is_mla and m.weight_dtype == "fp8" and m.num_dense_layers == 3 and m.shared_expert_intermediate_size == 2048
    # MLA caches kv_lora_rank + qk_rope_head_dim = 576 elements per token per layer (DeepSeek-V2 paper,
    # arXiv 2405.04434, table 1: (d_c + d_h^R) l), the same on every TP rank
    assert kv_bytes_per_token(m, 1, 1) == 61 * 576 * 2
    assert kv_bytes_per_token(m, 8, 1) == 61 * 576 * 2
    assert kv_bytes_per_token(deploy(m, kv_cache_dtype="fp8"), 8, 1) == 61 * 576
    # the FP8 checkpoint is ~671 GB: 8 x H200 hold it (the deployment SGLang and vLLM document), 8 x H100 do not
    ep8 = deploy(m, expert_parallel=8)
    assert m.weights_bytes() == pytest.approx(671e9 + 2 * 129280 * 7168, rel=0.01)
    assert plan(ep8, device="h200", tp=8).weights_bytes == pytest.approx(m.weights_bytes() / 8, rel=0.03)
    with pytest.raises(VidurError, match="weights per GPU"):
        plan(ep8, device="h100", tp=8)


def test_gpt_oss_window_layers_bound_their_kv():
    m = load_model(OSS)
    p = plan(m, device="h100")  # the model card: gpt-oss-120b runs on a single 80 GB GPU
    # the full-attention half grows per token: 18 layers x 8 KV heads x 64 x 2 x 2 bytes
    assert p.kv_bytes_per_token == 18 * 8 * 64 * 2 * 2
    # the sliding half keeps at most window + one block per sequence slot
    assert p.window_kv_bytes == 256 * (128 + 16) * 18 * 8 * 64 * 2 * 2
    mistral = plan(load_model("mistralai/Mistral-7B-v0.1"))  # every layer slides: counted per token
    assert mistral.kv_bytes_per_token == 32 * 8 * 128 * 2 * 2 and mistral.window_kv_bytes == 0


# -- FLOPs against active parameters ----------------------------------------------------------


@pytest.mark.parametrize("name", [MIXTRAL, DSV3, OSS, "Qwen/Qwen3-30B-A3B", "meta-llama/Llama-3.1-8B"])
def test_flops_per_token_are_twice_the_active_parameters(name):
    """At negligible context the forward pass is 2 FLOPs per active weight per token (the embedding
    lookup is a gather, not a GEMM), whatever the MLA or MoE structure."""
    m = load_model(name)
    tokens = 8192  # decodes at context 0: every expert busy, attention over one key
    flops = batch_flops(m, 1, tokens, 0.0, tokens, tokens, pp=1) / tokens
    gemm_params = m.active_params() - m.vocab_size * m.hidden_size
    assert float(flops) == pytest.approx(2 * gemm_params, rel=0.03)


# -- one expert, top-1 == dense ---------------------------------------------------------------


def _dense_and_single_expert():
    raw = json.loads((CONFIG_DIR / "meta-llama" / "Llama-3.1-8B.json").read_text())
    dense = ModelSpec.from_hf_config("m", raw)
    moe = ModelSpec.from_hf_config(
        "m",
        {**raw, "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": 1,
         "num_experts_per_tok": 1},
    )
    return dense, moe


shapes = st.builds(
    lambda prefills, decodes: BatchShape.from_lists(prefills, decodes),
    st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=3),
    st.lists(st.integers(0, 8192), max_size=40),
)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, tp=st.sampled_from([1, 2, 4]))
def test_one_expert_top1_prices_exactly_like_the_dense_model(shape, tp):
    dense, moe = _dense_and_single_expert()
    assert moe.is_moe and moe.num_experts == 1 and not dense.is_moe
    assert moe.num_params() == dense.num_params() and moe.weights_bytes() == dense.weights_bytes()
    assert attrs.asdict(plan(moe, tp=tp)) == attrs.asdict(plan(dense, tp=tp))
    a, b = roofline(dense, tp=tp), roofline(moe, tp=tp)
    assert b.forward_time(shape) == a.forward_time(shape)
    assert b.decode_iteration_time(shape.num_decode, shape.decode_kv) == a.decode_iteration_time(
        shape.num_decode, shape.decode_kv
    )
    args = (shape.num_tokens, shape.prefill_work, shape.decode_kv, shape.num_seqs)
    assert batch_flops(moe, tp, *args) == batch_flops(dense, tp, *args)


# -- routing ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.integers(1, 300),
    experts_log2=st.integers(0, 6),
    data=st.data(),
    skew=st.sampled_from([0.0, 0.5, 1.5]),
    seed=st.integers(0, 2**16),
)
def test_routing_conserves_tokens(tokens, experts_log2, data, skew, seed):
    """Every token goes to exactly k distinct experts; the ranks' loads add up to tokens x k."""
    e = 2**experts_log2
    k = data.draw(st.integers(1, e))
    ep = data.draw(st.sampled_from([d for d in (1, 2, 4, 8) if e % d == 0]))
    routing = sample_routing(tokens, e, k, np.random.default_rng(seed), skew)
    assert routing.shape == (tokens, k)
    assert all(len(set(row)) == k for row in routing.tolist())
    assert routing.min() >= 0 and routing.max() < e
    loads = rank_loads(routing, e, ep)
    assert loads.sum() == tokens * k and len(loads) == ep
    # the model's figures stay within what is possible
    busiest = busiest_rank_assignments(tokens, k, ep)
    assert tokens * k / ep <= busiest <= tokens * k
    assert active_experts(tokens, e, k, ep) <= min(e / ep, tokens * k) + 1e-9


def test_routing_model_matches_sampled_routings():
    """The closed forms against 400 sampled uniform routings (seeded): active experts per rank and the
    busiest rank's load."""
    rng = np.random.default_rng(0)
    for tokens, e, k, ep in [(1, 256, 8, 8), (16, 256, 8, 8), (64, 128, 4, 4), (512, 8, 2, 2), (4096, 256, 8, 8)]:
        active, busiest = [], []
        for _ in range(400):
            r = sample_routing(tokens, e, k, rng)
            active.append(len(np.unique(r[r < e // ep])))  # experts of rank 0 that got a token
            busiest.append(rank_loads(r, e, ep).max())
        assert active_experts(tokens, e, k, ep) == pytest.approx(np.mean(active), rel=0.05)
        assert busiest_rank_assignments(tokens, k, ep) == pytest.approx(np.mean(busiest), rel=0.12)


def test_decode_reads_only_the_routed_experts():
    m = load_model(MIXTRAL)
    est = roofline(m, tp=2)
    one, big = est.breakdown(BatchShape(num_decode=1, decode_kv=100)), est.breakdown(BatchShape(num_decode=256, decode_kv=25600))
    # one token reads 2 of 8 experts' weights, a large batch all 8 (memory-bound: time ~ bytes read)
    assert big["moe_up_proj"] / one["moe_up_proj"] == pytest.approx(4, rel=0.1)
    skewed = roofline(deploy(m, expert_parallel=2), tp=2, expert_imbalance=1.25)
    even = roofline(deploy(m, expert_parallel=2), tp=2)
    s = BatchShape.from_lists(prefills=[(4096, 0)])
    assert skewed.breakdown(s)["moe_up_proj"] > even.breakdown(s)["moe_up_proj"]
    with pytest.raises(VidurError, match="expert_imbalance must be a number >= 1"):
        RooflineConfig(expert_imbalance=0.5)


# -- expert parallelism -----------------------------------------------------------------------


def test_expert_parallel_layouts():
    m = load_model(MIXTRAL)
    check_parallelism(deploy(m, expert_parallel=4), 4, 1)
    with pytest.raises(VidurError, match="expert_parallel=4 must divide tensor_parallel=2"):
        check_parallelism(deploy(m, expert_parallel=4), 2, 1)
    with pytest.raises(VidurError, match="6 experts, not divisible by expert_parallel=4"):
        check_parallelism(deploy(attrs.evolve(m, num_experts=6), expert_parallel=4), 4, 1)
    with pytest.raises(VidurError, match="needs a mixture-of-experts model"):
        check_parallelism(deploy(load_model("meta-llama/Llama-3.1-8B"), expert_parallel=2), 2, 1)


def test_expert_parallel_prices_all_to_all_and_shards_experts():
    m = load_model(MIXTRAL)
    tp_only, ep = roofline(m, tp=4), roofline(deploy(m, expert_parallel=4), tp=4)
    s = BatchShape.from_lists(prefills=[(2048, 0)], decodes=[1000] * 32)
    assert "ep_all_to_all" not in tp_only.breakdown(s)
    assert ep.breakdown(s)["ep_all_to_all"] > 0
    assert sum(ep.breakdown(s).values()) == pytest.approx(ep.layer_time(s), rel=1e-9)
    # whole experts on 4 GPUs or every expert split 4 ways: the same bytes per GPU
    assert plan(deploy(m, expert_parallel=4), tp=4).weights_bytes == pytest.approx(plan(m, tp=4).weights_bytes, rel=1e-3)


@pytest.mark.parametrize("name, tp, ep", [(DSV3, 8, 8), (OSS, 2, 2), ("mistralai/Mistral-7B-v0.1", 1, 1), (MIXTRAL, 2, 1)])
def test_scalar_and_vector_decode_paths_agree_bitwise(name, tp, ep):
    est = roofline(deploy(load_model(name), expert_parallel=ep), tp=tp)
    kv = np.array([10, 300, 5000, 40000, 120000], dtype=np.float64)
    vec = est.decode_iteration_times(17, kv)
    for i, x in enumerate(kv):
        assert est.decode_iteration_time(17, int(x)) == vec[i]
        assert est.forward_time(BatchShape(num_decode=17, decode_kv=int(x))) + est.cpu_overhead(17) == vec[i]


# -- sliding windows and precision ------------------------------------------------------------


def test_sliding_window_bounds_attention_cost():
    raw = json.loads((CONFIG_DIR / "mistralai" / "Mistral-7B-v0.1.json").read_text())
    windowed = load_model("mistralai/Mistral-7B-v0.1")
    full = ModelSpec.from_hf_config("m", {**raw, "sliding_window": None})
    a, b = roofline(full), roofline(windowed)
    inside = BatchShape(num_decode=8, decode_kv=8 * 3000)
    assert a.forward_time(inside) == pytest.approx(b.forward_time(inside), rel=1e-12)  # all inside the window
    past = BatchShape(num_decode=8, decode_kv=8 * 30000)
    assert b.breakdown(past)["attn_decode"] == pytest.approx(a.breakdown(BatchShape(num_decode=8, decode_kv=8 * 4096))["attn_decode"])
    long_prefill = BatchShape.from_lists(prefills=[(2048, 20000)])
    assert b.breakdown(long_prefill)["attn_prefill"] < a.breakdown(long_prefill)["attn_prefill"] / 3


def test_gpt_oss_decode_grows_half_as_fast_with_context():
    m = load_model(OSS)
    est = roofline(m)
    no_window = roofline(attrs.evolve(m, sliding_window=0, num_window_layers=0))
    grow = est.breakdown(BatchShape(num_decode=64, decode_kv=64 * 64000))["attn_decode"]
    grow_full = no_window.breakdown(BatchShape(num_decode=64, decode_kv=64 * 64000))["attn_decode"]
    assert grow == pytest.approx(grow_full / 2, rel=0.02)


def test_fp8_weights_and_kv():
    m = load_model("Qwen/Qwen3-30B-A3B")
    fp8 = deploy(m, weight_dtype="fp8", kv_cache_dtype="fp8")
    assert fp8.weights_bytes() < 0.52 * m.weights_bytes()
    assert kv_bytes_per_token(fp8, 1, 1) * 2 == kv_bytes_per_token(m, 1, 1)
    # a memory-bound decode step reads about half the bytes
    s = BatchShape(num_decode=4, decode_kv=4 * 2000)
    assert roofline(fp8).forward_time(s) < 0.7 * roofline(m).forward_time(s)
    int4 = deploy(m, weight_dtype="int4")
    assert int4.weights_bytes() < 0.3 * m.weights_bytes()
    with pytest.raises(VidurError, match="quantizes routed experts"):
        deploy(load_model("meta-llama/Llama-3.1-8B"), weight_dtype="mxfp4")


# -- scenarios and search -------------------------------------------------------------------


def _cli(capsys, monkeypatch, *args):
    from tests.conftest import REPO
    from vidur.cli import main

    monkeypatch.chdir(REPO)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_moe_scenario_runs_with_expert_parallelism(tmp_path, capsys, monkeypatch):
    code, out, err = _cli(
        capsys, monkeypatch, "run", "scenarios/moe-mixtral.yaml", "--no-progress", "-s", "workload.num_requests", "200",
        "--out", str(tmp_path / "r"),
    )
    assert code == 0, err
    assert "(TP2 PP1 EP2)" in out
    run = json.loads((tmp_path / "r" / "summary.json").read_text())["run"]
    assert run["expert_parallel"] == 2 and run["kv_cache_bytes"] == 1 and run["weight_bytes"] == 2.0


@pytest.mark.parametrize(
    "setting, message",
    [
        (("cluster.expert_parallel", "4"), "expert_parallel=4 must divide tensor_parallel=2"),
        (("cluster.weight_dtype", "fp4"), "cluster.weight_dtype must be one of auto, bf16"),
        (("cluster.kv_cache_dtype", "int8"), "cluster.kv_cache_dtype must be one of auto, bf16"),
        (("model", "meta-llama/Llama-3.1-8B"), "expert_parallel=2 needs a mixture-of-experts model"),
        (("runtime_estimator", "profile"), "profiles measure dense bf16/fp16 layers; mistralai/Mixtral-8x7B-v0.1 has"),
        (("memory_planner.kv_dtype_bytes", "2"), "memory_planner.kv_dtype_bytes=2 disagrees with cluster.kv_cache_dtype"),
        (("runtime_estimator.kv_dtype_bytes", "2"), "runtime_estimator.kv_dtype_bytes=2 disagrees with cluster.kv_cache"),
    ],
)
def test_impossible_layouts_are_one_line(setting, message, tmp_path, capsys, monkeypatch):
    code, _, err = _cli(capsys, monkeypatch, "run", "scenarios/moe-mixtral.yaml", "--no-progress", "-s", *setting,
                        "--out", str(tmp_path / "r"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_search_grid_has_expert_parallel_and_precision_axes():
    from tests.conftest import REPO
    from vidur.search.spec import load_search_spec

    spec = load_search_spec(REPO / "scenarios" / "search-moe.yaml")
    runnable = [c for c in spec.configs if not c.skip_reason]
    skipped = [c for c in spec.configs if c.skip_reason]
    assert len(spec.configs) == 16 and len(skipped) == 4
    assert all("expert_parallel=2 does not divide tensor_parallel=1" in c.skip_reason for c in skipped)
    assert {(c.expert_parallel, c.weight_dtype, c.kv_cache_dtype) for c in runnable if c.tensor_parallel == 2} == {
        (ep, w, k) for ep in (1, 2) for w in ("auto", "fp8") for k in ("auto", "fp8")
    }
    cfg = next(c for c in runnable if c.expert_parallel == 2 and c.weight_dtype == "fp8")
    cluster = spec.base_scenario(cfg)["cluster"]
    assert cluster["expert_parallel"] == 2 and cluster["weight_dtype"] == "fp8"
    dense = next(c for c in runnable if c.expert_parallel == 1 and c.weight_dtype == "auto" and c.kv_cache_dtype == "auto")
    assert "expert_parallel" not in spec.base_scenario(dense)["cluster"]  # earlier results keep their keys
