"""Cheap stand-ins for tests: a linear runtime estimator and a tiny model/device."""

from __future__ import annotations

import attrs
import numpy as np

from vidur.estimate.base import BatchShape, RuntimeEstimator
from vidur.hardware.spec import DeviceSpec, NodeSpec
from vidur.model.spec import ModelSpec

TINY_MODEL = ModelSpec(
    name="test/tiny",
    hidden_size=256,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
    intermediate_size=688,
    vocab_size=1024,
    max_position_embeddings=1 << 20,
)
TEST_DEVICE = DeviceSpec("testgpu", memory_bytes=16 << 30, peak_flops=1e14, memory_bandwidth=1e12, price_per_hour=1.0)
TEST_NODE = NodeSpec("testnode", num_devices=8, link_bandwidth=1e11)


@attrs.frozen
class LinearConfig:
    """Seconds: ``base`` per iteration plus per token / per KV entry / per causal pair."""

    base: float = 1e-3
    per_token: float = 1e-5
    per_kv: float = 1e-8
    per_pair: float = 1e-9


class LinearEstimator(RuntimeEstimator):
    """A deterministic linear cost model (whole iteration, split evenly over layers)."""

    name = "linear"
    Config = LinearConfig

    def __init__(self, config=None, model=TINY_MODEL, device=TEST_DEVICE, node=TEST_NODE, tp=1, pp=1):
        super().__init__(config or LinearConfig(), model, device, node, tp, pp)

    def layer_time(self, shape: BatchShape) -> float:
        c = self.config
        return (c.per_token * shape.num_tokens + c.per_kv * shape.decode_kv + c.per_pair * shape.prefill_work) / self.model.num_layers

    def head_time(self, num_seqs: int) -> float:
        return 0.0

    def cpu_overhead(self, num_seqs: int) -> float:
        return self.config.base

    def forward_time(self, shape: BatchShape) -> float:
        c = self.config
        return c.per_token * shape.num_tokens + c.per_kv * shape.decode_kv + c.per_pair * shape.prefill_work

    def decode_iteration_times(self, num_decode: int, decode_kv: np.ndarray) -> np.ndarray:
        c = self.config
        return (c.per_token * num_decode + c.per_kv * decode_kv + c.per_pair * 0.0) + c.base
