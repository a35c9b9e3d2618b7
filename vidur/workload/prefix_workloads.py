"""Workloads whose requests share prefixes: shared system prompts, multi-turn
conversations and agentic sessions.

They are length generators (``workload.lengths``) that also build the
requests' content (:mod:`vidur.workload.content`), so prefix caching can
find what requests share; the arrival process gives the request (or, for
sessions, the session-start) times.

- ``shared_prefix``: the shape of kubernetes-sigs/inference-perf's
  ``shared_prefix`` data: ``num_groups`` system prompts of
  ``system_prompt_len`` tokens, ``prompts_per_group`` questions of
  ``question_len`` tokens under each; the G x P prompts are shuffled once
  (seeded) and request i sends prompt i mod G x P, with ``output_len``
  output tokens.
- ``multi_turn``: closed-loop conversations. Turn k's prompt is the whole
  history (system prompt, every earlier user message and answer) plus a new
  user message; turn k+1 arrives when turn k's answer has completed plus a
  think time (exponential with mean ``think_time_s``; 0: at once).
- ``agentic``: the same closed loop with agent-shaped defaults: many steps,
  each resending the growing context plus a tool output, short answers
  (tool calls) and a short tool latency between steps.

A session ends after its drawn number of turns or when the next turn
would exceed ``max_tokens``. With ``workload.num_requests`` the table holds
that many requests (turns), sessions in order of their start; with
``workload.duration``, every turn of every session that starts in it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.workload import _checks as ck
from vidur.workload.base import ContentGenerator
from vidur.workload.content import Content, TreeBuilder

L = ck.LENGTHS


def _lognormal_ints(rng: np.random.Generator, median: float, sigma: float, size: int) -> np.ndarray:
    if sigma == 0:
        return np.full(size, max(1, round(median)), dtype=np.int64)
    x = rng.lognormal(math.log(median), sigma, size=size)
    return np.maximum(np.rint(np.minimum(x, 1 << 40)), 1).astype(np.int64)


class SharedPrefixLengths(ContentGenerator):
    """G groups x P prompts: a system prompt per group, then a question (inference-perf ``shared_prefix``)."""

    name: ClassVar[str] = "shared_prefix"

    @attrs.frozen(kw_only=True)
    class Config:
        num_groups: int = attrs.field(default=10, validator=ck.int_at_least(L, 1))
        prompts_per_group: int = attrs.field(default=10, validator=ck.int_at_least(L, 1))
        system_prompt_len: int = attrs.field(default=2048, validator=ck.int_at_least(L, 0))
        question_len: int = attrs.field(default=256, validator=ck.int_at_least(L, 1))
        output_len: int = attrs.field(default=256, validator=ck.int_at_least(L, 1))

    def __init__(self, config=None):
        super().__init__(config if config is not None else self.Config())

    def build(self, rng, arrivals, num_requests):
        from vidur.workload.workload import RequestTable

        c = self.config
        n = len(arrivals)
        g, p, s = int(c.num_groups), int(c.prompts_per_group), int(c.system_prompt_len)
        tree = TreeBuilder()
        questions = np.empty(g * p, dtype=np.int64)
        for gi in range(g):
            sys_node = tree.node(-1, 0) if s else -1
            for pi in range(p):
                questions[gi * p + pi] = tree.node(sys_node, s) if s else tree.node(-1, 0)
        order = rng.permutation(g * p)
        leaf = questions[order[np.arange(n) % (g * p)]]
        prompt = np.full(n, s + int(c.question_len), dtype=np.int64)
        output = np.full(n, int(c.output_len), dtype=np.int64)
        content = Content(tree.build(), leaf, np.full(n, -1, dtype=np.int64))
        return RequestTable(np.asarray(arrivals, dtype=np.float64), prompt, output, content)


@attrs.frozen(kw_only=True)
class _SessionConfig:
    num_system_prompts: int = attrs.field(default=1, validator=ck.int_at_least(L, 1))
    system_prompt_len: int = attrs.field(default=1024, validator=ck.int_at_least(L, 0))
    min_turns: int = attrs.field(default=2, validator=ck.int_at_least(L, 1))
    max_turns: int = attrs.field(default=8, validator=ck.int_at_least(L, 1))
    input_median: float = attrs.field(default=128.0, validator=ck.positive(L))
    input_sigma: float = attrs.field(default=0.8, validator=ck.non_negative(L))
    output_median: float = attrs.field(default=256.0, validator=ck.positive(L))
    output_sigma: float = attrs.field(default=0.8, validator=ck.non_negative(L))
    think_time_s: float = attrs.field(default=10.0, validator=ck.non_negative(L))
    max_tokens: int = attrs.field(default=8192, validator=ck.int_at_least(L, 2))

    def __attrs_post_init__(self) -> None:
        if self.min_turns > self.max_turns:
            raise VidurError(f"{L}.min_turns ({self.min_turns}) must be <= {L}.max_turns ({self.max_turns})")
        if self.system_prompt_len + 2 > self.max_tokens:
            raise VidurError(f"{L}.max_tokens ({self.max_tokens}) must exceed {L}.system_prompt_len + 1")


class MultiTurnLengths(ContentGenerator):
    """Closed-loop conversations: each turn resends the history plus a new user message.

    Per turn: a user message of lognormal length (``input_median``,
    ``input_sigma``) and an answer of lognormal length (``output_median``,
    ``output_sigma``); turns per session uniform in [``min_turns``,
    ``max_turns``]; session s uses system prompt s mod ``num_system_prompts``.
    """

    name: ClassVar[str] = "multi_turn"
    Config = _SessionConfig

    def __init__(self, config=None):
        super().__init__(config if config is not None else self.Config())

    def build(self, rng, arrivals, num_requests):
        from vidur.workload.workload import RequestTable

        c = self.config
        limit = num_requests if num_requests is not None else math.inf
        tree = TreeBuilder()
        s_len = int(c.system_prompt_len)
        systems = [tree.node(-1, 0) if s_len else -1 for _ in range(int(c.num_system_prompts))]
        cols: dict[str, list] = {k: [] for k in ("arrival", "prompt", "output", "leaf", "out", "session", "after", "think")}
        cap = int(c.max_tokens)
        for si, start in enumerate(np.asarray(arrivals, dtype=np.float64).tolist()):
            if len(cols["prompt"]) >= limit:
                break
            turns = int(rng.integers(int(c.min_turns), int(c.max_turns), endpoint=True))
            ins = _lognormal_ints(rng, c.input_median, c.input_sigma, turns)
            outs = _lognormal_ints(rng, c.output_median, c.output_sigma, turns)
            thinks = rng.exponential(c.think_time_s, turns) if c.think_time_s > 0 else np.zeros(turns)
            parent = systems[si % len(systems)]
            pos = s_len
            prev = -1
            for k in range(turns):
                if len(cols["prompt"]) >= limit:
                    break
                q, o = int(ins[k]), int(outs[k])
                if pos + q + 1 > cap:
                    break
                o = min(o, cap - pos - q)
                leaf = tree.node(parent, pos) if parent >= 0 or pos == 0 else tree.node(-1, 0)
                pos += q
                out = tree.node(leaf, pos)
                row = len(cols["prompt"])
                for key, v in (("arrival", start), ("prompt", pos), ("output", o), ("leaf", leaf), ("out", out),
                               ("session", si), ("after", prev), ("think", float(thinks[k]) if k else 0.0)):
                    cols[key].append(v)
                prev = row
                parent = out
                pos += o
        content = Content(
            tree.build(),
            np.asarray(cols["leaf"], dtype=np.int64),
            np.asarray(cols["out"], dtype=np.int64),
            session=np.asarray(cols["session"], dtype=np.int64),
            after=np.asarray(cols["after"], dtype=np.int64),
            think=np.asarray(cols["think"], dtype=np.float64),
        )
        return RequestTable(
            np.asarray(cols["arrival"], dtype=np.float64),
            np.asarray(cols["prompt"], dtype=np.int64),
            np.asarray(cols["output"], dtype=np.int64),
            content,
        )


@attrs.frozen(kw_only=True)
class _AgenticConfig(_SessionConfig):
    """Agent defaults: a long system prompt with tool definitions, many short steps."""

    system_prompt_len: int = attrs.field(default=4096, validator=ck.int_at_least(L, 0))
    min_turns: int = attrs.field(default=5, validator=ck.int_at_least(L, 1))
    max_turns: int = attrs.field(default=30, validator=ck.int_at_least(L, 1))
    input_median: float = attrs.field(default=400.0, validator=ck.positive(L))  # tool output per step
    input_sigma: float = attrs.field(default=1.0, validator=ck.non_negative(L))
    output_median: float = attrs.field(default=80.0, validator=ck.positive(L))  # a tool call
    output_sigma: float = attrs.field(default=0.6, validator=ck.non_negative(L))
    think_time_s: float = attrs.field(default=1.0, validator=ck.non_negative(L))  # tool latency
    max_tokens: int = attrs.field(default=32768, validator=ck.int_at_least(L, 2))


class AgenticLengths(MultiTurnLengths):
    """Agentic sessions: each step resends the growing context plus a tool output;
    answers are short tool calls; the next step follows after the tool's latency."""

    name: ClassVar[str] = "agentic"
    Config = _AgenticConfig
