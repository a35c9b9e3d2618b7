"""Accelerator SKUs and node types."""

from __future__ import annotations

import attrs


@attrs.frozen
class DeviceSpec:
    """One accelerator SKU.

    ``peak_flops`` is dense bf16 FLOP/s, ``memory_bandwidth`` HBM bytes/s,
    ``memory_bytes`` usable HBM. ``price_per_hour`` is US$ per GPU-hour and
    ``price_source`` says where that figure comes from.
    ``memory_efficiency``, when set, is the roofline's default weight-read
    bandwidth efficiency on this device (a published sustained-bandwidth
    measurement of the part or its die over the datasheet figure); None
    leaves the estimator's generic default. A scenario's value wins.
    """

    name: str
    memory_bytes: int
    peak_flops: float
    memory_bandwidth: float
    price_per_hour: float | None = None
    price_source: str = ""
    description: str = ""
    memory_efficiency: float | None = None


@attrs.frozen
class NodeSpec:
    """A server: how many devices and how they talk to each other.

    ``link_bandwidth`` is the per-GPU unidirectional bandwidth (bytes/s) of
    the intra-node interconnect seen by a collective, ``link_latency`` the
    per-hop latency in seconds. ``topology`` is ``"switch"`` (every pair at
    full bandwidth, e.g. NVSwitch DGX) or ``"pairwise"`` (NVLink bridges
    between pairs; other pairs go over PCIe at ``pcie_bandwidth``).
    ``inter_node_bandwidth`` is per-GPU network bandwidth between nodes.
    """

    name: str
    num_devices: int
    link_bandwidth: float
    link_latency: float = 5e-6
    topology: str = "switch"
    pcie_bandwidth: float = 25e9
    inter_node_bandwidth: float = 25e9
    inter_node_latency: float = 10e-6
    description: str = ""
