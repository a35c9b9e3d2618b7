"""The vllm_v1 engine model: scheduling, async host overlap, CUDA-graph padding, KV override."""

from __future__ import annotations

import numpy as np
import pytest

from vidur.builtin.policies.vllm_v1 import VLLMV1Scheduler, default_capture_sizes
from vidur.errors import VidurError
from vidur.testing.fakes import LinearConfig, LinearEstimator
from vidur.testing.harness import ReplicaHarness

Cfg = VLLMV1Scheduler.Config


def test_one_budget_shared_running_first_then_waiting():
    h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=16), num_blocks=256, block_size=4)
    h.add(40, 5, at=0.0)
    h.add(30, 5, at=0.0)
    batches = h.run()
    assert all(b.num_tokens <= 16 for b in batches)
    # request 0 is chunked 16, 16, 8; the 8 left in step 3 go to request 1's first chunk
    assert [b.tokens_of(0) for b in batches[:3]] == [16, 16, 8]
    assert batches[2].tokens_of(1) == 8
    # once request 0 decodes, its token comes before request 1's chunk
    assert batches[3].requests[0] == 0 and batches[3].tokens_of(0) == 1
    assert not h.unfinished


def test_long_prefill_threshold_caps_each_chunk():
    h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=64, long_prefill_token_threshold=10),
                       num_blocks=256, block_size=4)
    h.add(35, 2)
    h.add(5, 2)
    batches = h.run()
    assert batches[0].tokens_of(0) == 10 and batches[0].tokens_of(1) == 5
    assert [b.tokens_of(0) for b in batches[:4]] == [10, 10, 10, 5]


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget():
    h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=16, enable_chunked_prefill=False),
                       num_blocks=256, block_size=4)
    h.add(10, 3)
    h.add(10, 3)
    batches = h.run()
    assert batches[0].requests == (0,)  # 10 + 10 > 16: the second waits
    assert all(t in (1, 10) for b in batches for t in b.tokens)


def test_admission_needs_the_whole_prompt_but_takes_only_the_chunk():
    # 8 blocks of 4 tokens = 32 tokens of KV; budget 8
    h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=8), num_blocks=8, block_size=4)
    h.add(20, 2)
    h.add(20, 2)  # does not fit beside request 0's prompt: waits
    batches = h.run()
    assert batches[0].requests == (0,) and batches[0].kv_blocks_used == 2  # the chunk's blocks only
    assert all(1 not in b.requests for b in batches if 0 in b.requests)
    assert not h.unfinished


def test_preempts_newest_and_admits_nothing_in_that_step():
    h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=64), num_blocks=6, block_size=4)
    h.add_many([(4, 6), (4, 6), (4, 6)])
    batches = h.run()
    assert not h.unfinished
    preempted = [r for r in h.requests if r.preemptions]
    assert preempted and preempted[0].id == 2
    assert all(b.kv_blocks_used <= 6 for b in batches)


def test_max_num_seqs_and_max_batch_size_are_one_field():
    assert Cfg(max_num_seqs=7).max_batch_size == 7
    assert Cfg(max_batch_size=5).max_num_seqs == 5
    assert Cfg().max_num_seqs == 1024
    with pytest.raises(VidurError, match="mirrors max_num_seqs"):
        Cfg(max_num_seqs=4, max_batch_size=8)
    with pytest.raises(VidurError, match="long_prefill_token_threshold"):
        Cfg(long_prefill_token_threshold=-1)
    with pytest.raises(VidurError, match="cudagraph_capture_sizes"):
        Cfg(cudagraph_capture_sizes=[0, 8])


def test_default_capture_sizes_match_vllm():
    sizes = default_capture_sizes(512)
    assert sizes[:5] == (1, 2, 4, 8, 16) and sizes[-3:] == (480, 496, 512)
    assert 248 in sizes and 256 in sizes and 264 not in sizes and 272 in sizes
    assert Cfg(max_num_seqs=64).graph_sizes[-1] == 128  # vLLM caps at 2 x max_num_seqs
    assert Cfg(cudagraph_capture_sizes=[]).graph_sizes == ()


def _run(async_scheduling: bool, base: float):
    est = LinearEstimator(LinearConfig(base=base))
    h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=32, async_scheduling=async_scheduling),
                       num_blocks=256, block_size=4, estimator=est, fast_forward=True)
    h.add_many([(20, 30), (12, 40)])
    h.add(16, 10, at=0.01)
    h.run()
    return h


