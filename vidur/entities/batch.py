"""A batch: which requests run in one iteration, and how many tokens each."""

from __future__ import annotations

from vidur.entities.request import Request
from vidur.errors import PolicyOutputError
from vidur.estimate.base import BatchShape


def _bad_tokens(req, num_tokens) -> PolicyOutputError:
    """``batch.add(req, num_tokens)`` asked for more (or fewer) tokens than ``req`` has left."""
    if req.kv_len < req.prefill_target:
        left = req.prefill_target - req.kv_len
        return PolicyOutputError(
            "replica_scheduler", f"batch.add() scheduled {num_tokens!r} prefill tokens of request {req.id}, "
            f"which has {left} left (1..{left} allowed)"
        )
    return PolicyOutputError(
        "replica_scheduler", f"batch.add() scheduled {num_tokens!r} tokens of request {req.id}, which is decoding "
        "(one token per batch)"
    )


class Batch:
    """Requests and their query-token counts for one iteration.

    Decodes (one token each) and prefill chunks are kept apart so the engine
    can apply them in tight loops; ``add`` keeps the aggregate
    :class:`BatchShape` up to date, so pricing a batch never walks it again.
    """

    __slots__ = ("decodes", "prefills", "chunks", "shape", "start", "end", "group")

    def __init__(self):
        self.decodes: list[Request] = []
        self.prefills: list[Request] = []
        self.chunks: list[int] = []
        self.shape = BatchShape()
        self.start = 0.0
        self.end = 0.0
        self.group = None  # a DecodeGroup when every decode is one lazy group step

    def add(self, req: Request, num_tokens: int) -> None:
        """Schedule ``num_tokens`` of ``req``: its next prefill chunk, or 1 decode token."""
        if req.kv_len < req.prefill_target:
            if not 0 < num_tokens <= req.prefill_target - req.kv_len:
                raise _bad_tokens(req, num_tokens)
            self.prefills.append(req)
            self.chunks.append(num_tokens)
            self.shape.add_prefill(num_tokens, req.kv_len)
        else:
            if num_tokens != 1:
                raise _bad_tokens(req, num_tokens)
            self.decodes.append(req)
            self.shape.add_decode(req.kv_len)

    def add_decodes(self, reqs: list[Request]) -> None:
        """Schedule one decode token for each of ``reqs`` (all past their prefill)."""
        n = len(reqs)
        self.decodes.extend(reqs)
        s = self.shape
        s.num_decode += n
        s.num_tokens += n
        s.decode_kv += sum([r.kv_len for r in reqs]) + n

    def add_group_step(self, reqs: list[Request], group) -> None:
        """Schedule one decode token for every member of ``group`` (``reqs``)."""
        n = len(reqs)
        self.decodes.extend(reqs)
        self.group = group
        s = self.shape
        s.num_decode += n
        s.num_tokens += n
        s.decode_kv += group.decode_kv

    @property
    def requests(self) -> list[Request]:
        """Decoding requests, then requests with a prefill chunk."""
        return self.decodes + self.prefills

    @property
    def tokens(self) -> list[int]:
        """Query tokens per request, in the order of :attr:`requests`."""
        return [1] * len(self.decodes) + self.chunks

    def __len__(self) -> int:
        return len(self.decodes) + len(self.prefills)

    def __bool__(self) -> bool:
        return bool(self.decodes) or bool(self.prefills)

    @property
    def num_tokens(self) -> int:
        return self.shape.num_tokens

    def __repr__(self) -> str:
        items = ", ".join(f"{r.id}:{n}" for r, n in zip(self.requests, self.tokens))
        return f"Batch([{items}])"
