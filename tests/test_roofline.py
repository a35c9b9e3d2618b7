"""The roofline runtime estimator and the shared analytical cost tables."""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape, RuntimeEstimator
from vidur.hardware.collective import all_reduce_time
from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
from vidur.fit.roofline import OpMeasurement, load_vidur_mlp_csv
from vidur.hardware.catalog import default_node, get_device, get_node
from vidur.model.catalog import load_model
from vidur.model.cost import batch_bytes, batch_flops, layer_ops
from vidur.plugins import PluginHost

LLAMA7 = "meta-llama/Llama-2-7b-hf"


def make(model=LLAMA7, device="a100", tp=1, pp=1, node=None, **cfg) -> RooflineEstimator:
    node = get_node(node) if node else default_node(device)
    return RooflineEstimator(RooflineConfig(**cfg), load_model(model), get_device(device), node, tp, pp)


def _data_dir() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    for c in (os.environ.get("VIDUR_DATA_DIR"), root.parent / "shared" / "data", root / "shared" / "data"):
        if c and (Path(c) / "vidur-profiles" / "compute").is_dir():
            return Path(c)
    return None


def test_registered():
    cls = PluginHost(autoload=False).get("runtime_estimator", "roofline")
    assert cls is RooflineEstimator and issubclass(cls, RuntimeEstimator)
    assert "roofline" in make().describe()


@pytest.mark.parametrize(
    "field,value",
    [
        ("compute_efficiency", 0),
        ("memory_efficiency", 1.2),
        ("elementwise_efficiency", -0.5),
        ("decode_attention_efficiency", "x"),
        ("launch_overhead_s", -1e-6),
        ("engine_mode", "turbo"),
        ("comm_bandwidth", 0),
        ("prefill_attention_overhead_s", None),
        ("calibrate_from", 3),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(VidurError, match=field):
        RooflineConfig(**{field: value})


def test_bad_parallelism_is_rejected():
    with pytest.raises(VidurError, match="tensor_parallel=3"):
        make(tp=3)
    with pytest.raises(VidurError, match="does not fit"):
        make(device="a40", tp=8)


def test_plausible_absolute_times():
    est = make(device="h100")
    # one decode token of a 7B model reads ~13.5 GB of weights: ~5-8 ms on an H100
    t = est.forward_time(BatchShape.from_lists(decodes=[100]))
    assert 4e-3 < t < 9e-3
    # a 2k-token prefill of a 7B model is ~28 TFLOP: ~40-70 ms on an H100
    t = est.forward_time(BatchShape.from_lists(prefills=[(2048, 0)]))
    assert 30e-3 < t < 80e-3


shapes = st.builds(
    lambda prefills, decodes: BatchShape.from_lists(prefills, decodes),
    st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 4096)), max_size=3),
    st.lists(st.integers(0, 8000), max_size=64),
)


@settings(max_examples=80, deadline=None)
@given(n1=st.integers(1, 8192), n2=st.integers(1, 8192), ctx=st.integers(0, 4096))
def test_monotone_in_tokens(n1, n2, ctx):
    est = make()
    lo, hi = sorted((n1, n2))
    a = est.forward_time(BatchShape.from_lists(prefills=[(lo, ctx)]))
    b = est.forward_time(BatchShape.from_lists(prefills=[(hi, ctx)]))
    assert a <= b
    assert est.layer_time(BatchShape.from_lists(prefills=[(lo, ctx)])) <= est.layer_time(
        BatchShape.from_lists(prefills=[(hi, ctx)])
    )


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 256),
    k1=st.integers(0, 10**6),
    k2=st.integers(0, 10**6),
    c1=st.integers(0, 8000),
    c2=st.integers(0, 8000),
)
def test_monotone_in_context(n, k1, k2, c1, c2):
    est = make(tp=2)
    lo, hi = sorted((k1, k2))
    a = est.forward_time(BatchShape(num_decode=n, decode_kv=n + lo))
    b = est.forward_time(BatchShape(num_decode=n, decode_kv=n + hi))
    assert a <= b
    lo, hi = sorted((c1, c2))
    assert est.forward_time(BatchShape.from_lists(prefills=[(128, lo)])) <= est.forward_time(
        BatchShape.from_lists(prefills=[(128, hi)])
    )


