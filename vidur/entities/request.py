"""The simulated request: lengths, progress and timestamps."""

from __future__ import annotations

import math

INF = math.inf


class Request:
    """One inference request as it moves through a replica.

    Progress is two counters: ``kv_len`` (tokens whose KV is cached) and
    ``prefill_target`` (tokens the current prefill must process: the
    prompt, or prompt + generated tokens after a preemption). Finishing a
    prefill produces one output token; each decode step produces one more,
    so while decoding ``kv_len == prompt + generated - 1`` and the request
    is done when ``kv_len`` reaches ``final_kv``.
    """

    __slots__ = (
        "id",
        "arrival",
        "prompt",
        "output",
        "replica",
        "kv_len",
        "prefill_target",
        "final_kv",
        "blocks",
        "in_flight",
        "first_scheduled",
        "first_token",
        "last_token",
        "completion",
        "preemptions",
        "recomputed",
        "group_base",
        "group_join",
        "group_tight",
        "content",
        "kvc",
        "ckeys",
        "cached",
    )

    def __init__(self, id: int, arrival: float, prompt: int, output: int):
        self.id = id
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.replica = -1
        self.kv_len = 0
        self.prefill_target = prompt
        self.final_kv = prompt + output - 1  # KV tokens held when the last token is produced
        self.blocks = 0
        self.in_flight = False
        self.first_scheduled = INF
        self.first_token = INF
        self.last_token = INF
        self.completion = INF
        self.preemptions = 0
        self.recomputed = 0
        self.group_base = None  # set while the replica's DecodeGroup tracks it lazily
        self.group_join = 0
        self.group_tight = 0
        self.content = None  # (prompt leaf node, output node, table row, session) with a content workload
        self.kvc = None  # prefix-cache state while admitted (vidur.scheduler.prefix_cache)
        self.ckeys = None  # prefix cache: (unit, content keys of its leading units), computed once
        self.cached = 0  # prompt tokens found in the prefix cache at first admission

    @property
    def generated(self) -> int:
        """Output tokens produced so far."""
        if self.kv_len >= self.prefill_target:
            return self.kv_len - self.prompt + 1
        return self.prefill_target - self.prompt

    @property
    def prefill_remaining(self) -> int:
        return self.prefill_target - self.kv_len

    @property
    def decode_remaining(self) -> int:
        """Output tokens still to produce."""
        return self.output - self.generated

    @property
    def finished(self) -> bool:
        return self.kv_len >= self.final_kv and self.kv_len >= self.prefill_target

    def __repr__(self) -> str:
        return (
            f"Request(id={self.id}, prompt={self.prompt}, output={self.output}, "
            f"kv={self.kv_len}, generated={self.generated})"
        )
