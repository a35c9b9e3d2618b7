"""What requests say, without token ids: a prefix tree of content segments.

Prefix caching needs to know which requests share a prefix, not what the
tokens are. A :class:`PrefixTree` holds *segments* of content as nodes: a
node starts at a fixed token position (``start``) right after its
``parent``'s part of the path, and its tokens are the same wherever the
node is used. A request's prompt is the path from a root to its ``leaf``
(the leaf used for ``prompt - start[leaf]`` tokens, the other nodes up to
where their child starts); its output tokens are node ``out`` (starting at
``prompt``), or a node of its own when ``out`` is -1.

Two prefixes are identical exactly when they end in the same node at the
same offset, so the content key of the first ``e`` tokens of a request is
the pair (node holding token ``e - 1``, ``e - start[node]``): the same
identity as vLLM's hash chain over full blocks (a block's hash covers its
parent block's hash and its own tokens), at the cost of two integers per
segment instead of one id per token. Memory per request: two int64s (its
leaf and output node) plus the nodes its workload adds (a multi-turn
session adds two per turn: the new user message and the answer).

Workloads build trees with :class:`TreeBuilder`; :class:`Content` is what a
:class:`~vidur.workload.workload.RequestTable` carries. Closed-loop
sessions add ``after`` (the row whose completion releases this one, or -1)
and ``think`` (seconds between that completion and this arrival).
"""

from __future__ import annotations

import attrs
import numpy as np

from vidur.errors import VidurError

#: content keys pack (node, offset) into one int: node * KEY_SPAN + offset
KEY_SPAN = 1 << 32


class TreeBuilder:
    """Grows a prefix tree node by node (ids 0, 1, ...); :meth:`build` freezes it."""

    __slots__ = ("parent", "start", "interned")

    def __init__(self):
        self.parent: list[int] = []
        self.start: list[int] = []
        self.interned: dict[tuple[int, int], int] = {}

    def node(self, parent: int, start: int) -> int:
        """A new segment starting at token ``start`` after ``parent`` (-1: a root, start 0)."""
        if parent < 0 and start != 0:
            raise VidurError(f"a root segment starts at token 0, got {start}")
        self.parent.append(parent)
        self.start.append(start)
        return len(self.parent) - 1

    def intern(self, parent: int, label: int, start: int) -> int:
        """The node labelled ``label`` under ``parent``, created on first use (trace
        block hashes: equal labels under equal parents are the same content)."""
        key = (parent, label)
        n = self.interned.get(key)
        if n is None:
            n = self.interned[key] = self.node(parent, start)
        return n

    def __len__(self) -> int:
        return len(self.parent)

    def build(self) -> "PrefixTree":
        return PrefixTree(np.asarray(self.parent, dtype=np.int64), np.asarray(self.start, dtype=np.int64))


@attrs.frozen(eq=False)
class PrefixTree:
    """Content segments: ``parent`` (-1 for a root) and ``start`` token of each node."""

    parent: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return len(self.parent)


@attrs.frozen(eq=False)
class Content:
    """Per-request content of a request table (rows in table order).

    ``leaf``: the node that ends the prompt; ``out``: the output's node or -1
    (output content unique to the request); ``session``: the session a row
    belongs to or -1; ``after``: the row whose completion releases this one
    (closed loop) or -1 (arrives at its ``arrival`` time); ``think``: seconds
    from that completion to this arrival.
    """

    tree: PrefixTree
    leaf: np.ndarray
    out: np.ndarray
    session: np.ndarray | None = None
    after: np.ndarray | None = None
    think: np.ndarray | None = None

    @property
    def closed_loop(self) -> bool:
        return self.after is not None and bool((self.after >= 0).any())

    def check(self, prompt: np.ndarray) -> None:
        """One-line VidurError if the content does not describe these prompts."""
        n = len(prompt)
        for name in ("leaf", "out", "session", "after", "think"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise VidurError(f"request content column {name} has {len(col)} rows for {n} requests")
        nodes = len(self.tree)
        if n and ((self.leaf < 0) | (self.leaf >= nodes)).any():
            raise VidurError("every request needs a prompt node of the prefix tree")
        start = self.tree.start
        if n and (start[self.leaf] >= prompt).any():
            i = int(np.argmax(start[self.leaf] >= prompt))
            raise VidurError(f"request {i}: its prompt ({prompt[i]} tokens) ends before its last segment starts")
        has_out = self.out >= 0
        if has_out.any() and (start[self.out[has_out]] != prompt[has_out]).any():
            raise VidurError("a request's output segment must start where its prompt ends")
        if self.after is not None:
            rows = np.arange(n)
            bad = (self.after >= rows) & (self.after >= 0)
            if bad.any():
                raise VidurError(f"request {int(np.argmax(bad))} waits for a later request; order rows by session turn")


def request_path(tree_parent: list[int], tree_start: list[int], leaf: int, out: int, prompt: int,
                 own: int) -> tuple[list[int], list[int]]:
    """(starts, nodes) of one request's token sequence, in token order: the
    prompt's nodes root to leaf, then its output node (``own`` if ``out`` is -1)."""
    nodes = []
    n = leaf
    while n >= 0:
        nodes.append(n)
        n = tree_parent[n]
    nodes.reverse()
    starts = [tree_start[n] for n in nodes]
    nodes.append(out if out >= 0 else own)
    starts.append(prompt)
    return starts, nodes
