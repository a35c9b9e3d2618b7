"""Parallel replicas (vidur.engine.parallel): the same files whether replicas run in one process or many."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SCENARIOS
from vidur.cli import main
from vidur.engine import parallel
from vidur.engine.simulation import Simulation
from vidur.scenario import load_scenario
from vidur.scheduler.global_base import GlobalScheduler

pytestmark = pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork"
)

FILES = ("summary.json", "requests.parquet", "batches.parquet")


def run_dir(capsys, out, scenario, *settings_):
    args = ["run", str(SCENARIOS / scenario), "--no-progress", "--out", str(out)]
    for key, value in settings_:
        args += ["-s", key, str(value)]
    code = main(args)
    stdout, err = capsys.readouterr()
    assert code == 0, err
    return stdout


@pytest.mark.parametrize(
    "scenario, extra",
    [
        ("quickstart.yaml", [("global_scheduler", "round_robin"), ("cluster.num_replicas", 5)]),
        ("quickstart.yaml", [("global_scheduler", "random"), ("cluster.num_replicas", 4), ("simulation.max_time", 40)]),
        ("shared-prefix.yaml", [("global_scheduler", "random"), ("cluster.num_replicas", 3)]),
        ("tp2-pp2.yaml", [("global_scheduler", "round_robin"), ("cluster.num_replicas", 3), ("simulation.max_time", 50)]),
        ("quickstart.yaml", [("global_scheduler", "random"), ("cluster.num_replicas", 4), ("simulation.max_time", 60),
                             ("metrics.batch_log", "summary")]),
        ("shared-prefix.yaml", [("global_scheduler", "round_robin"), ("cluster.num_replicas", 3),
                                ("metrics.batch_log", "summary")]),
    ],
    ids=["round_robin", "random-max_time", "prefix-caching", "pipeline-trace", "summary-max_time", "summary-prefix"],
)
def test_workers_give_identical_files(tmp_path, capsys, scenario, extra):
    common = [("workload.num_requests", 400), *extra]
    one = run_dir(capsys, tmp_path / "one", scenario, *common, ("simulation.workers", 1))
    two = run_dir(capsys, tmp_path / "two", scenario, *common, ("simulation.workers", 2))
    assert "simulated: sequential: simulation.workers is 1" in one
    assert "simulated: 2 worker processes" in two
    names = sorted(p.name for p in (tmp_path / "one").iterdir() if p.name != "scenario.yaml")
    assert "summary.json" in names and "requests.parquet" in names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_max_time_leaves_requests_unrouted(tmp_path, capsys):
    """The cut really cuts: late requests were never routed in either mode."""
    common = [("workload.num_requests", 400), ("global_scheduler", "random"), ("cluster.num_replicas", 4),
              ("simulation.max_time", 40), ("simulation.workers", 3)]
    run_dir(capsys, tmp_path / "r", "quickstart.yaml", *common)
    from vidur.metrics.tablefile import read_run_table

    assert (read_run_table(tmp_path / "r", "requests")["replica"] == -1).any()


@pytest.mark.parametrize("router", ["lor", "session_affinity", "prefix_aware"])
def test_live_state_routers_stay_sequential(capsys, tmp_path, router):
    out = run_dir(capsys, tmp_path / "r", "quickstart.yaml", ("workload.num_requests", 100),
                  ("cluster.num_replicas", 3), ("global_scheduler", router), ("simulation.workers", 2))
    assert f"simulated: sequential: global scheduler {router!r} routes on live replica state" in out


@pytest.mark.parametrize("value", [0, -2, "many", 1.5, True])
def test_bad_workers_is_one_line(capsys, value):
    code = main(["run", str(SCENARIOS / "quickstart.yaml"), "--no-output", "-s", "simulation.workers", str(value)])
    _, err = capsys.readouterr()
    assert code != 0
    assert "simulation.workers must be auto or a whole number >= 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_plan_reasons():
    def sim_with(**settings_):
        sc = load_scenario(SCENARIOS / "quickstart.yaml", settings=[(k.replace("__", "."), v) for k, v in settings_.items()])
        return Simulation(sc)

    small = sim_with(cluster__num_replicas=4, workload__num_requests=50)
    assert parallel.plan(small).workers == 1
    assert "start-up would cost more" in parallel.plan(small).note or "one CPU" in parallel.plan(small).note
    assert parallel.plan(sim_with(cluster__num_replicas=1, simulation__workers=4)).note == "sequential: one replica"
    capped = parallel.plan(sim_with(cluster__num_replicas=3, workload__num_requests=50, simulation__workers=8))
    assert capped.workers == 3 and capped.note.startswith("3 worker processes, 3 replicas split 1 + 1 + 1")
    closed = load_scenario(SCENARIOS / "multi-turn.yaml", settings=[("global_scheduler", "round_robin"),
                                                                    ("cluster.num_replicas", 2),
                                                                    ("simulation.workers", 2)])
    assert "closed-loop" in parallel.plan(Simulation(closed)).note


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    replicas=st.integers(2, 6),
    workers=st.integers(2, 4),
    router=st.sampled_from(["round_robin", "random"]),
    seed=st.integers(0, 50),
    requests=st.integers(1, 120),
)
def test_any_split_gives_the_sequential_records(replicas, workers, router, seed, requests):
    """Any number of groups, even with replicas or groups that get no request, merges to the same records."""
    def records(w):
        sc = load_scenario(SCENARIOS / "quickstart.yaml", settings=[
            ("cluster.num_replicas", replicas), ("global_scheduler", router), ("seed", seed),
            ("workload.num_requests", requests), ("workload.arrival.qps", 40), ("simulation.workers", w),
            ("simulation.progress", False),
        ])
        return Simulation(sc).run().records

    a, b = records(1), records(workers)
    assert list(a.requests) == list(b.requests) and list(a.batches) == list(b.batches)
    for k in a.requests:
        np.testing.assert_array_equal(a.requests[k], b.requests[k], err_msg=k)
    for k in a.batches:
        np.testing.assert_array_equal(a.batches[k], b.batches[k], err_msg=k)
    np.testing.assert_array_equal(a.itl_values, b.itl_values)
    np.testing.assert_array_equal(a.itl_counts, b.itl_counts)
    assert a.replicas == b.replicas and a.makespan == b.makespan


def test_step_mode_equals_fast_forward_at_max_time(tmp_path, capsys):
    """The root of the one difference parallel runs showed: a fast-forwarded block that
    straddled max_time kept the ITL samples of repetitions ending after it."""
    common = [("workload.num_requests", 400), ("global_scheduler", "random"), ("cluster.num_replicas", 4),
              ("simulation.max_time", 40), ("simulation.workers", 1)]
    run_dir(capsys, tmp_path / "fast", "quickstart.yaml", *common)
    main(["run", str(SCENARIOS / "quickstart.yaml"), "--no-progress", "--out", str(tmp_path / "step"), "--step",
          *[x for k, v in common for x in ("-s", k, str(v))]])
    capsys.readouterr()
    for name in FILES:
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "step" / name).read_bytes(), name


def test_ray_gives_identical_files(tmp_path, capsys):
    pytest.importorskip("ray")
    common = [("workload.num_requests", 300), ("global_scheduler", "random"), ("cluster.num_replicas", 3),
              ("simulation.max_time", 40)]
    run_dir(capsys, tmp_path / "one", "quickstart.yaml", *common, ("simulation.workers", 1))
    code = main(["run", str(SCENARIOS / "quickstart.yaml"), "--no-progress", "--out", str(tmp_path / "ray"),
                 "--executor", "ray", *[x for k, v in common + [("simulation.workers", 2)] for x in ("-s", k, str(v))]])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "simulated: 2 Ray tasks" in out
    for name in FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name


def test_address_needs_ray_executor(capsys):
    code = main(["run", str(SCENARIOS / "quickstart.yaml"), "--no-output", "--address", "localhost:6379"])
    _, err = capsys.readouterr()
    assert code == 2 and "--address needs --executor ray" in err


class _UpfrontBroken(GlobalScheduler):
    """Decides up front, and fails on the fifth request."""

    name = "upfront_broken"
    decides_upfront = True

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.n = 0

    def route(self, req):
        self.n += 1
        if self.n == 5:
            raise ValueError("no replica for you")
        return self.n % len(self.replicas)


def test_a_router_failing_up_front_is_named(vidur_register, tiny_cluster):
    from vidur.errors import PluginError

    vidur_register(_UpfrontBroken)
    with pytest.raises(PluginError, match=r"global scheduler 'upfront_broken' .* raised ValueError: no replica for you"):
        tiny_cluster(global_scheduler="upfront_broken", num_replicas=3, settings={"simulation.workers": 2})


def test_a_scheduler_failing_in_a_worker_is_named(vidur_register, tiny_cluster):
    from vidur.builtin.policies.sarathi import SarathiScheduler
    from vidur.errors import PluginError

    class Exploding(SarathiScheduler):
        name = "exploding"

        def schedule(self):
            if self.replica_id == 2 and self.now > 0.05:
                raise RuntimeError("boom on replica 2")
            return super().schedule()

    vidur_register(Exploding)
    with pytest.raises(PluginError, match=r"replica scheduler 'exploding' .* raised RuntimeError: boom on replica 2"):
        tiny_cluster("exploding", num_replicas=3, num_requests=40, settings={"simulation.workers": 2})


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 1500), chunk=st.sampled_from([7, 300, 5000]), nrep=st.integers(2, 5))
def test_batch_summary_floats_do_not_depend_on_chunks_or_processes(seed, n, chunk, nrep):
    """The summarised log's float sums, bit for bit, whatever the chunks and however the
    replicas were split between processes (what makes workers 1 and N write the same summary)."""
    from vidur.metrics.batch_summary import BatchSummary, merge_batch_summaries
    from vidur.metrics.records import BATCH_COLUMNS

    rng = np.random.default_rng(seed)
    col = {c: i for i, c in enumerate(BATCH_COLUMNS)}
    rows = np.zeros((n, len(BATCH_COLUMNS)))
    rep = rng.integers(0, nrep, n)
    rows[:, col["replica"]] = rep
    for r in range(nrep):  # each replica's batches back to back, as pp = 1 runs them
        m = rep == r
        d = rng.uniform(0.001, 0.05, int(m.sum()))
        rows[m, col["end"]] = np.cumsum(d) + rng.uniform(0, 1)
        rows[m, col["start"]] = rows[m, col["end"]] - d
    rows[:, col["num_decode"]] = rng.integers(1, 64, n)
    rows[:, col["num_seqs"]] = rows[:, col["num_decode"]]
    rows[:, col["kv_blocks_used"]] = rng.integers(0, 900, n)
    rows = rows[np.argsort(rows[:, col["start"]], kind="stable")]
    t1 = float(np.median(rows[:, col["end"]]))

    def fold(part, size):
        s = BatchSummary(lambda c: (c["num_seqs"] * 1.7, c["kv_blocks_used"] * 3.1))
        for i in range(0, len(part), size):
            s.fold(part[i : i + size])
        s.done_until = t1
        s.commit()
        return s

    def state(s):
        return [s.w_sum[:nrep].tolist(), s.kv_w[:nrep].tolist(), s.flops[:nrep].tolist(), s.nbytes[:nrep].tolist(),
                [s.busy_seconds(r, 0.0, t1) if r < s.n.size and s.n[r] else 0.0 for r in range(nrep)]]

    one = state(fold(rows, len(rows)))
    assert state(fold(rows, chunk)) == one
    low = rows[:, col["replica"]] < nrep // 2
    assert state(merge_batch_summaries([fold(rows[low], chunk), fold(rows[~low], chunk + 1)])) == one
