"""Analytical communication model: ring all-reduce, all-gather, all-to-all, send/recv.

Every function is a pure function of a :class:`~vidur.hardware.NodeSpec`, a
world size and a message size in **bytes**. Ranks sit on consecutive GPUs of
a node (ranks beyond ``node.num_devices`` spill to further nodes). The ring's
bottleneck link decides the bandwidth:

- ``world > node.num_devices``: the inter-node network;
- ``topology == "pairwise"`` and ``world > 2``: PCIe (pairs of GPUs are
  bridged by NVLink, the ring must cross PCIe between pairs);
- otherwise the intra-node link (NVSwitch, or one NVLink pair).

Pass ``params=LinkParams(bandwidth, latency)`` to substitute fitted values
(e.g. from the measured profiles in ``vidur-profiles/network``) for the
nominal ones.
"""

from __future__ import annotations

import attrs

from vidur.hardware.spec import NodeSpec


@attrs.frozen
class LinkParams:
    """Effective bandwidth (bytes/s) and per-step latency (s) of a ring's bottleneck link."""

    bandwidth: float
    latency: float


def link_params(node: NodeSpec, world: int, *, inter_node: bool | None = None) -> LinkParams:
    """Nominal bottleneck link of a ring over ``world`` consecutive ranks on ``node``.

    ``inter_node`` forces (True) or forbids (False) the inter-node network;
    by default it is used when ``world`` exceeds the node's GPU count.
    """
    if inter_node is None:
        inter_node = world > node.num_devices
    if inter_node:
        return LinkParams(node.inter_node_bandwidth, node.inter_node_latency)
    if node.topology == "pairwise" and world > 2:
        return LinkParams(min(node.pcie_bandwidth, node.link_bandwidth), node.link_latency)
    return LinkParams(node.link_bandwidth, node.link_latency)


def all_reduce_time(node: NodeSpec, world: int, nbytes: float, params: LinkParams | None = None) -> float:
    """Ring all-reduce of ``nbytes`` per rank: 2(t−1)/t · bytes/bw + 2(t−1) · latency."""
    if world <= 1 or nbytes <= 0:
        return 0.0
    p = params or link_params(node, world)
    steps = world - 1
    return 2.0 * steps / world * nbytes / p.bandwidth + 2.0 * steps * p.latency


def all_gather_time(node: NodeSpec, world: int, nbytes: float, params: LinkParams | None = None) -> float:
    """Ring all-gather producing ``nbytes`` per rank in total: (t−1)/t · bytes/bw + (t−1) · latency."""
    if world <= 1 or nbytes <= 0:
        return 0.0
    p = params or link_params(node, world)
    steps = world - 1
    return steps / world * nbytes / p.bandwidth + steps * p.latency


def all_to_all_time(node: NodeSpec, world: int, nbytes: float, params: LinkParams | None = None) -> float:
    """All-to-all where each rank scatters ``nbytes`` evenly over ``world`` ranks (its own share stays):
    (t−1)/t · bytes/bw + latency; every rank sends to all peers at once over its own links (NVSwitch)."""
    if world <= 1 or nbytes <= 0:
        return 0.0
    p = params or link_params(node, world)
    return (world - 1) / world * nbytes / p.bandwidth + p.latency


def send_recv_time(
    node: NodeSpec, nbytes: float, *, inter_node: bool = False, params: LinkParams | None = None
) -> float:
    """Point-to-point transfer of ``nbytes`` to a neighbour GPU: latency + bytes/bw.

    The neighbour is on the same node (over the GPU link; for a pairwise
    node, its NVLink partner) unless ``inter_node``.
    """
    if nbytes <= 0:
        return 0.0
    p = params or link_params(node, 2, inter_node=inter_node)
    return p.latency + nbytes / p.bandwidth
