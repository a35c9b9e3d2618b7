"""A batch: which requests run in one iteration, and how many tokens each."""

from __future__ import annotations

from vidur.entities.request import Request
from vidur.estimate.base import BatchShape


class Batch:
    """Requests and their query-token counts for one iteration.

    ``add`` keeps the aggregate :class:`BatchShape` up to date, so pricing a
    batch never walks its requests again.
    """

    __slots__ = ("requests", "tokens", "shape", "start", "end")

    def __init__(self):
        self.requests: list[Request] = []
        self.tokens: list[int] = []
        self.shape = BatchShape()
        self.start = 0.0
        self.end = 0.0

    def add(self, req: Request, num_tokens: int) -> None:
        """Schedule ``num_tokens`` of ``req`` (its prefill chunk, or 1 decode token)."""
        self.requests.append(req)
        self.tokens.append(num_tokens)
        if req.kv_len < req.prefill_target:
            self.shape.add_prefill(num_tokens, req.kv_len)
        else:
            self.shape.add_decode(req.kv_len)

    def __len__(self) -> int:
        return len(self.requests)

    def __bool__(self) -> bool:
        return bool(self.requests)

    @property
    def num_tokens(self) -> int:
        return self.shape.num_tokens

    @property
    def is_decode_only(self) -> bool:
        return self.shape.num_prefill == 0

    def __repr__(self) -> str:
        items = ", ".join(f"{r.id}:{n}" for r, n in zip(self.requests, self.tokens))
        return f"Batch([{items}])"
