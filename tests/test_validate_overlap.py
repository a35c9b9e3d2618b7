"""vidur validate prices what its executor does: host overlap only where the executor overlaps
(``Simulation(serial_host=True)``, the report's note, ``run.host_overlap``) and CUDA-graph padding at
the executor's captured sizes (``Simulation(cuda_graph_sizes=...)``, ``run.cuda_graph_sizes``)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from vidur.engine.simulation import Simulation
from vidur.entities.batch import Batch
from vidur.entities.request import Request
from vidur.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
CPU_SCENARIO = ROOT / "scenarios" / "validate-tiny-cpu.yaml"
#: the engine models that overlap host work, and each one's own switch that turns it off
OVERLAPPING = [("vllm_v1", "async_scheduling", False), ("sglang", "disable_overlap_schedule", True)]


def _scenario(name: str, settings=None, num_requests: int = 12):
    s = {"workload.num_requests": num_requests, "simulation.fast_forward": False, **(settings or {})}
    return load_scenario(CPU_SCENARIO, scheduler=name, settings=list(s.items()))


def _batches(sched) -> list[Batch]:
    """A prefill-only, a decode-only and a mixed batch (shapes only; nothing is admitted)."""
    out = []
    for prefill, decodes in ((96, 0), (0, 5), (40, 3)):
        b = Batch()
        rid = 0
        if prefill:
            b.add(Request(rid, 0.0, prefill, 4), prefill)
            rid += 1
        for _ in range(decodes):
            r = Request(rid, 0.0, 30 + rid, 4)
            r.kv_len = r.prefill_target
            b.add(r, 1)
            rid += 1
        out.append(b)
    return out


@pytest.mark.parametrize("name,switch,off", OVERLAPPING)
def test_serial_host_prices_device_plus_host(name, switch, off):
    """Under serial_host a batch's price is forward + host overhead (the serial executor's), not their max."""
    overlapping = Simulation(_scenario(name))
    serial = Simulation(_scenario(name), serial_host=True)
    assert all(st.overlap for st in overlapping.replica_states)
    assert not any(st.overlap or st.scheduler.host_overlap for st in serial.replica_states)
    est, sched = serial.estimator, serial.replica_states[0].scheduler
    for b in _batches(sched):
        s = b.shape
        fwd, cpu = est.forward_time(s), est.cpu_overhead(s.num_seqs)
        assert cpu > 0
        assert sched.batch_time(b) == fwd + cpu
        assert overlapping.replica_states[0].scheduler.batch_time(b) == max(fwd, cpu)


@pytest.mark.parametrize("name,switch,off", OVERLAPPING)
@pytest.mark.parametrize("fast_forward", [False, True])
def test_serial_host_runs_as_the_engine_with_its_overlap_switched_off(name, switch, off, fast_forward):
    """serial_host=True gives the records of the policy's own switch (async_scheduling: false,
    disable_overlap_schedule: true), stepped or fast-forwarded; the policy's default differs."""
    ff = {"simulation.fast_forward": fast_forward}
    serial = Simulation(_scenario(name, ff), serial_host=True).run(progress=False).records.requests
    switched = Simulation(_scenario(name, {**ff, f"replica_scheduler.{switch}": off})).run(progress=False).records.requests
    default = Simulation(_scenario(name, ff)).run(progress=False).records.requests
    for col in ("first_token", "completion"):
        assert np.array_equal(serial[col], switched[col]), col
    assert (default["completion"] <= serial["completion"]).all()
    assert (default["completion"] < serial["completion"]).any()


def test_serial_host_leaves_policies_without_overlap_alone():
    a = Simulation(_scenario("sarathi")).run(progress=False).records.requests
    b = Simulation(_scenario("sarathi"), serial_host=True).run(progress=False).records.requests
    assert np.array_equal(a["completion"], b["completion"])


def test_host_overlap_is_priced_only_when_the_executor_overlaps():
    from vidur.validate.run import host_overlap

    sim = Simulation(_scenario("vllm_v1"))
    serial_ex, overlapping_ex = types.SimpleNamespace(overlaps_host=False), types.SimpleNamespace(overlaps_host=True)
    got = host_overlap(sim, serial_ex, "cpu")
    assert {k: got[k] for k in ("policy", "executor", "priced")} == {"policy": True, "executor": False, "priced": False}
    assert "vllm_v1" in got["note"] and "one processor" in got["note"] and "\n" not in got["note"]
    assert "async scheduling" in host_overlap(sim, serial_ex, "cuda")["note"]
    got = host_overlap(sim, overlapping_ex, "cuda")  # an executor that overlaps: the engine model's overlap is validated
    assert got["priced"] and got["note"] is None
    got = host_overlap(Simulation(_scenario("sarathi")), serial_ex, "cpu")
    assert not got["policy"] and not got["priced"] and got["note"] is None


def test_the_reference_executor_runs_host_and_device_serially():
    pytest.importorskip("torch")
    from vidur.reference.executor import ReferenceExecutor

    assert ReferenceExecutor.overlaps_host is False


