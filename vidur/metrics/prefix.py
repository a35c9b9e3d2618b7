"""Prefix-cache metrics: token-level hit rate and evictions, per replica and cluster.

The hit rate is cached prompt tokens over prompt tokens looked up, both at
each request's first admission (re-admissions after a preemption are
counted apart, as ``recompute_hit_tokens``), like vLLM's prefix-cache hit
rate (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``).
Evictions count KV blocks whose cached content was dropped to make room.
"""

from __future__ import annotations

from typing import Any

from vidur.metrics.records import RunRecords


def cache_entry(stats: dict) -> dict[str, Any]:
    """One replica's (or the cluster's) counters with the hit rate."""
    q = stats["query_tokens"]
    return {
        "hit_rate": stats["hit_tokens"] / q if q else None,
        "hit_tokens": int(stats["hit_tokens"]),
        "query_tokens": int(q),
        "evicted_blocks": int(stats["evicted_blocks"]),
        "recompute_hit_tokens": int(stats["recompute_hit_tokens"]),
    }


def prefix_cache_summary(records: RunRecords) -> dict[str, Any] | None:
    """``{"cluster": entry, "replicas": [entry per replica]}``, or None when no
    replica caches prefixes (the summary then has no prefix_cache section)."""
    per = [getattr(r, "prefix_cache", None) for r in getattr(records, "replicas", ())]
    if not any(p is not None for p in per):
        return None
    keys = ("hit_tokens", "query_tokens", "evicted_blocks", "recompute_hit_tokens")
    total = {k: sum(p[k] for p in per if p is not None) for k in keys}
    return {
        "cluster": cache_entry(total),
        "replicas": [cache_entry(p) if p is not None else None for p in per],
    }
