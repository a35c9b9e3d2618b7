"""Shipped accelerator SKUs and node types.

Figures are vendor datasheet numbers (dense bf16 tensor-core FLOP/s without
sparsity, peak HBM/GDDR bandwidth) and total device memory as ``nvidia-smi``
reports it. Prices are US$ per GPU-hour from the named public list price;
cloud prices change often, so each ``price_source`` names its provider and
date, and figures recalled rather than re-checked say "approx.". Override
them in a scenario for real planning.

Interconnect figures are nominal per-GPU *unidirectional* bandwidths
(NVLink3 300 GB/s, NVLink4 450 GB/s, NVLink5 900 GB/s; NVLink bridges for
PCIe cards; PCIe effective ~25 GB/s at Gen4, ~50 GB/s at Gen5). The
collective model (:mod:`vidur.hardware.collective`) can substitute fitted
values; :data:`NETWORK_PROFILES` maps node names to the measured network
profiles in ``vidur-profiles/network``.
"""

from __future__ import annotations

from vidur.errors import VidurError
from vidur.hardware.spec import DeviceSpec, NodeSpec

MiB = 1 << 20
GB = 1e9
TFLOPS = 1e12

_CW = "CoreWeave on-demand list price for an 8-GPU HGX node / 8, 2024 (approx.)"

DEVICES: tuple[DeviceSpec, ...] = (
    DeviceSpec(
        name="a100",
        memory_bytes=81920 * MiB,
        peak_flops=312 * TFLOPS,
        memory_bandwidth=2039 * GB,
        price_per_hour=2.70,
        price_source=f"{_CW}: $21.60/h",
        description="NVIDIA A100 80GB SXM4 (HBM2e), NVLink3",
    ),
    DeviceSpec(
        name="a40",
        memory_bytes=46068 * MiB,
        peak_flops=149.7 * TFLOPS,
        memory_bandwidth=696 * GB,
        price_per_hour=1.28,
        price_source="CoreWeave on-demand list price per A40 GPU, 2023 (approx.)",
        description="NVIDIA A40 48GB (GDDR6), PCIe Gen4, NVLink bridge pairs",
    ),
    DeviceSpec(
        name="l40s",
        memory_bytes=46068 * MiB,
        peak_flops=362.05 * TFLOPS,
        memory_bandwidth=864 * GB,
        price_per_hour=2.25,
        price_source="CoreWeave on-demand list price for an 8x L40S node ($18.00/h) / 8, 2024 (approx.)",
        description="NVIDIA L40S 48GB (GDDR6), PCIe Gen4, no NVLink",
        # the L40's memory system (AD102, 384-bit GDDR6, 864 GB/s): te42kyfo/gpu-benches
        # gpu-stream/l40.txt reads 844 GB/s (97.7 %); see the RTX 4090 below
        memory_efficiency=0.97,
    ),
    DeviceSpec(
        name="h100",
        memory_bytes=81559 * MiB,
        peak_flops=989.4 * TFLOPS,
        memory_bandwidth=3350 * GB,
        price_per_hour=6.155,
        price_source=f"{_CW}: $49.24/h",
        description="NVIDIA H100 80GB SXM5 (HBM3), NVLink4",
    ),
    DeviceSpec(
        name="h200",
        memory_bytes=143771 * MiB,
        peak_flops=989.4 * TFLOPS,
        memory_bandwidth=4800 * GB,
        price_per_hour=6.305,
        price_source=f"{_CW}: $50.44/h",
        description="NVIDIA H200 141GB SXM (HBM3e), NVLink4",
    ),
    DeviceSpec(
        name="b200",
        memory_bytes=183359 * MiB,
        peak_flops=2250 * TFLOPS,
        memory_bandwidth=8000 * GB,
        price_per_hour=8.60,
        price_source=f"{_CW.replace('2024', '2025')}: $68.80/h",
        description="NVIDIA B200 180GB SXM (HBM3e), NVLink5 (HGX B200 datasheet figures)",
    ),
    DeviceSpec(
        # NVIDIA Ada GPU architecture whitepaper (v2.1, 2023), appendix table for the
        # GeForce RTX 4090: 165.2 dense BF16 tensor TFLOPS with FP32 accumulate
        # (330.4 with sparsity), 1008 GB/s GDDR6X (21 Gbps x 384 bit). Memory is what
        # torch.cuda reports on the card (25,250,627,584 bytes: data/real-vllm meta.json).
        name="rtx4090",
        memory_bytes=25250627584,
        peak_flops=165.2 * TFLOPS,
        memory_bandwidth=1008 * GB,
        price_per_hour=0.69,
        price_source="RunPod community-cloud list price for one RTX 4090, 2025 (approx.)",
        description="NVIDIA GeForce RTX 4090 24GB (GDDR6X), PCIe Gen4, no NVLink",
        # GDDR parts sustain nearly their datasheet bandwidth, HBM parts much less: the
        # gpu-stream read kernel of te42kyfo/gpu-benches (gpu-stream/l40.txt, h200.txt)
        # reaches 844 of 864 GB/s (97.7 %) on the L40, the AD102 die of the RTX 4090 with
        # GDDR6, against 2,756 (read) / 3,534 (triad) of 4,800 GB/s on the H200. The
        # generic 0.85 is an HBM figure; weight streaming on the AD102 is taken at 0.97.
        memory_efficiency=0.97,
    ),
    DeviceSpec(
        # NVIDIA RTX Blackwell GPU architecture whitepaper (2025), RTX PRO 6000 Blackwell
        # Workstation Edition: 503.8 dense FP16/BF16 tensor TFLOPS with FP32 accumulate
        # (1007.6 sparse), 96 GB GDDR7 ECC at 28 Gbps x 512 bit = 1792 GB/s. Memory as
        # nvidia-smi reports it (97,887 MiB).
        name="rtxpro6000",
        memory_bytes=97887 * MiB,
        peak_flops=503.8 * TFLOPS,
        memory_bandwidth=1792 * GB,
        price_per_hour=1.79,
        price_source="RunPod secure-cloud list price for one RTX PRO 6000, 2025 (approx.)",
        description="NVIDIA RTX PRO 6000 Blackwell 96GB (GDDR7), PCIe Gen5, no NVLink",
    ),
)

