"""Run-time checks of plugin output: each bad output stops the run with one
line naming the plugin and its distribution."""

from __future__ import annotations

import numpy as np
import pytest

from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.entities.batch import Batch
from vidur.errors import PluginError
from vidur.scheduler.global_base import GlobalScheduler


def _fails(vidur_register, tiny_cluster, cls, pattern, **kw):
    vidur_register(cls)
    kind = "global scheduler" if issubclass(cls, GlobalScheduler) else "replica scheduler"
    with pytest.raises(PluginError) as exc:
        if kind == "global scheduler":
            tiny_cluster(global_scheduler=cls.name, **kw)
        else:
            tiny_cluster(cls.name, **kw)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{kind} {cls.name!r} from plugin 'test:{cls.name}' (registered in-process)"), msg
    import re

    assert re.search(pattern, msg), msg


class Overfill(SarathiScheduler):
    name = "overfill"

    def schedule(self):
        batch = Batch()
        kv, waiting = self.kv, self.waiting
        if waiting and not self.running:
            req = waiting[0]
            self.admit(req, kv.blocks_for(req.prefill_target))
            batch.add(req, req.prefill_target + 3000)  # 3,000 tokens more than it has
            return batch
        return super().schedule()


def test_more_tokens_than_a_request_has_left(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, Overfill, r"batch.add\(\) scheduled 3064 prefill tokens of request 0, "
           r"which has 64 left .* in schedule\(\) at test_plugin_checks.py:\d+")


class TwoTokenDecode(SarathiScheduler):
    name = "two_token_decode"
    lazy_decode = False

    def schedule(self):
        if self.decoding:
            batch = Batch()
            batch.add(self.decoding[0], 2)
            return batch
        return super().schedule()


def test_a_decode_of_more_than_one_token(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, TwoTokenDecode, r"scheduled 2 tokens of request \d+, which is decoding")


class NoCap(SarathiScheduler):
    name = "no_cap"

    def schedule(self):
        batch = Batch()
        kv, waiting = self.kv, self.waiting
        self.decode_all(batch, self.ready_decoding())
        while waiting:  # ignores max_batch_size
            req = waiting[0]
            self.admit(req, kv.blocks_for(req.prefill_target))
            batch.add(req, req.prefill_target)
        return batch or None


def test_ignoring_max_batch_size(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, NoCap, r"batch of \d+ requests at t=.* over max_batch_size 2",
           num_replicas=1, qps=1e6, settings={"replica_scheduler.max_batch_size": 2})


class Twice(SarathiScheduler):
    name = "twice"

    def schedule(self):
        batch = super().schedule()
        if batch is not None and batch.prefills:
            req, q = batch.prefills[0], batch.chunks[0]
            batch.prefills.append(req)
            batch.chunks.append(q)
            batch.shape.add_prefill(q, req.kv_len)
        return batch


def test_the_same_request_twice_in_a_batch(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, Twice, r"put request 0 into one batch twice")


class TwiceDecode(SarathiScheduler):
    name = "twice_decode"
    lazy_decode = False

    def schedule(self):
        batch = super().schedule()
        if batch is not None and batch.decodes and not batch.prefills:
            batch.add_decodes(batch.decodes[:1])
        return batch


def test_the_same_request_decoded_twice_in_a_batch(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, TwiceDecode, r"put request \d+ into one batch twice \(two decode tokens\)",
           num_replicas=1)


class Empty(SarathiScheduler):
    name = "empty"

    def schedule(self):
        return super().schedule() or Batch()


def test_an_empty_batch(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, Empty, r"returned an empty Batch at t=.*; return None when there is nothing")


class NotABatch(SarathiScheduler):
    name = "not_a_batch"

    def schedule(self):
        batch = super().schedule()
        return None if batch is None else batch.requests


def test_something_else_than_a_batch(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, NotABatch, r"schedule\(\) returned list .*; return a Batch or None")


class Staller(VLLMScheduler):
    name = "staller"

    def schedule(self):
        if self.now > 0.0:
            return None  # forgets the queue after the first batch
        return super().schedule()


def test_a_policy_that_stalls(vidur_register, tiny_cluster):
    _fails(vidur_register, tiny_cluster, Staller, r"stalled: replica \d holds \d+ waiting and \d+ running requests")


@pytest.mark.parametrize("bad", [-1, 2, True, 1.0, None, "0"])
def test_a_router_returning_a_bad_index(vidur_register, tiny_cluster, bad):
    class BadRoute(GlobalScheduler):
        name = "bad_route"

        def route(self, req):
            return 0 if req.id < 3 else bad

    _fails(vidur_register, tiny_cluster, BadRoute, r"route\(\) returned .* for request 3; return a replica index, "
           r"an int in range\(2\)")


def test_a_numpy_integer_route_is_accepted(vidur_register, tiny_cluster):
    class NumpyRoute(GlobalScheduler):
        name = "numpy_route"

        def route(self, req):
            return np.int64(req.id % 2)

    vidur_register(NumpyRoute)
    result = tiny_cluster(global_scheduler="numpy_route")
    assert sorted(set(r.replica for r in result.requests)) == [0, 1]


BAD_PLUGIN = '''
from vidur.hookspecs import hookimpl
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.entities.batch import Batch


class Empty(SarathiScheduler):
    name = "empty_dist"

    def schedule(self):
        return super().schedule() or Batch()


@hookimpl
def vidur_register_replica_schedulers(register):
    register(Empty)
'''


def test_the_command_line_names_the_distribution_in_one_line(vidur_distribution, monkeypatch, tmp_path, capsys):
    from vidur import plugins
    from vidur.cli import main

    vidur_distribution(BAD_PLUGIN, name="vidur-plugin-empty", version="0.2", entry_point="empty")
    monkeypatch.setattr(plugins, "_DEFAULT", None)
    scenario = tmp_path / "s.yaml"
    scenario.write_text("model: vidur/tiny-llama\nruntime_estimator: roofline\n"
                        "workload: {num_requests: 4, lengths: {name: fixed, prompt_tokens: 8, output_tokens: 4}}\n")
    assert main(["run", str(scenario), "--scheduler", "empty_dist", "--no-output", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("vidur: error: replica scheduler 'empty_dist' from plugin 'empty' (vidur-plugin-empty 0.2): "
                          "schedule() returned an empty Batch")
    monkeypatch.setattr(plugins, "_DEFAULT", None)
