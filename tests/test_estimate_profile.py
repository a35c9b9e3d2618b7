"""The ``profile`` runtime estimator on the shipped CPU profile of the tiny model."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape
from vidur.estimate.profile_estimator import ExtrapolationWarning, ProfileConfig, ProfileEstimator
from vidur.resolve.device import resolve_device
from vidur.hardware.catalog import default_node, get_device
from vidur.model.catalog import load_model

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "vidur" / "data" / "profiles" / "cpu" / "vidur" / "tiny-llama"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model():
    return load_model("vidur/tiny-llama")


def make(model, tp=1, **cfg) -> ProfileEstimator:
    return ProfileEstimator(ProfileConfig(**cfg), model, resolve_device("cpu").spec, default_node("cpu"), tp, 1)


def test_registered_as_plugin():
    from vidur.plugins import get_host

    assert get_host().get("runtime_estimator", "profile") is ProfileEstimator


def test_prices_are_positive_and_grow_with_work(model):
    est = make(model)
    t_small = est.forward_time(BatchShape.from_lists([(64, 0)]))
    t_big = est.forward_time(BatchShape.from_lists([(1024, 0)]))
    assert 0 < t_small < t_big
    d1 = est.forward_time(BatchShape.from_lists([], [100] * 8))
    d2 = est.forward_time(BatchShape.from_lists([], [1500] * 8))
    assert 0 < d1 < d2
    assert est.cpu_overhead(8) > 0
    assert est.forward_time(BatchShape()) == 0.0
    assert "profile" in est.describe() and "tiny-llama" in est.describe()


def test_prefill_aggregates_preserve_work(model):
    est = make(model)
    one = est.prefill_attention(1, 512, 512 * (100 + 513 / 2))
    assert one == pytest.approx(est.fs.prefill_time(512, 100), rel=1e-9)
    two = BatchShape.from_lists([(256, 0), (256, 0)])
    t2 = est.prefill_attention(two.num_prefill, two.prefill_tokens, two.prefill_work)
    assert t2 == pytest.approx(2 * est.fs.prefill_time(256, 0) * est.fs.prefill_batch_factor(2, 256), rel=1e-9)


def test_decode_iteration_times_match_scalar_path(model):
    for mode in ("cuda_graphs", "eager"):
        est = make(model, engine_mode=mode)
        kv = np.arange(16 * 50, 16 * 1900, 16 * 7)
        fast = est.decode_iteration_times(16, kv)
        slow = [est.forward_time(BatchShape(num_decode=16, decode_kv=int(k))) + est.cpu_overhead(16) for k in kv]
        assert np.array_equal(fast, slow)  # bit for bit: fast-forward must equal stepping


def test_tp2_shard_is_used(model):
    s = BatchShape.from_lists([(1024, 0)])
    assert make(model, 2).layer_time(s) != make(model, 1).layer_time(s)


def test_extrapolation_warns_once_and_never_crashes(model):
    est = make(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        big = est.forward_time(BatchShape.from_lists([(40000, 0)]))
        est.forward_time(BatchShape.from_lists([(50000, 0)]))
        wide = est.forward_time(BatchShape.from_lists([], [3000] * 2000))
        in_range = est.forward_time(BatchShape.from_lists([(4000, 0)]))
    msgs = [str(w.message) for w in caught if issubclass(w.category, ExtrapolationWarning)]
    assert any("40000 tokens" in m for m in msgs)
    assert not any("50000 tokens" in m for m in msgs)  # once per kind
    assert any("decode batch of 2000" in m for m in msgs)
    assert np.isfinite(big) and big > in_range > 0 and np.isfinite(wide)


def test_no_warning_inside_the_grid(model):
    est = make(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in (BatchShape.from_lists([(512, 1000)], [300] * 20), BatchShape.from_lists([], [1500] * 64)):
            est.layer_time(s)
        est.decode_iteration_times(32, np.arange(32 * 10, 32 * 2000, 32 * 100))


def test_eager_mode_pays_launch_time(model, tmp_path):
    p = tmp_path / "p"
    shutil.copytree(TINY, p)
    (p / "fitted.json").unlink()
    with open(p / "tp1.csv", "a") as fh:
        for n in (1, 64, 512):
            fh.write(f"cpu_launch_layer,{n},{n},0,5,5,5,0,7\n")
    meta = json.loads((p / "metadata.json").read_text())
    meta["shards"]["1"]["rows"] += 3
    (p / "metadata.json").write_text(json.dumps(meta))
    small = BatchShape.from_lists([], [100] * 4)
    eager = make(model, profile=str(p), engine_mode="eager")
    graphs = make(model, profile=str(p), engine_mode="cuda_graphs")
    assert eager.layer_time(small) == pytest.approx(5e-3)
    assert graphs.layer_time(small) < 5e-3  # decode batch replayed as a graph
    assert graphs.layer_time(BatchShape.from_lists([(8, 0)])) == pytest.approx(5e-3)  # prefill runs eagerly
    assert eager.breakdown(small)["launch_stall"] > 0


def test_bad_config_and_missing_profile(model):
    with pytest.raises(VidurError, match="engine_mode"):
        ProfileConfig(engine_mode="graphs")
    with pytest.raises(VidurError, match="no profile of vidur/tiny-llama on h100"):
        ProfileEstimator(ProfileConfig(), model, get_device("h100"), default_node("h100"), 1, 1)
    with pytest.raises(VidurError, match="not meta-llama/Llama-2-7b-hf"):
        ProfileEstimator(
            ProfileConfig(profile=str(TINY)), load_model("meta-llama/Llama-2-7b-hf"), get_device("h100"), default_node("h100"), 1, 1
        )


def test_comm_model_uses_measured_tables():
    from vidur.estimate.comm import CommModel
    from vidur.hardware.catalog import get_node

    cm = CommModel(get_node("dgx_h100"), 8, 1)
    assert cm.source == "measured"
    t_small, t_big = cm.all_reduce(8192), cm.all_reduce(64 << 20)
    assert 5e-6 < t_small < 1e-4 and t_big > 1e-4
    assert CommModel(get_node("pcie_8"), 2, 1).source == "nominal"


def test_breakdown_sums_to_device_layer_time(model):
    est = make(model)
    s = BatchShape.from_lists([(300, 200)], [800] * 12)
    b = est.breakdown(s)
    assert sum(v for k, v in b.items() if k != "launch_stall") == pytest.approx(est.device_layer_time(s), rel=1e-6)


def test_layer_time_is_fast(model):
    est = make(model)
    shapes = [BatchShape.from_lists([(512, 100)], [300] * 20), BatchShape.from_lists([], [500] * 64)]
    est.layer_time(shapes[0])
    n = 20000
    t0 = time.perf_counter()
    for i in range(n):
        est.layer_time(shapes[i & 1])
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 20e-6


def test_simulation_picks_the_profile_estimator_automatically():
    """A scenario with runtime_estimator: auto on a profiled (device, model, tp) uses the profile."""
    import types

    from vidur.engine.simulation import Simulation
    from vidur.hardware.spec import DeviceSpec
    from vidur.hookspecs import hookimpl
    from vidur.plugins import PluginHost
    from vidur.scenario import load_scenario

    plugin = types.ModuleType("cpu_device_plugin")

    @hookimpl
    def vidur_register_devices(register):
        register(DeviceSpec(name="cpu", memory_bytes=8 << 30, peak_flops=1e11, memory_bandwidth=2e10))

    plugin.vidur_register_devices = vidur_register_devices
    host = PluginHost(autoload=False)
    if "cpu" not in host.registries.get("device", {}):
        host.register(plugin, name="cpu_device_plugin")
    sc = load_scenario(
        REPO / "scenarios" / "quickstart.yaml",
        settings=[("model", "vidur/tiny-llama"), ("cluster.device", "cpu"), ("workload.num_requests", "100"),
                  ("workload.lengths.max_tokens", "1024")],
    )
    sim = Simulation(sc, host)
    assert sim.estimator_name == "profile"
    result = sim.run(progress=False)
    assert len(result.requests) == 100 and result.estimator.startswith("profile")


def test_shipped_fit_is_reused_not_refitted(model, tmp_path):
    from vidur.fit.curves import cache_dir

    make(model, 2)
    assert not cache_dir().exists() or not any(cache_dir().iterdir())


def test_h200_prefill_prices_kv_parity_and_fresh_chunks():
    """One chunk: its KV length's parity is known and priced; several: the mean of both parities.

    On the H200 profile of 2026-11-26 (SDPA attention: odd KV lengths ran ~1.4x slower), kept as test data;
    the shipped profile measured FlashAttention, which has no parity effect."""
    llama = load_model("meta-llama/Meta-Llama-3-8B")
    sdpa = Path(__file__).parent / "data/profiles_sdpa/h200/meta-llama/Meta-Llama-3-8B"
    est = ProfileEstimator(ProfileConfig(profile=str(sdpa)), llama, resolve_device("h200").spec, default_node("h200"), 1, 1)
    fs = est.fs
    assert fs.prefill_odd is not None and fs.prefill_fresh is not None

    def one(q, ctx):
        return est.prefill_attention(1, q, q * (ctx + (q + 1) / 2))

    assert one(1024, 181) == pytest.approx(fs.prefill_time(1024, 181), rel=1e-9)
    assert one(1024, 181) > 1.3 * one(1024, 180)
    assert one(512, 0) == pytest.approx(fs.prefill_time(512, 0), rel=1e-9)
    assert one(512, 0) < 0.8 * one(512, 16)  # the unmasked kernel of a fresh chunk
    two = est.prefill_attention(2, 2 * 1024, 2 * 1024 * (181 + 1025 / 2))
    mean = 0.5 * (fs.prefill_time(1024, 181) + fs.prefill_time(1024, 180))
    f = fs.prefill_batch_factor(2, 1024)
    assert two == pytest.approx(2 * f * mean, rel=0.02)


@pytest.mark.parametrize("mode", ["cuda_graphs", "eager"])
def test_inlined_decode_iteration_is_bitwise_the_generic_path(model, mode):
    est = make(model, engine_mode=mode, cuda_graph_max_batch=8, warn_extrapolation=False)  # beyond the grid too
    for n in (1, 3, 8, 9, 64, 300):
        for kv in (n, n * 17, n * 900, n * 5000):
            generic = est.forward_time(BatchShape(num_decode=n, decode_kv=kv)) + est.cpu_overhead(n)
            assert est.decode_iteration_time(n, kv) == generic


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 400),
    per_request=st.lists(st.floats(0.5, 20_000), min_size=1, max_size=30),
    mode=st.sampled_from(["cuda_graphs", "eager"]),
)
def test_vectorised_decode_is_bitwise_the_scalar_path(model, n, per_request, mode):
    """Inside, below and beyond the profiled grid (batch and context), for both engine modes."""
    est = _quiet_estimators(model, mode)
    kv = np.array([max(1, int(n * r)) for r in per_request], dtype=np.int64)
    fast = est.decode_iteration_times(n, kv)
    assert np.array_equal(fast, [est.decode_iteration_time(n, int(k)) for k in kv])


_ESTIMATORS: dict = {}


def _quiet_estimators(model, mode):
    if mode not in _ESTIMATORS:
        _ESTIMATORS[mode] = make(model, engine_mode=mode, cuda_graph_max_batch=16, warn_extrapolation=False)
    return _ESTIMATORS[mode]


@settings(max_examples=80, deadline=None)
@given(
    prefills=st.lists(st.tuples(st.integers(1, 700), st.integers(0, 3000)), max_size=4),
    decodes=st.lists(st.integers(0, 3000), max_size=40),
    mode=st.sampled_from(["cuda_graphs", "eager"]),
)
def test_inlined_forward_time_is_the_layer_composition(model, prefills, decodes, mode):
    """forward_time inlines layer_time: it must equal num_layers x layer_time + embed + head, bit for bit."""
    est = _quiet_estimators(model, mode)
    s = BatchShape.from_lists(prefills, decodes)
    composed = model.num_layers * est.layer_time(s) + est.embed_time(s.num_tokens) + est.head_time(s.num_seqs)
    assert est.forward_time(s) == composed


@pytest.mark.parametrize("tokens", [64, 1000, 20000])  # inside the profiled range, and beyond it
def test_tp_all_reduces_are_priced(model, monkeypatch, tokens):
    """Each layer of a TP shard pays its all-reduces (two: attention and MLP; one more for the embedding),
    exactly what the comm model charges, in every pricing path (token table, past the table, decode fast
    path, forward pass)."""
    import vidur.estimate.comm as C

    with_comm = make(model, 2)
    n_ar = 1 if model.parallel_attn_mlp else 2
    one = with_comm._comm.all_reduce(tokens * model.hidden_size * model.dtype_bytes)
    assert one > 0
    with monkeypatch.context() as m:  # an estimator whose all-reduces are free, at construction and after
        m.setattr(C.CommModel, "all_reduce", lambda self, nbytes: 0.0)
        m.setattr(C.CommModel, "all_reduce_array", lambda self, nbytes: np.zeros(len(nbytes)))
        free = make(model, 2)
    free._comm.all_reduce = lambda nbytes: 0.0
    free._comm.all_reduce_array = lambda nbytes: np.zeros(len(nbytes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        s = BatchShape.from_lists([(tokens, 0)])
        assert with_comm.layer_time(s) - free.layer_time(s) == pytest.approx(n_ar * one, rel=1e-6)
        L = model.num_layers
        # every layer's, plus the vocabulary-parallel embedding's
        assert with_comm.forward_time(s) - free.forward_time(s) == pytest.approx((L * n_ar + 1) * one, rel=1e-6)
        assert with_comm.breakdown(s)["tp_all_reduce"] == pytest.approx(n_ar * one, rel=1e-6)
        if tokens <= 1000:
            d = with_comm.decode_iteration_times(tokens, np.array([tokens * 100]))
            d0 = free.decode_iteration_times(tokens, np.array([tokens * 100]))
            assert float(d[0] - d0[0]) == pytest.approx((L * n_ar + 1) * one, rel=1e-6)