@settings(max_examples=60, deadline=None)
@given(
    setup=st.sampled_from([(LLAMA7, "a100", 1, 1), (LLAMA7, "h100", 2, 2), ("meta-llama/Meta-Llama-3-70B", "h100", 8, 2),
                           ("microsoft/phi-2", "a40", 1, 1), ("vidur/tiny-llama", "l40s", 2, 1)]),
    engine=st.sampled_from(["cuda_graphs", "eager"]),
    n=st.integers(0, 512),
    kv=st.lists(st.integers(1, 2_000_000), min_size=0, max_size=40),
    overhead=st.sampled_from([0.0, 7e-6]),
)
def test_vectorised_decode_equals_scalar(setup, engine, n, kv, overhead):
    model, device, tp, pp = setup
    est = make(model, device, tp, pp, engine_mode=engine, decode_attention_overhead_s=overhead)
    kv = [max(k, n) for k in kv]
    fast = est.decode_iteration_times(n, np.array(kv, dtype=np.int64))
    slow = np.array([est.forward_time(BatchShape(num_decode=n, decode_kv=k)) + est.cpu_overhead(n) for k in kv])
    assert fast.shape == slow.shape
    assert np.array_equal(fast, slow)  # bitwise
    # and the generic (unvectorised) base implementation agrees
    base = RuntimeEstimator.decode_iteration_times(est, n, np.array(kv, dtype=np.int64))
    assert np.array_equal(base, slow)
    # and the per-batch-size pricer of fast-forward's scalar loop (kept until the graph sizes change)
    assert [est.decode_pricer(n)(k) for k in kv] == slow.tolist()
    est.use_cuda_graphs([1, 8, 40, 200])
    assert [est.decode_pricer(n)(k) for k in kv] == [est.decode_iteration_time(n, k) for k in kv]


def test_tp2_adds_comm_time():
    one, two = make(tp=1), make(tp=2)
    s = BatchShape.from_lists(prefills=[(512, 0)], decodes=[300] * 8)
    assert one.breakdown(s)["tp_all_reduce"] == 0.0
    comm = two.breakdown(s)["tp_all_reduce"]
    node = default_node("a100")
    assert comm == pytest.approx(2 * all_reduce_time(node, 2, s.num_tokens * 4096 * 2))
    assert comm > 0
    # compute halves, communication is added on top
    compute_two = sum(v for k, v in two.breakdown(s).items() if k != "tp_all_reduce")
    assert compute_two < 0.6 * one.layer_time(s)
    assert two.layer_time(s) == pytest.approx(compute_two + comm, rel=1e-12)
    # and the embedding's vocab-parallel all-reduce
    assert two.embed_time(64) > one.embed_time(64) / 2


def test_fitted_comm_parameters_are_used():
    slow = make(tp=4, comm_bandwidth=1e9, comm_latency=1e-4)
    fast = make(tp=4)
    s = BatchShape.from_lists(prefills=[(256, 0)])
    assert slow.breakdown(s)["tp_all_reduce"] > 10 * fast.breakdown(s)["tp_all_reduce"]


@settings(max_examples=50, deadline=None)
@given(shape=shapes, tp=st.sampled_from([1, 2, 4]), overhead=st.sampled_from([0.0, 5e-6]))
def test_breakdown_sums_to_layer_time(shape, tp, overhead):
    est = make(tp=tp, prefill_attention_overhead_s=overhead, decode_attention_overhead_s=2 * overhead)
    parts = est.breakdown(shape)
    assert set(parts) >= {"attn_pre_proj", "attn_prefill", "attn_decode", "mlp_up_proj", "tp_all_reduce"}
    assert sum(parts.values()) == pytest.approx(est.layer_time(shape), rel=1e-12, abs=1e-15)
    assert all(v >= 0 for v in parts.values())


def test_empty_batch_costs_nothing_on_device():
    est = make(tp=2, pp=2)
    assert est.forward_time(BatchShape()) == 0.0
    assert est.layer_time(BatchShape()) == 0.0


def test_pipeline_transfers():
    one, two = make(pp=1), make(pp=2)
    s = BatchShape.from_lists(prefills=[(1024, 0)])
    assert one.pp_transfer_time(1024) > 0
    assert two.forward_time(s) == pytest.approx(one.forward_time(s) + one.pp_transfer_time(1024))
    assert two.stage_time(s, 0, 16) + two.stage_time(s, 1, 16) == pytest.approx(
        two.forward_time(s) - two.pp_transfer_time(1024)
    )
    # pp spanning nodes pays the network
    multi = make(model="meta-llama/Llama-2-70b-hf", device="h100", tp=8, pp=2)
    assert multi.pp_transfer_time(1024) > make(device="h100", pp=2).pp_transfer_time(1024)


