"""CUDA code paths of the profiler; skipped without a GPU (benchmarks/gpu/profile_all.sh runs them)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def model():
    from vidur.model.catalog import load_model

    return load_model("vidur/tiny-llama")


def test_attention_backend_agrees_with_sdpa(model):
    from vidur.reference.attention import Attention
    from vidur.reference.shapes import ShardShape

    att = Attention(ShardShape(model, 1), torch.device("cuda"), torch.bfloat16)
    backend = att.select_backend()
    assert backend in ("paged", "flash", "sdpa")
    assert backend != "sdpa", att.errors  # FlashAttention ships with every CUDA build of torch
    for kernel in ("paged", "flash", "sdpa"):
        if kernel in att.errors:
            continue
        att.backend = kernel
        out = att.build([1] * 4, [300] * 4, False)()
        pre = att.build([64], [301], True)()
        torch.cuda.synchronize()
        assert out.shape == (4, att.shape.q_heads, att.shape.head_dim)
        assert pre.shape == (64, att.shape.q_heads, att.shape.head_dim)


def test_profiler_and_executor_pick_the_same_attention_kernel(model):
    """What the profile measures is what vidur validate runs: same kernel on the same machine."""
    from vidur.reference.attention import Attention
    from vidur.reference.shapes import ShardShape
    from vidur.reference.executor import ReferenceExecutor

    att = Attention(ShardShape(model, 1), torch.device("cuda"), torch.bfloat16)
    ex = ReferenceExecutor(model, "cuda", max_kv_tokens=4096, max_seq_tokens=1024, max_requests=8)
    assert att.select_backend() == ex.kernel


def test_rope_and_layer_run_under_graph_capture(model):
    """The shared operators (fused-QKV rope, the whole layer) time on CUDA as the executor runs them."""
    from vidur.reference.layers import LayerShard
    from vidur.profile.timing import CudaGraphTimer

    layer = LayerShard(model, 1, torch.device("cuda"), torch.bfloat16)
    timer = CudaGraphTimer(torch.device("cuda"), repeats=3)
    assert timer.measure(layer.token_op("rope", 256, 2)(256)).median > 0
    assert timer.graph_failures == 0


def test_graph_timer_positive_and_scales(model):
    from vidur.reference.layers import LayerShard
    from vidur.profile.timing import CudaGraphTimer

    layer = LayerShard(model, 1, torch.device("cuda"), torch.bfloat16)
    timer = CudaGraphTimer(torch.device("cuda"), repeats=3)
    bind = layer.token_op("gate_up_proj", 8192, 2)
    small = timer.measure(bind(16)).median
    big = timer.measure(bind(8192)).median
    assert 0 < small < big
    assert timer.graph_failures == 0


def test_tiny_cuda_profile_end_to_end(model, tmp_path):
    from vidur.fit.curves import fit_profile
    from vidur.store.profiles import load_profile
    from vidur.profile.grids import TEST
    from vidur.profile.profiler import profile_model

    out = profile_model(model, "cuda", [1], out=tmp_path / "p", grid=TEST, progress=False)
    prof = load_profile(out)
    meta = prof.metadata
    assert meta["shards"]["1"]["complete"]
    assert meta["device_info"]["cuda"]
    fs = fit_profile(prof).shards[1]
    assert fs.decode_time(8, 100) > 0 and fs.prefill_time(64, 0) > 0
    assert "cpu_launch_layer" in fs.cpu
    # the launch cost is the host time of the reference executor's own eager layer (what vidur validate runs)
    assert meta["shards"]["1"]["launch_method"].startswith("reference executor"), meta["shards"]["1"]