@pytest.mark.parametrize("base", [1e-6, 1e-3, 1.0])
def test_async_scheduling_takes_max_of_host_and_device(base):
    sync, overlap = _run(False, base), _run(True, base)
    for s, o in zip(sync.requests, overlap.requests):
        assert o.completion <= s.completion
    log = overlap.loop.batches.to_columns()[0]
    assert (log["end"] - log["start"] >= base - 1e-12).all()  # never shorter than the host work
    if base >= 1.0:  # host-bound: each step lasts exactly the host time
        assert np.allclose(log["end"] - log["start"], base)


@pytest.mark.parametrize("async_scheduling", [False, True])
@pytest.mark.parametrize("base", [1e-6, 1e-3, 1.0])
def test_batch_time_is_what_the_engine_charges(async_scheduling, base):
    """SLO-aware policies price a batch with ``batch_time``: it must be the step the event loop
    charges (max(device, host) under async scheduling, their sum without)."""
    quoted = []
    est = LinearEstimator(LinearConfig(base=base))
    h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=32, async_scheduling=async_scheduling),
                       num_blocks=256, block_size=4, estimator=est,
                       on_batch=lambda sched, batch: quoted.append(sched.batch_time(batch)))
    h.add_many([(20, 6), (12, 8)])
    h.add(16, 4, at=0.01)
    h.run()
    log = h.loop.batches.to_columns()[0]
    assert np.allclose(log["end"] - log["start"], quoted, rtol=1e-12, atol=0.0)


def test_async_fast_forward_equals_stepping():
    def run(ff):
        est = LinearEstimator(LinearConfig(base=2e-4))
        h = ReplicaHarness(VLLMV1Scheduler, Cfg(max_num_batched_tokens=32), num_blocks=256, block_size=4,
                           estimator=est, fast_forward=ff)
        h.add_many([(20, 50), (12, 60), (7, 80)])
        h.run()
        return [(r.first_token, r.completion) for r in h.requests]

    assert run(True) == run(False)


def test_roofline_pads_token_work_to_captured_sizes():
    from vidur.estimate.base import BatchShape
    from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
    from vidur.hardware.catalog import default_node, get_device
    from vidur.model.catalog import load_model

    model = load_model("meta-llama/Llama-3.1-8B")
    est = RooflineEstimator(RooflineConfig(), model, get_device("h100"), default_node("h100"), 1, 1)
    t100 = est.forward_time(BatchShape(num_decode=100, decode_kv=100 * 512))
    est.use_cuda_graphs([8, 16, 104, 112])
    padded = est.forward_time(BatchShape(num_decode=100, decode_kv=100 * 512))
    t104 = est._token_time(104)
    assert padded > t100 and est._token_time(100) == t104
    assert est._token_time(113) != est._token_time(112)  # above the largest size: not padded
    # scalar and vectorised decode paths still agree bit for bit
    kv = np.array([100 * 512.0, 100 * 600.0])
    assert est.decode_iteration_times(100, kv).tolist() == [est.decode_iteration_time(100, int(k)) for k in kv]


def test_num_gpu_blocks_override():
    from vidur.memory.paged import PagedConfig, PagedMemoryPlanner
    from vidur.hardware.catalog import get_device
    from vidur.model.catalog import load_model

    model = load_model("meta-llama/Llama-3.1-8B")
    plan = PagedMemoryPlanner(PagedConfig(num_gpu_blocks_override=2588)).plan(model, get_device("rtx4090"), 1, 1)
    assert plan.num_blocks == 2588
    with pytest.raises(VidurError, match="num_gpu_blocks_override"):
        PagedConfig(num_gpu_blocks_override=0)


