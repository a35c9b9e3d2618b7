"""The tiny mixture of experts through the CPU onboarding path: the reference model's routed MLP,
the shipped CPU profile and fitted estimator, and `vidur validate` on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import pytest

torch = pytest.importorskip("torch")

from vidur.cli import main  # noqa: E402
from vidur.errors import VidurError  # noqa: E402
from vidur.estimate.base import BatchShape  # noqa: E402
from vidur.model.catalog import deploy, load_model  # noqa: E402
from vidur.reference.executor import check_supported  # noqa: E402
from vidur.reference.layers import experts_forward, init_layer_weights, route  # noqa: E402
from vidur.reference.shapes import ShardShape  # noqa: E402
from vidur.store.profiles import model_layer_ops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_MOE = "vidur/tiny-moe"


def _weights(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return init_layer_weights(shape, lambda *s: torch.randn(*s, generator=g) * 0.05, lambda n: torch.ones(n))


KERNELS = ["loop"] + (["grouped_mm"] if hasattr(torch, "_grouped_mm") else [])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("tp", [1, 2])
def test_routed_experts_sum_each_tokens_k_experts(tp, kernel):
    """Gather by expert, per-expert MLPs, weighted scatter back == for every token, the weighted sum of
    its k experts applied to it (nothing dropped, nothing counted twice), with either experts kernel."""
    shape = ShardShape(load_model(TINY_MOE), tp)
    w = _weights(shape)
    x = torch.randn(37, shape.hidden, generator=torch.Generator().manual_seed(1))
    ids, weights = route(shape, x, w)
    assert ids.shape == (37, shape.top_k) and all(len(set(r)) == shape.top_k for r in ids.tolist())
    assert torch.allclose(weights.sum(-1), torch.ones(37), atol=1e-6)
    out = experts_forward(shape, x, ids, weights, w, kernel)
    for t in range(37):
        want = torch.zeros(shape.hidden)
        for j in range(shape.top_k):
            e = int(ids[t, j])
            gu = w["experts.gate_up"][e] @ x[t]
            h = torch.nn.functional.silu(gu[: shape.expert_width]) * gu[shape.expert_width :]
            want += weights[t, j] * (w["experts.down"][e] @ h)
        assert torch.allclose(out[t], want, atol=1e-5)


def test_layer_operators_of_a_moe():
    moe, dense = load_model(TINY_MOE), load_model("vidur/tiny-llama")
    assert "experts" in model_layer_ops(moe) and "router" in model_layer_ops(moe)
    assert "gate_up_proj" not in model_layer_ops(moe) and "experts" not in model_layer_ops(dense)
    check_supported(moe)
    with pytest.raises(VidurError, match="expert parallelism"):
        check_supported(deploy(moe, expert_parallel=2))
    with pytest.raises(VidurError, match="multi-head latent attention"):
        check_supported(load_model("deepseek-ai/DeepSeek-V3"))


def test_shipped_cpu_profile_prices_the_tiny_moe():
    from vidur.estimate.profile_estimator import ProfileEstimator
    from vidur.resolve.device import resolve_device

    model = load_model(TINY_MOE)
    cpu = resolve_device("cpu")
    est = ProfileEstimator(ProfileEstimator.Config(), model, cpu.spec, cpu.node, 1, 1)
    parts = est.breakdown(BatchShape.from_lists([(128, 0)], [100] * 8))
    assert parts["experts"] > 0 and parts["router"] > 0 and "gate_up_proj" not in parts
    small, big = est.token_time(4), est.token_time(512)
    assert 0 < small < big
    # a dense profile never prices a MoE: the tiny-llama profile is for another shape
    with pytest.raises(VidurError, match="not vidur/tiny-moe|measured for"):
        ProfileEstimator(
            ProfileEstimator.Config(profile=str(ROOT / "vidur" / "data" / "profiles" / "cpu" / "vidur" / "tiny-llama")),
            model, cpu.spec, cpu.node, 1, 1,
        )


def test_validate_tiny_moe_on_cpu_end_to_end(tmp_path, capsys):
    """Real (PyTorch MoE, 1 thread) against simulated (the shipped CPU profile of the tiny MoE)."""
    out_dir = tmp_path / "v"
    rc = main([
        "validate", str(ROOT / "scenarios" / "validate-tiny-cpu.yaml"), "--device", "cpu", "-s", "model", TINY_MOE,
        "-s", "workload.num_requests", "12", "--out", str(out_dir), "--no-plots", "--json", "--no-progress",
    ])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(out)
    run = rep["run"]
    assert run["model"] == TINY_MOE and run["estimator_name"] == "profile", rep["notes"]
    assert rep["cluster"]["completed"] == {"real": 12, "sim": 12}
    assert rep["iterations"]["all"]["count"] == run["iterations_real"] > 12
    for m in ("ttft", "tpot", "e2e"):
        cell = rep["requests"][m]["p50"]
        assert cell["real"] > 0 and cell["sim"] > 0


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="this torch has no grouped GEMM")
@pytest.mark.parametrize("n", [1, 5, 64])
def test_grouped_experts_equal_the_loop_with_biases_and_idle_experts(n):
    """gpt-oss-shaped (expert biases), shrunk: the grouped GEMM gives the loop's result, also when most
    experts get no token (n=1) and the group offsets repeat."""
    small = attrs.evolve(load_model("openai/gpt-oss-20b"), hidden_size=64, intermediate_size=32, num_heads=4,
                         num_kv_heads=2, head_dim=16, vocab_size=128)
    shape = ShardShape(small, 1)
    w = _weights(shape, seed=3)
    assert w.get("experts.gate_up.bias") is not None and w.get("experts.down.bias") is not None
    w["experts.gate_up.bias"] = torch.randn_like(w["experts.gate_up.bias"])  # nonzero, per expert
    w["experts.down.bias"] = torch.randn_like(w["experts.down.bias"])
    x = torch.randn(n, shape.hidden, generator=torch.Generator().manual_seed(4))
    ids, weights = route(shape, x, w)
    loop = experts_forward(shape, x, ids, weights, w, "loop")
    grouped = experts_forward(shape, x, ids, weights, w, "grouped_mm")
    assert torch.allclose(loop, grouped, atol=1e-5, rtol=1e-4)


def test_experts_kernel_is_the_loop_on_cpu_and_absent_for_dense_models():
    from vidur.reference.layers import LayerShard, experts_kernel

    moe = LayerShard(load_model(TINY_MOE), 1, torch.device("cpu"), torch.float32, max_pos=64)
    assert moe.experts_kernel == "loop" == experts_kernel(moe.shape, torch.device("cpu"), torch.bfloat16)
    assert LayerShard(load_model("vidur/tiny-llama"), 1, torch.device("cpu"), torch.float32, max_pos=64).experts_kernel is None


def test_gpu_profiler_operators_of_a_moe_run():
    """The operator-by-operator path the GPU profiler takes (here on CPU): router and experts closures."""
    from vidur.reference.layers import LayerShard

    layer = LayerShard(load_model(TINY_MOE), 2, torch.device("cpu"), torch.float32, max_pos=256)
    for op in ("router", "experts"):
        fns = layer.token_op(op, 32, copies=2)(16)
        assert len(fns) == 2
        out = fns[0]()
        assert out.shape[0] == 16
    assert layer.op_bytes("experts") == 4 * sum(
        math.prod(s) for k, s in layer.shape.layer_weight_shapes().items() if k.startswith("experts.") and s
    )
    assert layer.signature("experts") != layer.signature("router")
