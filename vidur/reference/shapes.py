"""Per-rank tensor shapes of the reference model (no torch needed)."""

from __future__ import annotations

import math

from vidur.model.cost import rank_shape
from vidur.model.spec import ModelSpec


class ShardShape:
    """Per-rank sizes of one layer at tensor parallelism ``tp``: :func:`vidur.model.cost.rank_shape`
    (heads and KV heads split, the MLP width and vocabulary rounded up) plus the tensor shapes the
    reference model builds from it."""

    def __init__(self, model: ModelSpec, tp: int = 1):
        r = rank_shape(model, tp)  # the one per-rank split, shared with the cost model and memory planner
        self.model = model
        self.tp = tp
        self.hidden = r.hidden
        self.q_heads = r.heads
        self.kv_heads = r.kv_heads
        self.head_dim = r.head_dim
        self.inter = r.intermediate
        self.vocab = r.vocab
        self.rot_dim = int(model.head_dim * model.partial_rotary_factor) // 2 * 2
        #: routed experts on this rank, each ``expert_width`` wide (0 for a dense model)
        self.experts = r.experts
        self.expert_width = r.expert_width
        self.top_k = model.experts_per_token

    @property
    def qkv_out(self) -> int:
        return (self.q_heads + 2 * self.kv_heads) * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.q_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def gate_up_out(self) -> int:
        return (2 if self.model.gated_mlp else 1) * self.inter

    @property
    def expert_gate_up_out(self) -> int:
        return (2 if self.model.gated_mlp else 1) * self.expert_width

    def layer_weight_shapes(self) -> dict[str, tuple[int, ...] | None]:
        """Parameter shapes of one layer (None: the model has no such bias)."""
        m, h = self.model, self.hidden
        ln = m.norm == "layernorm"
        if m.is_moe:
            e, gu, wd = self.experts, self.expert_gate_up_out, self.expert_width
            mlp = {
                "router": (m.num_experts, h) if m.num_experts > 1 else None,
                "router.bias": (m.num_experts,) if m.router_bias and m.num_experts > 1 else None,
                "experts.gate_up": (e, gu, h),
                "experts.gate_up.bias": (e, gu) if m.mlp_bias else None,
                "experts.down": (e, h, wd),
                "experts.down.bias": (e, h) if m.mlp_bias else None,
            }
        else:
            mlp = {
                "gate_up_proj": (self.gate_up_out, h),
                "gate_up_proj.bias": (self.gate_up_out,) if m.mlp_bias else None,
                "down_proj": (h, self.inter),
                "down_proj.bias": (h,) if m.mlp_bias else None,
            }
        return {
            "input_norm": (h,),
            "input_norm.bias": (h,) if ln else None,
            "qkv_proj": (self.qkv_out, h),
            "qkv_proj.bias": (self.qkv_out,) if m.attention_bias else None,
            "o_proj": (h, self.q_dim),
            "o_proj.bias": (h,) if m.output_bias else None,
            "post_norm": (h,),
            "post_norm.bias": (h,) if ln and not m.parallel_attn_mlp else None,
            **mlp,
        }

    def layer_params(self) -> int:
        return sum(math.prod(s) for s in self.layer_weight_shapes().values() if s)
