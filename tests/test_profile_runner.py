"""The torch profiler on CPU: a small grid end to end, resume, bad input, operator semantics."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from vidur.errors import VidurError  # noqa: E402
from vidur.store import profiles as store  # noqa: E402
from vidur.model.catalog import load_model  # noqa: E402
from vidur.profile.grids import TEST, Grid, token_grid  # noqa: E402
from vidur.profile.profiler import build_plan, profile_model  # noqa: E402
from vidur.reference.device import torch_device as resolve_device  # noqa: E402

TINY = "vidur/tiny-llama"
SMALL = Grid(
    max_tokens=64,
    prefill_chunks=(1, 16),
    context_ratio=8.0,
    decode_batches=(1, 4),
    max_kv_tokens=1 << 11,
    prefill_batches=(2,),
    prefill_batch_chunks=(16,),
    cpu_batches=(1, 4),
    token_step=1.0,
)


@pytest.fixture(scope="module")
def model():
    return load_model(TINY)


@pytest.fixture(scope="module")
def small_profile(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "p"
    return profile_model(model, "cpu", [1], out=out, grid=SMALL, repeats=2, progress=False)


def test_small_profile_is_complete_and_loads(small_profile, model):
    meta = store.read_metadata(small_profile)
    assert meta["shards"]["1"]["complete"]
    assert meta["device"] == "cpu" and meta["dtype"] == "float32"
    assert meta["device_info"]["torch_threads"] == 1
    prof = store.load_profile(small_profile)
    ops = set(prof.shards[1].ops())
    assert set(store.model_layer_ops(model)) <= ops and not ops & set(store.MOE_OPS)  # a dense layer: no router/experts
    assert {"attn_prefill", "attn_decode", "cpu_prepare", "cpu_sample", "lm_head", "embed"} <= ops
    plan = build_plan(model, SMALL, gpu=False)
    assert len(prof.shards[1]) == plan.total(set())
    assert set(meta["shards"]["1"]["ops"]) == ops  # recorded, so auto can tell what the shard can price
    assert store.pricing_gap(meta, 1) is None


def test_a_shard_without_attention_cannot_price_a_batch(model, tmp_path):
    """A profile of some operators only (``--ops``) is complete for them, but auto must not price with it."""
    out = profile_model(model, "cpu", [1], out=tmp_path / "p", grid=SMALL, repeats=1, progress=False,
                        ops=["qkv_proj", "o_proj", "down_proj"])
    meta = store.read_metadata(out)
    assert meta["shards"]["1"]["complete"]
    assert "no attention measurements" in store.pricing_gap(meta, 1)
    assert store.pricing_gap(meta, 2) == "no complete tp=2 shard"


def test_resume_measures_only_what_is_missing(small_profile, tmp_path, model):
    import shutil

    p = tmp_path / "resume"
    shutil.copytree(small_profile, p)
    f = p / "tp1.csv"
    lines = f.read_text().splitlines(keepends=True)
    keep = lines[:-7]
    f.write_text("".join(keep) + "attn_decode,4,4,1")  # an interrupted write
    meta = json.loads((p / "metadata.json").read_text())
    meta["shards"]["1"]["complete"] = False
    (p / "metadata.json").write_text(json.dumps(meta))
    profile_model(model, "cpu", [1], out=p, grid=SMALL, repeats=2, progress=False)
    new = f.read_text().splitlines(keepends=True)
    assert new[: len(keep)] == keep  # old rows untouched
    assert len(new) == len(lines)
    assert store.read_metadata(p)["shards"]["1"]["complete"]


def test_time_budget_leaves_shard_resumable(model, tmp_path):
    out = profile_model(model, "cpu", [1], out=tmp_path / "b", grid=SMALL, repeats=1, progress=False, time_budget_s=1e-9)
    meta = store.read_metadata(out)
    assert not meta["shards"]["1"]["complete"]
    assert store.find_profile("cpu", TINY, 1) != out


def test_profile_dir_of_another_model_is_refused(small_profile):
    with pytest.raises(VidurError, match="holds a profile of vidur/tiny-llama"):
        profile_model(load_model("meta-llama/Llama-2-7b-hf"), "cpu", [1], out=small_profile, grid=SMALL, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_one_clear_error():
    with pytest.raises(VidurError, match="no CUDA GPU is available") as exc:
        resolve_device("cuda")
    assert "\n" not in str(exc.value)


def test_bad_tp_and_ops(model, tmp_path):
    with pytest.raises(VidurError, match="not divisible"):
        profile_model(model, "cpu", [3], out=tmp_path / "x", grid=SMALL, progress=False)
    with pytest.raises(VidurError, match="unknown operator"):
        profile_model(model, "cpu", [1], out=tmp_path / "x", grid=SMALL, ops=["qkv"], progress=False)
    with pytest.raises(VidurError, match="unknown --device"):
        resolve_device("tpu")


def test_grids():
    g = token_grid(16384)
    assert g[0] == 1 and g[-1] == 16384 and g == sorted(set(g))
    assert 60 <= len(g) <= 80
    pts = TEST.decode_points(2048)
    assert all(b * (c + 1) <= TEST.max_kv_tokens for b, c in pts)
    pre = TEST.prefill_points(2048)
    assert all(q + c <= 2048 for _, q, c in pre)
    assert any(b > 1 for b, _, _ in pre)


def test_sharding_and_signatures(model):
    from vidur.reference.layers import LayerShard

    l1 = LayerShard(model, 1, torch.device("cpu"), torch.float32)
    l2 = LayerShard(model, 2, torch.device("cpu"), torch.float32)
    assert l2.shape.q_heads == model.num_heads // 2
    assert l2.weight_shapes("down_proj")[0] == (model.hidden_size, model.intermediate_size // 2)
    assert l1.signature("input_norm") == l2.signature("post_norm")  # measured once, reused
    assert l1.signature("qkv_proj") != l2.signature("qkv_proj")


def test_chunked_prefill_attention_is_lower_right_causal(model):
    from vidur.reference.attention import sdpa_chunk
    from vidur.reference.shapes import ShardShape

    shape = ShardShape(model, 1)
    scale = 1.0 / shape.head_dim**0.5
    torch.manual_seed(0)
    d = model.head_dim
    q = torch.randn(3, shape.q_heads, d)
    k = torch.randn(shape.kv_heads, 5, d)
    v = torch.randn(shape.kv_heads, 5, d)
    out = sdpa_chunk(q, k, v, 2, scale, shape.q_heads != shape.kv_heads)  # 3 new tokens after 2 cached
    rep = shape.q_heads // shape.kv_heads
    kk, vv = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    scores = q.transpose(0, 1) @ kk.transpose(-1, -2) * scale
    mask = torch.tensor([[j <= i + 2 for j in range(5)] for i in range(3)])
    ref = (torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ vv).transpose(0, 1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_profiler_sdpa_attention_runs_one_call_per_request(model):
    """Off CUDA the profiler's attention is the executor's SDPA path: one chunk per request over a slot pool."""
    from vidur.reference.attention import Attention
    from vidur.reference.shapes import ShardShape

    att = Attention(ShardShape(model, 1), torch.device("cpu"), torch.float32)
    assert att.select_backend() == "sdpa" and not att.errors
    out = att.build([5, 1, 1], [0, 7, 3], True)()
    assert out.shape == (7, att.shape.q_heads, att.shape.head_dim)
    assert torch.isfinite(out).all()


def test_layer_forward_mixed_batch(model):
    from vidur.reference.layers import LayerShard

    layer = LayerShard(model, 1, torch.device("cpu"), torch.float32)
    w = layer.make_weights()
    q_lens, ctxs = [5, 1, 1], [0, 7, 3]
    n = sum(q_lens)
    s = layer.shape
    total_kv = sum(q + c for q, c in zip(q_lens, ctxs))
    kc = torch.zeros(total_kv, s.kv_heads, s.head_dim)
    vc = torch.zeros_like(kc)
    slots, pos, at = [], [], 0
    for q, c in zip(q_lens, ctxs):
        slots += list(range(at + c, at + c + q))
        pos += list(range(c, c + q))
        at += q + c
    out = layer.forward(torch.randn(n, s.hidden), w, q_lens, ctxs, kc, vc, torch.tensor(slots), torch.tensor(pos))
    assert out.shape == (n, s.hidden) and torch.isfinite(out).all()


def test_collectives_over_gloo_write_vidur_format(tmp_path):
    """The multi-GPU collective profiler's code path, run over gloo on CPU with two processes."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    from vidur.fit.collectives import fits_from_json, read_collective_csv
    from vidur.profile.collectives import profile_collectives

    net = profile_collectives(tmp_path, backend="gloo", worlds=[2], sizes=(4096, 1 << 16, 1 << 20), repeats=3)
    sweeps = read_collective_csv(tmp_path / "network" / "all_reduce.csv")
    assert set(sweeps) == {(2, 2)} and list(sweeps[(2, 2)][0]) == [4096, 1 << 16, 1 << 20]
    assert (tmp_path / "network" / "send_recv.csv").is_file()
    fits = fits_from_json(json.loads(net.read_text()), "measured")
    assert ("all_reduce", 2, 2) in fits and fits[("all_reduce", 2, 2)].table_time(1 << 18) > 0