NODES: tuple[NodeSpec, ...] = (
    NodeSpec(
        name="dgx_a100",
        num_devices=8,
        link_bandwidth=300 * GB,
        link_latency=5e-6,
        topology="switch",
        pcie_bandwidth=25 * GB,
        inter_node_bandwidth=25 * GB,
        inter_node_latency=10e-6,
        description="8x A100 SXM4 on NVSwitch (NVLink3), 8x 200 Gb/s HDR InfiniBand",
    ),
    NodeSpec(
        name="dgx_h100",
        num_devices=8,
        link_bandwidth=450 * GB,
        link_latency=3e-6,
        topology="switch",
        pcie_bandwidth=50 * GB,
        inter_node_bandwidth=50 * GB,
        inter_node_latency=8e-6,
        description="8x H100 SXM5 on NVSwitch (NVLink4), 8x 400 Gb/s NDR InfiniBand",
    ),
    NodeSpec(
        name="dgx_h200",
        num_devices=8,
        link_bandwidth=450 * GB,
        link_latency=3e-6,
        topology="switch",
        pcie_bandwidth=50 * GB,
        inter_node_bandwidth=50 * GB,
        inter_node_latency=8e-6,
        description="8x H200 SXM on NVSwitch (NVLink4), 8x 400 Gb/s NDR InfiniBand",
    ),
    NodeSpec(
        name="dgx_b200",
        num_devices=8,
        link_bandwidth=900 * GB,
        link_latency=3e-6,
        topology="switch",
        pcie_bandwidth=50 * GB,
        inter_node_bandwidth=50 * GB,
        inter_node_latency=8e-6,
        description="8x B200 on NVSwitch (NVLink5), 8x 400 Gb/s InfiniBand",
    ),
    NodeSpec(
        name="a100_pairwise_nvlink",
        num_devices=4,
        link_bandwidth=300 * GB,
        link_latency=5e-6,
        topology="pairwise",
        pcie_bandwidth=25 * GB,
        inter_node_bandwidth=25 * GB,
        inter_node_latency=10e-6,
        description="4x A100 80GB PCIe, NVLink bridges between GPU pairs, PCIe Gen4 otherwise",
    ),
    NodeSpec(
        name="a40_pairwise_nvlink",
        num_devices=4,
        link_bandwidth=56.25 * GB,
        link_latency=5e-6,
        topology="pairwise",
        pcie_bandwidth=25 * GB,
        inter_node_bandwidth=12.5 * GB,
        inter_node_latency=10e-6,
        description="4x A40 48GB, NVLink bridges (112.5 GB/s bidirectional) between pairs, PCIe Gen4 otherwise",
    ),
    NodeSpec(
        name="h100_pairwise_nvlink",
        num_devices=4,
        link_bandwidth=300 * GB,
        link_latency=5e-6,
        topology="pairwise",
        pcie_bandwidth=50 * GB,
        inter_node_bandwidth=25 * GB,
        inter_node_latency=10e-6,
        description="4x H100 PCIe/NVL, NVLink bridges (600 GB/s bidirectional) between pairs, PCIe Gen5 otherwise",
    ),
    NodeSpec(
        name="pcie_8",
        num_devices=8,
        link_bandwidth=25 * GB,
        link_latency=8e-6,
        topology="switch",
        pcie_bandwidth=25 * GB,
        inter_node_bandwidth=12.5 * GB,
        inter_node_latency=12e-6,
        description="8 PCIe Gen4 GPUs without NVLink (e.g. L40S, A40 servers), 100 Gb/s Ethernet between nodes",
    ),
    NodeSpec(
        # link_bandwidth is what NCCL all-reduce reaches over PCIe Gen5 (bus bandwidth at large
        # messages 35-45 GB/s on 8x H100 PCIe without NVLink: Alaya NeW, "NCCL-tests in practice",
        # docs.alayanew.com tech blog 2026-05-06), not the 64 GB/s x16 line rate; smaller
        # messages, a x8 slot or P2P disabled (NCCL_P2P_DISABLE=1 through host memory, as
        # 2x RTX PRO 6000 workstations often need: local-inference-lab/rtx6kpro#15) reach less
        name="pcie5_8",
        num_devices=8,
        link_bandwidth=40 * GB,
        link_latency=8e-6,
        topology="switch",
        pcie_bandwidth=50 * GB,
        inter_node_bandwidth=25 * GB,
        inter_node_latency=12e-6,
        description="8 PCIe Gen5 GPUs without NVLink (e.g. H100 PCIe), 200 Gb/s network between nodes",
    ),
)