def test_engine_modes_and_cpu_overhead():
    graphs, eager = make(), make(engine_mode="eager")
    s = BatchShape.from_lists(decodes=[100] * 4)
    assert eager.forward_time(s) > graphs.forward_time(s)
    assert eager.cpu_overhead(4) > graphs.cpu_overhead(4)
    custom = make(cpu_base_s=1e-3, cpu_per_seq_s=2e-5)
    assert custom.cpu_overhead(10) == pytest.approx(1e-3 + 10 * 2e-5)
    assert custom.cpu_overhead(20) > custom.cpu_overhead(10)


def test_faster_device_is_faster():
    s = BatchShape.from_lists(prefills=[(512, 0)], decodes=[1000] * 16)
    times = [make(device=d).forward_time(s) for d in ("a40", "a100", "h100", "h200", "b200")]
    assert times == sorted(times, reverse=True)


def test_hot_path_is_fast():
    est = make(tp=2)
    rng = np.random.default_rng(0)
    batch = []
    for i in range(20_000):
        s = BatchShape()
        if i % 4 == 0:
            s.add_prefill(int(rng.integers(1, 512)), int(rng.integers(0, 1000)))
        for _ in range(int(rng.integers(1, 8))):
            s.add_decode(int(rng.integers(1, 3000)))
        batch.append(s)
    t0 = time.perf_counter()
    for s in batch:
        est.forward_time(s)
        est.cpu_overhead(s.num_seqs)
    per_call = (time.perf_counter() - t0) / len(batch)
    assert per_call < 20e-6  # ~1.5 us on a laptop; generous for slow CI


# -- cost tables ------------------------------------------------------------------


def test_flops_of_a_decode_step_are_twice_the_params():
    m = load_model(LLAMA7)
    n = 64
    flops = float(batch_flops(m, 1, n, 0, n * 10, n))
    non_embedding = m.num_params() - m.vocab_size * m.hidden_size  # the LM head is a matmul, the embedding is not
    assert flops == pytest.approx(2 * n * non_embedding, rel=0.02)
    two = float(batch_flops(m, 2, n, 0, n * 10, n))
    assert two == pytest.approx(flops / 2, rel=0.02)


def test_bytes_of_a_decode_step_are_the_weights_plus_kv():
    m = load_model(LLAMA7)
    kv_tokens = 8 * 1000
    b = float(batch_bytes(m, 1, 8, 0, kv_tokens, 8, num_decode=8))
    expected = m.weights_bytes() - m.vocab_size * m.hidden_size * 2 + kv_tokens * m.kv_bytes_per_token()
    assert b == pytest.approx(expected, rel=0.03)


def test_cost_functions_are_vectorised():
    m = load_model(LLAMA7)
    n = np.array([0, 1, 512, 4096])
    pw = np.array([0, 0, 512 * 256.5, 0])
    dkv = np.array([0, 100, 0, 4096 * 50])
    seqs = np.array([0, 1, 1, 4096])
    f = batch_flops(m, 1, n, pw, dkv, seqs, pp=2)
    b = batch_bytes(m, 1, n, pw, dkv, seqs, pp=2)
    assert f.shape == b.shape == (4,)
    assert f[0] == 0 and b[0] == 0
    assert np.all(np.diff(f) > 0)
    for i in range(4):
        assert f[i] == pytest.approx(float(batch_flops(m, 1, n[i], pw[i], dkv[i], seqs[i], pp=2)))


def test_roofline_shares_the_cost_tables():
    est = make(tp=2)
    assert tuple(est.layer_ops) == layer_ops(load_model(LLAMA7), 2)
    # a compute-bound op's time is exactly FLOPs / (peak x efficiency) + launch
    op = next(o for o in est.layer_ops if o.name == "mlp_up_proj")
    n = 8192
    flops, _ = op.evaluate({"one": 1, "tokens": n})
    c = est.config
    expected = flops / (get_device("a100").peak_flops * c.compute_efficiency) + c.resolved("launch_overhead_s")
    assert est.token_op_time("mlp_up_proj", n) == pytest.approx(expected)


# -- calibration -----------------------------------------------------------------


