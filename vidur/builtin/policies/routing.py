"""Built-in global schedulers: round robin, random, least outstanding requests,
prefix-cache aware and session affinity."""

from __future__ import annotations

import math

import attrs

from vidur.entities.request import Request
from vidur.errors import VidurError
from vidur.scheduler.global_base import GlobalScheduler


def _non_negative(name: str):
    def check(inst, attribute, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise VidurError(f"global_scheduler.{name} must be a number >= 0, got {value!r}")

    return check


class RoundRobin(GlobalScheduler):
    """Replica i, i+1, ... in turn."""

    name = "round_robin"
    decides_upfront = True  # a counter: no replica state

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next = 0

    def route(self, req: Request) -> int:
        i = self.next
        self.next = (i + 1) % len(self.replicas)
        return i


class RandomRouting(GlobalScheduler):
    """A uniformly random replica (from the run's seeded generator)."""

    name = "random"
    decides_upfront = True  # the run's generator only: no replica state

    def route(self, req: Request) -> int:
        return int(self.rng.integers(len(self.replicas)))


class LeastOutstanding(GlobalScheduler):
    """The replica with the fewest outstanding requests, queued and running
    counted (ties: lowest index)."""

    name = "lor"

    def route(self, req: Request) -> int:
        best, best_load = 0, None
        for i, rep in enumerate(self.replicas):
            load = rep.num_outstanding
            if best_load is None or load < best_load:
                best, best_load = i, load
        return best


@attrs.frozen(kw_only=True)
class PrefixAwareConfig:
    """Weights of the two scores: the share of the prompt the replica has
    cached, and how lightly loaded it is. Defaults as in llm-d's sample
    EndpointPickerConfig (prefix-cache-scorer weight 3, queue-scorer weight 1)."""

    prefix_weight: float = attrs.field(default=3.0, validator=_non_negative("prefix_weight"))
    load_weight: float = attrs.field(default=1.0, validator=_non_negative("load_weight"))


class PrefixAware(GlobalScheduler):
    """Scores each replica by its cached prefix of the request against its
    load and takes the best (ties: fewest outstanding, then lowest index).

    The idea of llm-d's precise prefix-cache scorer combined with its queue
    scorer: prefix score = prompt tokens the replica's prefix cache holds now
    / prompt tokens; load score = 1 - (outstanding - min) / (max - min) over
    the replicas (1 when all are equal); score = ``prefix_weight`` x prefix
    + ``load_weight`` x load. Replicas without prefix caching score 0 on
    the prefix, so the router then balances load like ``lor``.
    """

    name = "prefix_aware"
    Config = PrefixAwareConfig

    def route(self, req: Request) -> int:
        reps = self.replicas
        loads = [rep.num_outstanding for rep in reps]
        lo, hi = min(loads), max(loads)
        span = hi - lo
        cfg = self.config
        best, best_key = 0, None
        for i, rep in enumerate(reps):
            kv = rep.kv
            prefix = kv.cached_prefix(req) / req.prompt if kv.prefix_caching else 0.0
            load = 1.0 - (loads[i] - lo) / span if span else 1.0
            key = (cfg.prefix_weight * prefix + cfg.load_weight * load, -loads[i], -i)
            if best_key is None or key > best_key:
                best, best_key = i, key
        return best


class SessionAffinity(GlobalScheduler):
    """Every turn of a session goes where its first turn went (so its history
    is in that replica's prefix cache); first turns and requests without a
    session go to the replica with the fewest outstanding requests."""

    name = "session_affinity"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.home: dict[int, int] = {}

    def route(self, req: Request) -> int:
        c = req.content
        session = c[3] if c is not None else -1
        if session >= 0:
            i = self.home.get(session)
            if i is not None:
                return i
        loads = [rep.num_outstanding for rep in self.replicas]
        i = loads.index(min(loads))
        if session >= 0:
            self.home[session] = i
        return i
