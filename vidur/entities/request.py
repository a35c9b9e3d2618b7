"""The simulated request: lengths, progress and timestamps."""

from __future__ import annotations

import math

INF = math.inf


class Request:
    """One inference request as it moves through a replica.

    Progress is tracked with three counters: ``kv_len`` (tokens whose KV is
    cached), ``prefill_target`` (tokens the current prefill must process:
    the prompt, or prompt + generated tokens after a preemption) and
    ``generated`` (output tokens produced). Finishing a prefill produces one
    output token; each decode step produces one more. While decoding,
    ``kv_len == prompt + generated - 1``.
    """

    __slots__ = (
        "id",
        "arrival",
        "prompt",
        "output",
        "replica",
        "kv_len",
        "prefill_target",
        "generated",
        "blocks",
        "in_flight",
        "first_scheduled",
        "first_token",
        "last_token",
        "completion",
        "preemptions",
        "recomputed",
    )

    def __init__(self, id: int, arrival: float, prompt: int, output: int):
        self.id = id
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.replica = -1
        self.kv_len = 0
        self.prefill_target = prompt
        self.generated = 0
        self.blocks = 0
        self.in_flight = False
        self.first_scheduled = INF
        self.first_token = INF
        self.last_token = INF
        self.completion = INF
        self.preemptions = 0
        self.recomputed = 0

    @property
    def in_prefill(self) -> bool:
        """True until the current prefill has processed all its tokens."""
        return self.kv_len < self.prefill_target

    @property
    def prefill_remaining(self) -> int:
        return self.prefill_target - self.kv_len

    @property
    def decode_remaining(self) -> int:
        """Output tokens still to produce."""
        return self.output - self.generated

    @property
    def max_tokens(self) -> int:
        """KV tokens this request holds when it finishes (prompt + output - 1)."""
        return self.prompt + self.output - 1

    @property
    def finished(self) -> bool:
        return self.generated >= self.output

    def __repr__(self) -> str:
        return (
            f"Request(id={self.id}, prompt={self.prompt}, output={self.output}, "
            f"kv={self.kv_len}, generated={self.generated})"
        )