# --- profile what runs: one layer implementation, the executor timed on CPU -----------------------


def test_executor_and_profiler_run_one_layer_implementation(model, monkeypatch):
    """The executor's forward pass and the profiler's LayerShard both call vidur.reference.layers.layer_forward."""
    from vidur.entities.batch import Batch
    from vidur.entities.request import Request
    from vidur.reference import layers as ops
    from vidur.reference.executor import ReferenceExecutor

    calls = []
    real = ops.layer_forward

    def counting(*args, **kwargs):
        calls.append(args[6] if len(args) > 6 else kwargs.get("li", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "layer_forward", counting)
    ex = ReferenceExecutor(model, "cpu", max_kv_tokens=1024)
    b = Batch()
    b.add(Request(1, 0.0, 20, 4), 20)
    ex.execute(b)
    assert calls == list(range(model.num_layers))
    layer = ops.LayerShard(model, 1, torch.device("cpu"), torch.float32)
    kc = torch.zeros(8, layer.shape.kv_heads, layer.shape.head_dim)
    layer.forward(torch.randn(1, model.hidden_size), layer.make_weights(), [1], [3], kc, kc.clone(),
                  torch.tensor([3]), torch.tensor([3]))
    assert len(calls) == model.num_layers + 1


def test_layer_shard_and_executor_layer_agree_numerically(model):
    """Same weights, same tokens: the profiler's layer and the executor's layer give the same output."""
    from vidur.reference import layers as ops
    from vidur.reference.executor import ReferenceExecutor
    from vidur.reference.kv import SeqState

    ex = ReferenceExecutor(model, "cpu", max_kv_tokens=1024, max_seq_tokens=512)
    layer = ops.LayerShard(model, 1, torch.device("cpu"), torch.float32, max_pos=512)
    q_lens, ctxs = [5, 1], [0, 7]
    n = sum(q_lens)
    x = torch.randn(n, model.hidden_size)
    pos = torch.tensor([0, 1, 2, 3, 4, 7])
    total = sum(q + c for q, c in zip(q_lens, ctxs))
    kc = torch.randn(total, layer.shape.kv_heads, layer.shape.head_dim)
    vc = torch.randn_like(kc)
    slots = torch.tensor([0, 1, 2, 3, 4, 12])
    ref = layer.forward(x, ex.layers[0], q_lens, ctxs, kc.clone(), vc.clone(), slots, pos)
    # the executor's KV layout: each sequence in its own slot range
    seqs = [SeqState([0] * 5), SeqState([0] * 8)]
    seqs[0].base, seqs[1].base = 0, 5
    ex.k_pool[0][:total] = kc
    ex.v_pool[0][:total] = vc
    inp = {"slots": slots, "entries": [(None, seqs[0], 5, 0), (None, seqs[1], 1, 7)]}
    from vidur.reference.kv import SdpaKV

    cos, sin = ops.rope_gather(ex.cos_cache, ex.sin_cache, pos)
    out = ops.layer_forward(ex.shape, x, ex.layers[0], cos, sin, SdpaKV(ex, inp), 0)
    assert torch.allclose(out, ref, atol=1e-5)


def test_time_iteration_times_every_operator(model):
    from vidur.reference.layers import LAYER_STEPS, OpClock
    from vidur.reference.executor import ReferenceExecutor

    ex = ReferenceExecutor(model, "cpu", max_kv_tokens=4096)
    runs = ex.time_iteration([30, 60], [(16, 8)], repeats=2)
    assert len(runs) == 2
    want = set(LAYER_STEPS) | {"embed", "final_norm", "lm_head", "sample", "cpu_prepare", "cpu_sample"}
    assert set(runs[0]) == want and all(v >= 0 for v in runs[0].values())
    assert runs[0]["attn"] > 0 and runs[0]["gate_up_proj"] > 0
    assert ex.ranges.free == [[0, ex.ranges.size]]  # the synthetic sequences' slots are given back
    c = OpClock(0.0)
    c.start()
    c("a")
    c("a")
    assert c.counts["a"] == 2 and c.per_call()["a"] >= 0


def test_cpu_profile_rows_come_from_the_executor(small_profile, model):
    meta = store.read_metadata(small_profile)
    assert "reference executor" in meta["method"] and meta["layers_profiled"] == model.num_layers
    info = meta["shards"]["1"]
    assert info["executor"]["layers"] == model.num_layers and info["seconds"] > 0
    assert "sdpa per request" in info["attention_backend"]


def test_prober_attention_and_noise_handling(model):
    from vidur.profile.cpu import CpuProber

    pr = CpuProber(model, 1, SMALL, torch.float32, repeats=2)
    keys = pr.probe_keys("attn_decode", 4, 4, 256) + pr.probe_keys("qkv_proj", 4, 0, 0)
    assert keys == [("decode", 4, 256), ("decode", 4, 0), ("decode", 4, 0)]
    assert pr.probe_keys("attn_prefill", 16, 1, 0) == [("chunks", 16)]  # the very same iteration
    assert pr.probe_keys("qkv_proj", 500, 0, 0) == [("chunks", 500)]
    assert pr.row("attn_decode", 4, 4, 256) is None  # not measured yet
    pr.measure(keys)
    attn = pr.row("attn_decode", 4, 4, 256)
    assert attn[0] > 0 and attn[4] == 1  # two rounds, one run each: the faster one is kept
    assert pr.excess(("decode", 4, 256)) >= 0
    assert attn[0] >= min(pr.samples[("decode", 4, 256)]["attn"])
    assert pr.describe()["machine_speed"]["pace_runs"] >= 1


def test_launch_cost_is_measured_on_the_executor(model):
    """The GPU's cpu_launch_layer code path (the executor's eager layer, host time), run on the CPU."""
    from vidur.reference.layers import LayerShard
    from vidur.profile.profiler import Profiler

    prof = Profiler(model, "cpu", grid=SMALL, progress=False)
    layer = LayerShard(model, 1, torch.device("cpu"), torch.float32)
    stats = prof._launch_cost(layer, 4)
    assert stats.median > 0 and prof.launch_method.startswith("reference executor")
    assert prof._launch_ex.num_layers == 2


def test_executor_builds_any_decoder_the_shared_layer_covers():
    """LayerNorm, GELU MLP, biases, partial rotary, parallel attention/MLP: chunked = one-shot prefill."""
    from vidur.entities.batch import Batch
    from vidur.entities.request import Request
    from vidur.model.spec import ModelSpec
    from vidur.reference.executor import ReferenceExecutor

    spec = ModelSpec(
        name="test/tiny-phi", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=32,
        intermediate_size=256, vocab_size=512, max_position_embeddings=512, gated_mlp=False, norm="layernorm",
        activation="gelu_new", attention_bias=True, parallel_attn_mlp=True, output_bias=True, mlp_bias=True,
        lm_head_bias=True, partial_rotary_factor=0.5,
    )
    with pytest.raises(VidurError, match="Llama-family"):
        ReferenceExecutor(spec, "cpu", max_kv_tokens=1024)
    ex = ReferenceExecutor(spec, "cpu", max_kv_tokens=1024, llama_only=False)

    def run(chunks):
        r = Request(9, 0.0, 40, 3)
        out = []
        for q in chunks + [1, 1]:
            b = Batch()
            b.add(r, q)
            ex.execute(b)
            r.kv_len += q
            if r.kv_len >= r.prefill_target:
                out.append(ex.last_tokens[0])
        ex.release()
        return out

    assert run([40]) == run([25, 15])
    two = ReferenceExecutor(spec, "cpu", max_kv_tokens=1024, llama_only=False, tp=2, layers=1)
    assert (two.q_heads, two.vocab, len(two.layers)) == (2, 256, 1)
    assert two.time_iteration([10], repeats=1)[0]["attn"] > 0


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_fused_rope_matches_rotate_half(model, factor):
    """The layer's rope (one pass over the fused QKV output) against a plain rotate-half reference."""
    import attrs

    from vidur.reference import layers as ops
    from vidur.reference.shapes import ShardShape

    spec = attrs.evolve(model, partial_rotary_factor=factor)
    shape = ShardShape(spec, 1)
    cos_c, sin_c = ops.rope_cache(shape, 64, "cpu", torch.float32)
    n, d, rot = 5, shape.head_dim, shape.rot_dim
    qkv = torch.randn(n, shape.qkv_out)
    pos = torch.tensor([0, 3, 7, 20, 63])
    q, k, v = ops.rope(qkv, *ops.rope_gather(cos_c, sin_c, pos), shape)
    cos, sin = cos_c[pos][:, None], sin_c[pos][:, None]

    def ref(x):
        x = x.clone()
        a, b = x[..., : rot // 2].clone(), x[..., rot // 2 : rot].clone()
        x[..., : rot // 2] = a * cos - b * sin
        x[..., rot // 2 : rot] = b * cos + a * sin
        return x

    qd, kd = shape.q_dim, shape.kv_dim
    assert torch.allclose(q, ref(qkv[:, :qd].view(n, -1, d)), atol=1e-6)
    assert torch.allclose(k, ref(qkv[:, qd : qd + kd].view(n, -1, d)), atol=1e-6)
    assert torch.equal(v, qkv[:, qd + kd :].view(n, -1, d))


def test_force_starts_the_metadata_over(small_profile, tmp_path, model):
    """--force re-measures every shard: method, grid and machine come from this run, not the old one."""
    import shutil

    p = tmp_path / "forced"
    shutil.copytree(small_profile, p)
    meta = json.loads((p / "metadata.json").read_text())
    meta["method"], meta["created"] = "an older method", "2000-01-01T00:00:00+0000"
    (p / "metadata.json").write_text(json.dumps(meta))
    profile_model(model, "cpu", [1], out=p, grid=SMALL, repeats=1, progress=False, force=True)
    new = store.read_metadata(p)
    assert new["method"] != "an older method" and new["created"] != "2000-01-01T00:00:00+0000"
    assert new["shards"]["1"]["complete"] and "commands" not in new