def test_calibrate_recovers_synthetic_efficiencies():
    truth = RooflineConfig(compute_efficiency=0.6, memory_efficiency=0.8, elementwise_efficiency=0.4,
                           launch_overhead_s=2e-6)
    model, device = load_model(LLAMA7), get_device("a100")
    meas = []
    for tp in (1, 2):
        est = RooflineEstimator(truth, model, device, default_node("a100"), tp, 1)
        for n in (1, 8, 32, 128, 512, 2048, 8192):
            for op in ("attn_pre_proj", "mlp_up_proj", "mlp_down_proj", "attn_post_proj", "add", "mlp_act",
                       "input_layernorm"):
                meas.append(OpMeasurement(op, n, tp, est.token_op_time(op, n)))
    meas.append(OpMeasurement("not_an_op", 8, 1, 1e-3))  # ignored
    fit = RooflineEstimator.calibrate(meas, model, device)
    assert fit.compute_efficiency == pytest.approx(0.6, abs=0.02)
    assert fit.memory_efficiency == pytest.approx(0.8, abs=0.02)
    assert fit.elementwise_efficiency == pytest.approx(0.4, abs=0.02)
    assert fit.launch_overhead_s == pytest.approx(2e-6, abs=0.5e-6)


def test_calibrate_needs_usable_measurements():
    with pytest.raises(VidurError, match="no usable"):
        RooflineEstimator.calibrate([OpMeasurement("x", 1, 1, 1.0)], load_model(LLAMA7), get_device("a100"))


def test_accuracy_against_measured_a100_profile():
    """Default efficiencies predict Vidur's measured A100 layer times within 20 % (tokens >= 64)."""
    data = _data_dir()
    if data is None:
        pytest.skip("shared data not available")
    path = data / "vidur-profiles" / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
    meas = load_vidur_mlp_csv(path)
    assert {m.op for m in meas} >= {"attn_pre_proj", "mlp_up_proj", "add", "emb"}
    layer_ops_measured = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
                          "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
    sums: dict = {}
    for m in meas:
        if m.num_tokens >= 64 and m.op in layer_ops_measured:
            k = 2 if m.op == "add" else 1
            s = sums.setdefault((m.tp, m.num_tokens), {})
            s[m.op] = k * m.seconds
    ests = {tp: make(tp=tp, node="dgx_a100") for tp in (1, 2, 4, 8)}
    errs = []
    for (tp, n), ops in sums.items():
        pred = sum((2 if op == "add" else 1) * ests[tp].token_op_time(op, n) for op in ops)
        errs.append(abs(pred - sum(ops.values())) / sum(ops.values()))
    assert np.mean(errs) < 0.20
    fit = RooflineEstimator.calibrate(meas, load_model(LLAMA7), get_device("a100"))
    assert 0.5 < fit.compute_efficiency < 0.9 and 0.5 < fit.memory_efficiency <= 1.0
    assert attrs.evolve(fit, launch_overhead_s=None).engine_mode == "cuda_graphs"


def test_attention_overheads_add_once_per_attention_call():
    base, extra = make(), make(prefill_attention_overhead_s=4e-6, decode_attention_overhead_s=9e-6)
    mixed = BatchShape.from_lists(prefills=[(256, 100)], decodes=[500] * 8)
    assert extra.layer_time(mixed) - base.layer_time(mixed) == pytest.approx(13e-6, rel=1e-9)
    dec = BatchShape.from_lists(decodes=[500] * 8)
    assert extra.layer_time(dec) - base.layer_time(dec) == pytest.approx(9e-6, rel=1e-9)


def test_decode_attention_against_measured_h200_rows():
    """The roofline's decode attention (reading every request's KV cache) against measured H200 times.

    The fixture holds the KV-dominated rows of the shipped H200 profile (provenance in its header); an
    estimator that skipped the KV reads, or read them once per batch, would be several times too fast.
    """
    import csv
    from pathlib import Path

    path = Path(__file__).parent / "data" / "h200_llama3_8b_attn_decode.csv"
    with path.open() as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert len(rows) > 40
    est = make(model="meta-llama/Meta-Llama-3-8B", device="h200")
    ratios = []
    for r in rows:
        b, c, ms = int(r["batch"]), int(r["context"]), float(r["median_ms"])
        pred = est.breakdown(BatchShape.from_lists(decodes=[c] * b))["attn_decode"] * 1e3
        ratios.append(pred / ms)
    assert 0.8 < float(np.median(ratios)) < 1.25, np.median(ratios)
    assert min(ratios) > 0.6 and max(ratios) < 1.5, (min(ratios), max(ratios))