def test_real_run_loader(tmp_path):
    import json

    from vidur.validate.real_runs import load_real_run

    rows = [
        {"input_toks": 10, "output_toks": 3, "queued_ts": 5.0, "first_token_ts": 5.5, "last_token_ts": 6.5},
        {"input_toks": 7, "output_toks": 1, "queued_ts": 4.0, "first_token_ts": 4.2, "last_token_ts": 4.2},
    ]
    (tmp_path / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    run = load_real_run(tmp_path)
    assert run.table.arrival.tolist() == [0.0, 1.0] and run.table.prompt.tolist() == [7, 10]
    assert run.ttft.tolist() == pytest.approx([0.2, 0.5]) and run.e2e.tolist() == pytest.approx([0.2, 1.5])
    assert np.isnan(run.tpot[0]) and run.tpot[1] == pytest.approx(0.5)
    rows[0]["first_token_ts"] = 4.0
    (tmp_path / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(VidurError, match="out of order"):
        load_real_run(tmp_path)


def _synthetic_run(folder, params, seed, n=40):
    """A 'measured' run made by the simulator itself with known roofline parameters."""
    import json

    from vidur.calibration.fit import Calibration
    from vidur.calibration.replay import simulate_run
    from vidur.validate.real_runs import RealRun
    from vidur.workload.workload import RequestTable

    rng = np.random.default_rng(seed)
    table = RequestTable(arrival=np.cumsum(rng.exponential(0.05, n)), prompt=rng.integers(50, 800, n),
                         output=rng.integers(20, 200, n))
    meta = {"model": "meta-llama/Llama-3.1-8B", "device": "h100",
            "engine_kwargs": {"max_num_seqs": 16, "max_num_batched_tokens": 512, "tensor_parallel_size": 1}}
    run = RealRun("x", str(folder), table, table.arrival, table.arrival, table.arrival, meta)
    r = simulate_run(run, Calibration(params=params)).records.requests
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "requests.jsonl").write_text("\n".join(json.dumps({
        "input_toks": int(p), "output_toks": int(o), "queued_ts": 100 + a, "first_token_ts": 100 + f,
        "last_token_ts": 100 + c}) for p, o, a, f, c in zip(r["prompt_tokens"], r["output_tokens"], r["arrival"],
                                                             r["first_token"], r["completion"])))


def test_calibrate_recovers_known_parameters_and_auto_applies_the_file(tmp_path, monkeypatch, capsys):
    import json

    from vidur.cli import main

    truth = {"memory_efficiency": 0.6}
    _synthetic_run(tmp_path / "a", truth, 1)
    _synthetic_run(tmp_path / "b", truth, 2)
    out = tmp_path / "cal.json"
    rc = main(["calibrate", str(tmp_path / "a"), "--holdout", str(tmp_path / "b"), "--params", "memory_efficiency",
               "--prior-weight", "0", "--out", str(out), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["params"]["memory_efficiency"] == pytest.approx(0.6)
    held = rep["held_out"]["b"]
    assert held["tpot"]["after"] < 0.01 < held["tpot"]["before"]  # defaults are off, the fit is not
    saved = json.loads(out.read_text())
    assert saved["format"] == "vidur-calibration/1" and saved["device"] == "h100"
    assert saved["config"] == {"memory_efficiency": 0.6} and saved["model"] == "meta-llama/Llama-3.1-8B"
    # never score on fitted data
    assert main(["calibrate", str(tmp_path / "a"), "--holdout", str(tmp_path / "a"), "--dry-run"]) == 2

    # a scenario naming the file gets its values, and so does auto once the file is on the path
    from vidur.engine.simulation import Simulation
    from vidur.scenario import scenario_from_dict

    base = {"model": "meta-llama/Llama-3.1-8B", "cluster": {"device": "h100"}, "workload": {"num_requests": 5},
            "replica_scheduler": {"name": "vllm_v1"}}
    named = Simulation(scenario_from_dict({**base, "runtime_estimator": {"name": "roofline", "calibration": str(out)}}))
    assert named.estimator.config.memory_efficiency == pytest.approx(0.6)
    monkeypatch.setenv("VIDUR_CALIBRATION_PATH", str(tmp_path))
    auto = Simulation(scenario_from_dict({**base, "runtime_estimator": "auto"}))
    assert auto.estimator.config.memory_efficiency == pytest.approx(0.6)


def test_calibration_prior_pulls_toward_the_defaults(tmp_path):
    """The prior keeps an efficiency at its default unless the data pays for the move: with no
    pull the fit recovers the truth, with a strong one it stays put, in between it lies between."""
    from vidur.calibration.fit import fit_runs, prior_penalty, same_device_runs
    from vidur.estimate.roofline import DEFAULT_MEMORY_EFFICIENCY
    from vidur.validate.real_runs import load_real_run

    default = DEFAULT_MEMORY_EFFICIENCY  # the synthetic run is on an H100 (no device figure)
    assert prior_penalty({"memory_efficiency": default}, {"memory_efficiency": default}) == 0.0
    assert 0 < prior_penalty({"memory_efficiency": 0.7}, {"memory_efficiency": default}) < prior_penalty(
        {"memory_efficiency": 0.6}, {"memory_efficiency": default})
    _synthetic_run(tmp_path / "a", {"memory_efficiency": 0.6}, 1)
    run = load_real_run(tmp_path / "a")
    fitted = {w: fit_runs([run], params=("memory_efficiency",), prior_weight=w).params["memory_efficiency"]
              for w in (0.0, 0.5, 100.0)}
    assert fitted[0.0] == pytest.approx(0.6)
    assert fitted[100.0] == pytest.approx(default)
    assert 0.6 <= fitted[0.5] <= default
    assert same_device_runs([run], "h100") == [run] and same_device_runs([run], "a100") == []


def test_decode_samples_read_prompt_free_seconds(tmp_path):
    """A prompt-free second with n running and g tokens/s is a decode step of n/g seconds over
    the requests decoding then, their context rebuilt from prompt + output produced so far."""
    from vidur.calibration.steps import decode_samples, decode_seconds, step_error
    from vidur.testing.fakes import LinearConfig, LinearEstimator
    from vidur.validate.real_runs import RealRun
    from vidur.workload.workload import RequestTable

    # 4 requests arrive at 0, first token at 1 s, last at 11 s, 100 prompt + 1000 output tokens
    n = 4
    table = RequestTable(arrival=np.zeros(n), prompt=np.full(n, 100), output=np.full(n, 1000))
    run = RealRun("x", str(tmp_path), table, np.ones(n), np.full(n, 0.01), np.full(n, 11.0), {})
    (tmp_path / "timeseries.csv").write_text(
        "t,prompt_throughput,gen_throughput,running,waiting,kv_cache_pct\n"
        "1.0,400.0,4.0,4,0,1.0\n"      # prompt tokens: not a decode-only second
        "6.0,0.0,400.0,4,0,5.0\n"      # mid-second 5.5 s: 450 of 1000 output tokens each
        "12.0,0.0,0.0,0,0,0.0\n")
    [(t, k, kv, real)] = decode_samples(run)
    assert (t, k, real) == (6.0, 4, 0.01)
    assert kv == 4 * (100 + 450) + 4
    est = LinearEstimator(LinearConfig(base=0.01))
    [sec] = decode_seconds(run, est)
    assert sec.estimated == pytest.approx(est.decode_iteration_time(4, kv))
    assert step_error([sec]) == pytest.approx(abs(np.log(sec.estimated / 0.01)))
    # under async scheduling the step is priced as the simulator prices it: max(device, host)
    from vidur.calibration.steps import step_time
    from vidur.estimate.base import BatchShape

    [hid] = decode_seconds(run, est, overlap=True)
    shape = BatchShape(num_decode=4, decode_kv=kv)
    assert hid.estimated == step_time(est, shape, overlap=True)
    assert hid.estimated == max(est.forward_time(shape), est.cpu_overhead(4)) < sec.estimated
    assert decode_samples(RealRun("y", str(tmp_path / "none"), table, run.ttft, run.tpot, run.e2e, {})) == []


def test_decode_only_graphs_leave_prefill_batches_unpadded():
    """SGLang and the reference executor graph decode batches only: a batch with a prefill is priced at
    its own size, a decode-only batch at the captured size; vLLM V1 (piecewise graphs) pads both."""
    from vidur.estimate.base import BatchShape
    from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
    from vidur.hardware.catalog import default_node, get_device
    from vidur.model.catalog import load_model

    model = load_model("meta-llama/Llama-3.1-8B")

    def make():
        return RooflineEstimator(RooflineConfig(), model, get_device("h100"), default_node("h100"), 1, 1)

    plain, both, decodes = make(), make(), make()
    both.use_cuda_graphs([8, 16, 104, 112])
    decodes.use_cuda_graphs([8, 16, 104, 112], decode_only=True)
    mixed = BatchShape.from_lists([(40, 0)], [512] * 60)  # 100 tokens: one prefill chunk and 60 decodes
    decode = BatchShape(num_decode=100, decode_kv=100 * 512)
    assert decodes.layer_time(mixed) == plain.layer_time(mixed) < both.layer_time(mixed)
    assert decodes.layer_time(decode) == both.layer_time(decode) > plain.layer_time(decode)
    # the decode fast paths still agree with the generic one under decode-only graphs
    kv = np.array([100 * 512.0, 100 * 600.0])
    assert decodes.decode_iteration_times(100, kv).tolist() == [decodes.decode_iteration_time(100, int(k)) for k in kv]
    assert decodes.decode_iteration_time(100, 51200) == decodes.forward_time(decode) + decodes.cpu_overhead(100)
    # a later call replaces the earlier one, decode_only included
    decodes.use_cuda_graphs([8, 16, 104, 112])
    assert decodes.layer_time(mixed) == both.layer_time(mixed)


def test_sglang_graphs_decode_batches_only():
    from vidur.engine.simulation import Simulation
    from vidur.scenario import load_scenario

    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sim = Simulation(load_scenario(root / "scenarios" / "sglang.yaml", settings=[("workload.num_requests", "10")]))
    est = sim.estimator
    est = getattr(est, "inner", est)
    assert sim.replica_states[0].scheduler.cuda_graph_decode_only and est._graphs_decode_only
