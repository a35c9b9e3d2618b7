"""A memory planner may give more capacity than the memory arithmetic (only
physics binds) and name reservations that the replica policy reads."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.errors import PluginError, VidurError
from vidur.hardware.catalog import get_device
from vidur.memory.base import MemoryPlan, MemoryPlanner, physical_shortfall
from vidur.memory.paged import PagedConfig, PagedMemoryPlanner
from vidur.model.catalog import load_model


@attrs.frozen
class _Cfg:
    extra: int = 0
    blocks: int | None = None
    reserve: int = 3


class Generous(MemoryPlanner):
    """The paged plan with ``extra`` more blocks (or exactly ``blocks``) and ``reserve`` named blocks."""

    name = "generous"
    Config = _Cfg

    def plan(self, model, device, tp, pp):
        base = PagedMemoryPlanner(PagedConfig()).plan(model, device, tp, pp)
        n = self.config.blocks if self.config.blocks is not None else base.num_blocks + self.config.extra
        return attrs.evolve(base, num_blocks=n, reservations={"adapters": self.config.reserve})


class Seen(SarathiScheduler):
    """Records what it sees of the plan."""

    name = "seen"
    seen: list = []

    def schedule(self):
        type(self).seen.append((dict(self.reservations), self.kv.num_blocks))
        return super().schedule()


def test_a_planner_gives_more_blocks_and_the_policy_reads_its_reservations(vidur_register, tiny_cluster):
    vidur_register(Generous)
    vidur_register(Seen)
    Seen.seen = []
    base = PagedMemoryPlanner(PagedConfig()).plan(load_model("vidur/tiny-llama"), get_device("h100"), 1, 1)
    tiny_cluster("seen", settings={"memory_planner": {"name": "generous", "extra": 1000, "reserve": 7}})
    assert Seen.seen and all(s == ({"adapters": 7}, base.num_blocks + 1000) for s in Seen.seen)


def test_reservations_are_read_only():
    from vidur.scheduler.kv import KVBlockManager

    s = SarathiScheduler(SarathiScheduler.Config(), KVBlockManager(8, 4), reservations={"a": 2})
    assert s.reservations == {"a": 2}
    with pytest.raises(TypeError):
        s.reservations["a"] = 3
    with pytest.raises(AttributeError):
        s.reservations = {}
    assert SarathiScheduler(SarathiScheduler.Config(), KVBlockManager(8, 4)).reservations == {}


def test_an_impossible_plan_stops_the_run_naming_the_planner(vidur_register, tiny_cluster):
    vidur_register(Generous)
    with pytest.raises(PluginError) as exc:
        tiny_cluster(settings={"memory_planner": {"name": "generous", "blocks": 10**9}})
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("memory planner 'generous' from plugin 'test:generous'"), msg
    assert "GB of KV cache" in msg and "h100" in msg.lower()


@pytest.mark.parametrize("bad", [{"blocks": 0}, {"reserve": -1}])
def test_a_malformed_plan_is_one_line(vidur_register, tiny_cluster, bad):
    vidur_register(Generous)
    with pytest.raises(PluginError) as exc:
        tiny_cluster(settings={"memory_planner": {"name": "generous", **bad}})
    assert "\n" not in str(exc.value) and "memory planner 'generous'" in str(exc.value)


def test_paged_override_above_the_arithmetic_is_allowed_and_impossible_is_one_line():
    model, dev = load_model("vidur/tiny-llama"), get_device("h100")
    base = PagedMemoryPlanner(PagedConfig()).plan(model, dev, 1, 1)
    more = PagedMemoryPlanner(PagedConfig(num_gpu_blocks_override=base.num_blocks + 10)).plan(model, dev, 1, 1)
    assert more.num_blocks == base.num_blocks + 10
    with pytest.raises(VidurError, match=r"num_gpu_blocks_override .* is impossible .*GB of KV cache"):
        PagedMemoryPlanner(PagedConfig(num_gpu_blocks_override=base.num_blocks * 100)).plan(model, dev, 1, 1)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10**8), st.integers(0, 10**6), st.sampled_from([1, 16, 32]), st.integers(1, 10**6))
def test_physical_shortfall_iff_kv_and_weights_exceed_memory(blocks, reserved, bs, per_token):
    dev = get_device("h100")
    plan = MemoryPlan(blocks, bs, per_token, 10**9, 0, 0, 0, reservations={"r": reserved})
    need = (blocks + reserved) * bs * per_token + 10**9
    assert (physical_shortfall(plan, dev) is None) == (need <= dev.memory_bytes)