#: node name -> directory of its measured profile in vidur-profiles/network
NETWORK_PROFILES = {
    "dgx_a100": "a100_dgx",
    "dgx_h100": "h100_dgx",
    "a100_pairwise_nvlink": "a100_pairwise_nvlink",
    "a40_pairwise_nvlink": "a40_pairwise_nvlink",
    "h100_pairwise_nvlink": "h100_pairwise_nvlink",
}

#: device name -> the node it usually comes in
DEFAULT_NODES = {
    "a100": "dgx_a100",
    "a40": "a40_pairwise_nvlink",
    "l40s": "pcie_8",
    "h100": "dgx_h100",
    "h200": "dgx_h200",
    "b200": "dgx_b200",
    "rtx4090": "pcie_8",  # PCIe Gen4 x16, no NVLink
    "rtxpro6000": "pcie5_8",  # PCIe Gen5 x16, no NVLink
}

_DEVICES = {d.name: d for d in DEVICES}
_NODES = {n.name: n for n in NODES}


def _unknown(kind: str, name: str, valid) -> VidurError:
    from vidur.plugins import suggest

    return VidurError(f"unknown {kind} {name!r}{suggest(name, valid)}; valid: {', '.join(sorted(valid))}")


def get_device(name: str) -> DeviceSpec:
    """A shipped device by name (``a100``, ``h100`` ...)."""
    try:
        return _DEVICES[name]
    except KeyError:
        raise _unknown("device", name, _DEVICES) from None


def get_node(name: str) -> NodeSpec:
    """A shipped node type by name (``dgx_h100``, ``a40_pairwise_nvlink`` ...)."""
    try:
        return _NODES[name]
    except KeyError:
        raise _unknown("node", name, _NODES) from None


def default_node(device_name: str) -> NodeSpec:
    """The node a device usually comes in (``h100`` -> ``dgx_h100``); unknown devices get ``pcie_8``
    (a device file's ``node`` is applied by :func:`vidur.resolve.device.resolve_device`)."""
    return _NODES[DEFAULT_NODES.get(device_name, "pcie_8")]


def network_profile_name(node_name: str) -> str | None:
    """The ``vidur-profiles/network`` directory measured on this node type, if any."""
    return NETWORK_PROFILES.get(node_name)


#: GPU SKUs as they appear in CUDA device names, most specific first (``l40s`` before ``l40``)
GPU_NAMES = ("rtxpro6000", "rtx4090", "h200", "h100", "h800", "gb200", "b200", "a100", "a800", "a40", "l40s", "l40", "l4", "a10g", "a10", "v100", "t4")


def sku_of_gpu_name(name: str) -> str | None:
    """The short SKU in a CUDA device name (``NVIDIA H100 80GB HBM3`` -> ``h100``), or None when unknown."""
    full = name.lower()
    squeezed = full.replace(" ", "").replace("nvidia", "")
    for sku in GPU_NAMES:
        if sku in squeezed or f" {sku}" in full:
            return sku
    return None