def test_predicted_iteration_under_overlap_is_the_max():
    from vidur.validate.rescore import predict_iteration

    sim = Simulation(_scenario("sarathi"))
    est = sim.estimator
    for b in _batches(sim.replica_states[0].scheduler):
        s = b.shape
        fwd, cpu = est.forward_time(s), est.cpu_overhead(s.num_seqs)
        serial, f = predict_iteration(est, s)
        assert f == fwd and serial == pytest.approx(fwd + cpu, rel=1e-12)
        assert predict_iteration(est, s, overlap=True) == (max(fwd, cpu), fwd)


@pytest.mark.parametrize("name", ["vllm_v1", "sglang"])
def test_validate_notes_and_records_the_serial_pricing(name):
    """End to end on the CPU (small, no warm-up): the note, run.host_overlap, and a simulated side
    whose every step lasts device + host (what the reference executor does)."""
    pytest.importorskip("torch")
    from vidur.validate.run import validate_scenario

    sc = _scenario(name, num_requests=6)
    res = validate_scenario(sc, device="cpu", warmup=False)
    rep = res.report
    assert rep["run"]["host_overlap"] == {"policy": True, "executor": False, "priced": False}
    notes = [n for n in rep["notes"] if n.startswith("host overlap not priced")]
    assert len(notes) == 1 and name in notes[0]
    assert rep["run"]["cuda_graph_sizes"] == []  # the CPU runs eagerly: nothing is padded on either side
    notes = [n for n in rep["notes"] if n.startswith("CUDA-graph padding priced as the executor runs it")]
    assert len(notes) == 1 and "no CUDA graphs" in notes[0] and name in notes[0]
    # the simulated side: each decode-only step is priced device + host
    est = Simulation(sc).estimator
    log = res.sim_records.batches
    dec = (log["num_prefill"] == 0) & (log["num_decode"] > 0)
    assert dec.any()
    want = [est.decode_iteration_time(int(n), int(kv)) for n, kv in zip(log["num_decode"][dec], log["decode_kv"][dec])]
    assert np.allclose(log["end"][dec] - log["start"][dec], want, rtol=1e-9, atol=0.0)


def _roofline(name: str, **kw):
    sc = _scenario(name, {"cluster.device": "h100", "runtime_estimator": "roofline"})
    return Simulation(sc, **kw).estimator


def _decode(n: int):
    from vidur.estimate.base import BatchShape

    return BatchShape(num_decode=n, decode_kv=64 * n)


@pytest.mark.parametrize("name", ["vllm_v1", "sglang"])
def test_cuda_graph_sizes_replace_the_policys(name):
    """The roofline pads a decode batch to the policy's captured sizes; cuda_graph_sizes replaces them
    (empty: no padding, as sarathi's run prices it), and gives sizes to a policy without any."""
    plain = _roofline("sarathi")
    padded = _roofline(name)
    eager = _roofline(name, cuda_graph_sizes=())
    assert padded.forward_time(_decode(3)) > plain.forward_time(_decode(3))  # 3 runs as 4
    assert padded.forward_time(_decode(4)) == plain.forward_time(_decode(4))  # a captured size: no padding
    for n in (1, 3, 5, 9):
        assert eager.forward_time(_decode(n)) == plain.forward_time(_decode(n))
    given = _roofline("sarathi", cuda_graph_sizes=[1, 2, 4, 16])
    assert given.forward_time(_decode(9)) > plain.forward_time(_decode(9))
    assert given.forward_time(_decode(16)) == plain.forward_time(_decode(16))
    assert given.forward_time(_decode(17)) == plain.forward_time(_decode(17))  # past the largest: eager


def test_graph_sizes_note_only_when_the_policy_pads_otherwise():
    from vidur.validate.run import graph_sizes_note

    sim = Simulation(_scenario("vllm_v1"))
    own = sim.replica_states[0].scheduler.cuda_graph_sizes
    assert graph_sizes_note(sim, own) is None
    note = graph_sizes_note(sim, (1, 2, 4, 8))
    assert "decode batches padded to 1, 2, 4, 8" in note and "vllm_v1" in note and "\n" not in note
    assert "no CUDA graphs" in graph_sizes_note(sim, ())
    assert graph_sizes_note(Simulation(_scenario("sarathi")), (1, 2, 4)) is None


def test_engine_overrides_keep_ray_plans_sequential():
    """A Ray task rebuilds the simulation from its scenario, which does not carry the overrides."""
    from vidur.engine import parallel

    sc = _scenario("vllm_v1", {"cluster.num_replicas": 2, "simulation.workers": 2})
    assert Simulation(sc).engine_overrides == {}
    sim = Simulation(sc, serial_host=True, cuda_graph_sizes=[4, 1, 2])
    assert sim.engine_overrides == {"serial_host": True, "cuda_graph_sizes": (1, 2, 4)}
    plan = parallel.plan(sim, "ray")
    assert plan.workers == 1 and "serial_host" in plan.note and "cuda_graph_sizes" in plan.note
