"""Built-in global schedulers: round robin, random, least outstanding requests."""

from __future__ import annotations

from vidur.entities.request import Request
from vidur.scheduler.global_base import GlobalScheduler


class RoundRobin(GlobalScheduler):
    """Replica i, i+1, ... in turn."""

    name = "round_robin"

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
