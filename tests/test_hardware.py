"""Device and node catalog, and the analytical collective model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.errors import VidurError
from vidur.hardware.collective import LinkParams, all_gather_time, all_reduce_time, link_params, send_recv_time
from vidur.hardware.catalog import (
    DEFAULT_NODES,
    DEVICES,
    NETWORK_PROFILES,
    NODES,
    default_node,
    get_device,
    get_node,
    network_profile_name,
)
from vidur.plugins import PluginHost


def _data_dir() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    for c in (os.environ.get("VIDUR_DATA_DIR"), root.parent / "shared" / "data", root / "shared" / "data"):
        if c and (Path(c) / "vidur-profiles").is_dir():
            return Path(c)
    return None


def test_required_skus():
    assert {d.name for d in DEVICES} >= {"a100", "a40", "l40s", "h100", "h200", "b200", "rtx4090", "rtxpro6000"}
    for d in DEVICES:
        assert d.memory_bytes > 20e9 and d.peak_flops > 1e14 and d.memory_bandwidth > 5e11
        assert d.price_per_hour and d.price_per_hour > 0
        assert "price" in d.price_source and "20" in d.price_source  # names the list price and its year


def test_real_vllm_devices():
    """The GPUs of data/real-vllm: datasheet figures, PCIe nodes, CUDA names recognised."""
    from vidur.hardware.catalog import sku_of_gpu_name

    g = get_device("rtx4090")
    assert g.peak_flops == pytest.approx(165.2e12) and g.memory_bandwidth == pytest.approx(1008e9)
    p = get_device("rtxpro6000")
    assert p.peak_flops == pytest.approx(503.8e12) and p.memory_bandwidth == pytest.approx(1792e9)
    assert p.memory_bytes == 97887 * 2**20
    assert default_node("rtx4090").name == "pcie_8" and default_node("rtxpro6000").name == "pcie5_8"
    assert sku_of_gpu_name("NVIDIA GeForce RTX 4090") == "rtx4090"
    assert sku_of_gpu_name("NVIDIA RTX PRO 6000 Blackwell Server Edition") == "rtxpro6000"


def test_datasheet_figures():
    h100 = get_device("h100")
    assert h100.peak_flops == pytest.approx(989.4e12)
    assert h100.memory_bandwidth == pytest.approx(3.35e12)
    assert 80e9 <= h100.memory_bytes <= 86e9
    a100 = get_device("a100")
    assert a100.peak_flops == pytest.approx(312e12) and a100.memory_bytes == 80 * 2**30
    assert get_device("h200").memory_bytes > 140e9
    assert get_device("b200").peak_flops > h100.peak_flops


def test_nodes():
    names = {n.name for n in NODES}
    assert {"dgx_a100", "dgx_h100", "dgx_h200", "dgx_b200", "a100_pairwise_nvlink", "a40_pairwise_nvlink", "pcie_8"} <= names
    for n in NODES:
        assert n.topology in ("switch", "pairwise")
        assert n.link_bandwidth > 0 and n.link_latency > 0 and n.num_devices in (4, 8)
    assert get_node("dgx_h100").link_bandwidth > get_node("dgx_a100").link_bandwidth


def test_default_node_for_every_device():
    for d in DEVICES:
        node = default_node(d.name)
        assert node.name == DEFAULT_NODES[d.name]
    assert default_node("h100").name == "dgx_h100"
    assert default_node("unknown-gpu").name == "pcie_8"


def test_unknown_names():
    with pytest.raises(VidurError, match="did you mean 'h100'"):
        get_device("h10")
    with pytest.raises(VidurError, match="valid"):
        get_node("dgx")


def test_registered_as_plugins():
    host = PluginHost(autoload=False)
    assert set(host.names("device")) >= {d.name for d in DEVICES}
    assert set(host.names("node")) >= {n.name for n in NODES}
    assert host.get("device", "h100") is get_device("h100")


def test_network_profile_names_exist():
    data = _data_dir()
    if data is None:
        pytest.skip("shared data not available")
    for node, prof in NETWORK_PROFILES.items():
        assert network_profile_name(node) == prof
        assert (data / "vidur-profiles" / "network" / prof).is_dir()
    assert network_profile_name("pcie_8") is None


# -- collectives ----------------------------------------------------------------


def test_ring_all_reduce_formula():
    node = get_node("dgx_h100")
    nbytes = 64e6
    t = all_reduce_time(node, 8, nbytes)
    expected = 2 * 7 / 8 * nbytes / node.link_bandwidth + 2 * 7 * node.link_latency
    assert t == pytest.approx(expected)
    assert all_reduce_time(node, 1, nbytes) == 0.0
    assert all_reduce_time(node, 4, 0) == 0.0


def test_all_gather_and_send_recv():
    node = get_node("dgx_a100")
    nbytes = 10e6
    assert all_gather_time(node, 4, nbytes) == pytest.approx(3 / 4 * nbytes / node.link_bandwidth + 3 * node.link_latency)
    assert send_recv_time(node, nbytes) == pytest.approx(node.link_latency + nbytes / node.link_bandwidth)
    inter = send_recv_time(node, nbytes, inter_node=True)
    assert inter == pytest.approx(node.inter_node_latency + nbytes / node.inter_node_bandwidth)
    assert inter > send_recv_time(node, nbytes)


def test_pairwise_topology():
    node = get_node("a100_pairwise_nvlink")
    assert link_params(node, 2).bandwidth == node.link_bandwidth
    assert link_params(node, 4).bandwidth == node.pcie_bandwidth
    nbytes = 32e6
    # 4 GPUs must cross PCIe: slower than the NVLink pair even with half the ring steps per byte
    assert all_reduce_time(node, 4, nbytes) > 3 * all_reduce_time(node, 2, nbytes)


def test_multi_node_rings_use_the_network():
    node = get_node("dgx_h100")
    assert link_params(node, 16).bandwidth == node.inter_node_bandwidth
    assert all_reduce_time(node, 16, 1e8) > all_reduce_time(node, 8, 1e8)


def test_fitted_parameters_substitute():
    node = get_node("dgx_a100")
    fitted = LinkParams(bandwidth=150e9, latency=20e-6)
    t = all_reduce_time(node, 2, 1e6, params=fitted)
    assert t == pytest.approx(2 * 1 / 2 * 1e6 / 150e9 + 2 * 20e-6)
    assert send_recv_time(node, 1e6, params=fitted) == pytest.approx(20e-6 + 1e6 / 150e9)
    assert all_gather_time(node, 2, 1e6, params=fitted) == pytest.approx(0.5e6 / 150e9 + 20e-6)


@settings(max_examples=100, deadline=None)
@given(
    node=st.sampled_from(NODES),
    world=st.integers(1, 16),
    a=st.floats(0, 1e10, allow_nan=False),
    b=st.floats(0, 1e10, allow_nan=False),
)
def test_collectives_monotone_in_bytes(node, world, a, b):
    lo, hi = sorted((a, b))
    assert all_reduce_time(node, world, lo) <= all_reduce_time(node, world, hi)
    assert all_gather_time(node, world, lo) <= all_gather_time(node, world, hi)
    assert send_recv_time(node, lo) <= send_recv_time(node, hi)
    assert all_gather_time(node, world, hi) <= all_reduce_time(node, world, hi)


def test_device_memory_efficiency_is_the_roofline_default_unless_the_scenario_sets_one():
    """A device's published bandwidth figure (GDDR parts) replaces the generic memory efficiency
    only when the config leaves it unset; an explicit value always wins, other devices keep 0.85."""
    from vidur.estimate.roofline import DEFAULT_MEMORY_EFFICIENCY, RooflineConfig, RooflineEstimator
    from vidur.model.catalog import load_model

    g = get_device("rtx4090")
    assert g.memory_efficiency is not None and DEFAULT_MEMORY_EFFICIENCY < g.memory_efficiency <= 1.0
    assert get_device("h100").memory_efficiency is None
    assert get_device("l40s").memory_efficiency == g.memory_efficiency  # the same AD102 GDDR6(X) memory system
    assert RooflineConfig().memory_efficiency is None
    assert RooflineConfig().for_device(g).memory_efficiency == g.memory_efficiency
    assert RooflineConfig().for_device(get_device("h100")).memory_efficiency == DEFAULT_MEMORY_EFFICIENCY
    assert RooflineConfig(memory_efficiency=0.6).for_device(g).memory_efficiency == 0.6
    model = load_model("meta-llama/Meta-Llama-3-8B")
    est = RooflineEstimator(RooflineConfig(), model, g, default_node("rtx4090"), 1, 1)
    assert est.config.memory_efficiency == g.memory_efficiency and "memory 97%" in est.describe()
    slower = RooflineEstimator(RooflineConfig(memory_efficiency=DEFAULT_MEMORY_EFFICIENCY), model, g,
                               default_node("rtx4090"), 1, 1)
    assert slower.decode_iteration_times(4, [2048.0])[0] > est.decode_iteration_times(4, [2048.0])[0]
