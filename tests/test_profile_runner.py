"""The torch profiler on CPU: a small grid end to end, resume, bad input, operator semantics."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from vidur.errors import VidurError  # noqa: E402
from vidur.estimate import profiles as store  # noqa: E402
from vidur.model.catalog import load_model  # noqa: E402
from vidur.profile.grids import TEST, Grid, token_grid  # noqa: E402
from vidur.profile.runner import build_plan, profile_model, resolve_device  # noqa: E402

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
    assert set(store.LAYER_TOKEN_OPS) <= ops
    assert {"attn_prefill", "attn_decode", "cpu_prepare", "cpu_sample", "lm_head", "embed"} <= ops
    plan = build_plan(model, SMALL, gpu=False)
    assert len(prof.shards[1]) == plan.total(set())


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
    from vidur.profile.ops import LayerShard

    l1 = LayerShard(model, 1, torch.device("cpu"), torch.float32)
    l2 = LayerShard(model, 2, torch.device("cpu"), torch.float32)
    assert l2.shape.q_heads == model.num_heads // 2
    assert l2.weight_shapes("down_proj")[0] == (model.hidden_size, model.intermediate_size // 2)
    assert l1.signature("input_norm") == l2.signature("post_norm")  # measured once, reused
    assert l1.signature("qkv_proj") != l2.signature("qkv_proj")


def test_chunked_prefill_attention_is_lower_right_causal(model):
    from vidur.profile.ops import Attention, ShardShape

    att = Attention(ShardShape(model, 1), torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    d = model.head_dim
    q = torch.randn(1, att.shape.q_heads, 3, d)
    k = torch.randn(1, att.shape.kv_heads, 5, d)
    v = torch.randn(1, att.shape.kv_heads, 5, d)
    out = att._sdpa(q, k, v, True)
    rep = att.shape.q_heads // att.shape.kv_heads
    kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = q @ kk.transpose(-1, -2) * att.scale
    mask = torch.tensor([[j <= i + 2 for j in range(5)] for i in range(3)])
    ref = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ vv
    assert torch.allclose(out, ref, atol=1e-5)


def test_layer_forward_mixed_batch(model):
    from vidur.profile.ops import LayerShard

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
    from vidur.estimate.comm_fit import fits_from_json, read_collective_csv
    from vidur.profile.collectives import profile_collectives

    net = profile_collectives(tmp_path, backend="gloo", worlds=[2], sizes=(4096, 1 << 16, 1 << 20), repeats=3)
    sweeps = read_collective_csv(tmp_path / "network" / "all_reduce.csv")
    assert set(sweeps) == {(2, 2)} and list(sweeps[(2, 2)][0]) == [4096, 1 << 16, 1 << 20]
    assert (tmp_path / "network" / "send_recv.csv").is_file()
    fits = fits_from_json(json.loads(net.read_text()), "measured")
    assert ("all_reduce", 2, 2) in fits and fits[("all_reduce", 2, 2)].table_time(1 << 18) > 0
