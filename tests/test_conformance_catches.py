"""The conformance suite catches planted bad plugins (not only passes good ones)."""

from __future__ import annotations

import pytest

from vidur.scheduler.global_base import GlobalScheduler
from vidur.testing.conformance import GlobalSchedulerConformance


class _KVLoadRouter(GlobalScheduler):
    """Least KV tokens held by running requests; ``sync`` decides whether it
    brings the lazy decode group up to date first."""

    name = "kv_load"
    needs_live_state = True  # reads per-request progress: the engine steps
    sync = True

    def route(self, req):
        best, best_load = 0, None
        for i, rep in enumerate(self.replicas):
            if self.sync:
                rep.sync_decoding()
            load = sum(r.kv_len for r in rep.running) + len(rep.waiting)
            if best_load is None or load < best_load:
                best, best_load = i, load
        return best


class _StaleKVLoadRouter(_KVLoadRouter):
    """Reads ``kv_len`` of decoding requests without ``sync_decoding()``."""

    name = "stale_kv_load"
    sync = False


class _Suite(GlobalSchedulerConformance):
    max_examples = 40
    derandomize = True


def test_a_router_that_never_syncs_decoding_fails_the_check():
    suite = type("S", (_Suite,), {"scheduler": _StaleKVLoadRouter})()
    with pytest.raises(AssertionError, match="sync_decoding"):
        suite.test_routes_read_synced_state()


def test_the_same_router_with_sync_decoding_passes():
    suite = type("S", (_Suite,), {"scheduler": _KVLoadRouter})()
    suite.test_routes_read_synced_state()
    suite.test_fast_forward_equals_stepping()


class _ClaimsUpfront(GlobalScheduler):
    """Least outstanding requests, but claims to decide without replica state."""

    name = "claims_upfront"
    decides_upfront = True

    def route(self, req):
        loads = [rep.num_outstanding for rep in self.replicas]
        return loads.index(min(loads))


def test_a_router_that_wrongly_decides_upfront_fails_the_check():
    suite = type("S", (_Suite,), {"scheduler": _ClaimsUpfront})()
    with pytest.raises(AssertionError, match="decides_upfront"):
        suite.test_upfront_routes_ignore_replica_state()
