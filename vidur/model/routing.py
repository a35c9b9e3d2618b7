"""Top-k routing statistics of a mixture of experts: what one MoE layer's GPUs see.

A batch of ``T`` tokens is routed to ``k`` distinct experts each, out of
``E``; the experts are split evenly over ``ep`` expert-parallel ranks. The
cost model needs two numbers per rank, both functions of ``T`` only (so
token-level costs stay cacheable by token count):

- **active experts** (weights read): an expert receives no token with
  probability ``(1 − k/E)^T`` under uniform routing, so a rank of ``E/ep``
  experts reads ``E/ep · (1 − (1 − k/E)^T)`` experts' weights. One decode
  token reads ``k/ep`` experts per rank on average, a large batch all of them:
  the reason small-batch MoE decoding is memory-bound on weights.
- **tokens on the busiest rank** (compute): the ``T·k`` assignments spread
  over ``ep`` ranks; each rank's count is close to Binomial(T·k, 1/ep), and the
  layer waits for the busiest. Its expected load is taken as
  ``imbalance · μ + σ·z(ep)`` (μ = T·k/ep, σ² = T·k/ep·(1 − 1/ep); z(n) =
  Φ⁻¹((n − 0.375)/(n + 0.25)), Blom's (1958) approximation of the expected
  maximum of n standard normals), capped at T·k.
  ``imbalance`` (≥ 1, default 1: routing balanced in expectation) is the
  systematic skew of real routers, the same quantity as Switch
  Transformer's *capacity factor* (Fedus et al., JMLR 2022, §2.2: 1.0-1.25
  in training) and what DeepSeek-V3's redundant-expert load balancer
  (EPLB; DeepSeek-V3 report, arXiv 2412.19437, §3.4) exists to push
  towards 1. Set it from a measured expert-load histogram (busiest / mean).

:func:`sample_routing` draws concrete routings (uniform top-k, or skewed by
a Zipf popularity) to check these formulas and the conservation of tokens.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def active_experts(num_tokens, num_experts: int, top_k: int, ep: int = 1):
    """Expected experts of one EP rank that receive at least one of ``num_tokens`` tokens (arrays work)."""
    local = num_experts / ep
    if num_experts == top_k:
        return np.where(np.asarray(num_tokens) > 0, local, 0.0) if np.ndim(num_tokens) else (local if num_tokens > 0 else 0.0)
    miss = (1.0 - top_k / num_experts) ** np.asarray(num_tokens, dtype=np.float64)
    out = local * (1.0 - miss)
    return out if np.ndim(num_tokens) else float(out)


def busiest_rank_assignments(num_tokens, top_k: int, ep: int = 1, imbalance: float = 1.0):
    """Expected token-expert assignments on the busiest of ``ep`` ranks (arrays work).

    ``ep == 1``: all ``T·k`` assignments (one rank holds every expert).
    """
    t = np.asarray(num_tokens, dtype=np.float64)
    total = t * top_k
    if ep == 1:
        out = total
    else:
        mean = total / ep
        sigma = np.sqrt(total / ep * (1.0 - 1.0 / ep))
        z = NormalDist().inv_cdf((ep - 0.375) / (ep + 0.25))
        out = np.minimum(imbalance * mean + sigma * z, total)
    return out if np.ndim(num_tokens) else float(out)


def sample_routing(
    num_tokens: int, num_experts: int, top_k: int, rng: np.random.Generator, skew: float = 0.0
) -> np.ndarray:
    """A concrete routing: ``(num_tokens, top_k)`` distinct expert ids per token.

    ``skew`` = 0 routes uniformly; ``skew`` > 0 draws experts with Zipf
    popularity ``1 / rank^skew`` (hot experts), without replacement per token.
    """
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
    weights = 1.0 / np.arange(1, num_experts + 1, dtype=np.float64) ** skew
    # Gumbel top-k: the k largest of log(w) + Gumbel noise are a draw without replacement
    keys = np.log(weights)[None, :] + rng.gumbel(size=(num_tokens, num_experts))
    return np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k]


def rank_loads(routing: np.ndarray, num_experts: int, ep: int) -> np.ndarray:
    """Assignments each of ``ep`` ranks receives (experts split in contiguous blocks of ``E/ep``)."""
    per_expert = np.bincount(routing.ravel(), minlength=num_experts)
    return per_expert.reshape(ep, num_experts // ep).sum(axis=1)
