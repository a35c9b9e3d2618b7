"""vidur validate: the reference executor and the end-to-end CPU fidelity check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vidur.cli import main
from vidur.entities.batch import Batch
from vidur.entities.request import Request
from vidur.errors import VidurError
from vidur.model.catalog import load_model
from vidur.reference import executor as E
from vidur.reference.device import flushing_denormals, gpu_sku, torch_device
from vidur.reference.kv import PAGE
from vidur.validate.compare import (
    RequestTimings,
    iteration_errors,
    iteration_kind,
    request_errors,
)

ROOT = Path(__file__).resolve().parent.parent
CPU_SCENARIO = ROOT / "scenarios" / "validate-tiny-cpu.yaml"


@pytest.fixture(scope="module")
def tiny():
    return load_model("vidur/tiny-llama")


class EmulatedPaged(E.ReferenceExecutor):
    """The paged layout and decode CUDA graphs, emulated on the CPU.

    Attention over the block table is computed by gathering pages (a slow
    reference for FlashAttention varlen); a "graph" replays the forward pass
    on the static, padded input buffers. Exercises all the host-side
    bookkeeping (slots, page tables, cumulative lengths, padding) of the
    CUDA paths without a GPU.
    """

    def _paged_works(self):
        return True

    def _varlen(self, q, kp, vp, cu_q, cu_k, max_q, max_k, used, table, causal):
        outs = []
        cq, us, tb = cu_q.tolist(), used.tolist(), table.tolist()
        for i in range(len(us)):
            ql, kl = cq[i + 1] - cq[i], us[i]
            pages = tb[i][: math.ceil(kl / PAGE)]
            k = kp[pages].reshape(-1, self.kv_heads, self.head_dim)[:kl]
            v = vp[pages].reshape(-1, self.kv_heads, self.head_dim)[:kl]
            outs.append(self._sdpa(q[cq[i] : cq[i + 1]], k.transpose(0, 1), v.transpose(0, 1), kl - ql))
        return torch.cat(outs, 0)

    def _capture_one(self, g):
        ex = self

        class Replay:
            def replay(self):
                g["tokens"].copy_(ex._forward(g["inputs"]))

        g["graph"] = Replay()
        g["tokens"] = torch.zeros(g["b"], dtype=torch.int64)
        return g


class EmulatedFlash(E.ReferenceExecutor):
    """The contiguous layout with FlashAttention varlen over slot ranges (and decode graphs), emulated on the CPU."""

    def _flash_works(self):
        return True

    def _flash(self, q, kp, vp, cu_q, starts, max_q, max_k, used, causal):
        outs = []
        cq, st, us = cu_q.tolist(), starts.tolist(), used.tolist()
        for i in range(len(us)):
            ql, kl, b = cq[i + 1] - cq[i], us[i], st[i]
            outs.append(self._sdpa(q[cq[i] : cq[i + 1]], kp[b : b + kl].transpose(0, 1), vp[b : b + kl].transpose(0, 1), kl - ql))
        return torch.cat(outs, 0)

    _capture_one = EmulatedPaged._capture_one


def run_plan(ex, plan):
    """Feed ``plan`` (per iteration: [(request, tokens)]) to ``ex``; return each request's output tokens."""
    got: dict[int, list[int]] = {}
    for step in plan:
        b = Batch()
        for r, q in step:
            b.add(r, q)
        t = ex.execute(b)
        assert t.wall_s > 0 and 0 < t.forward_s <= t.wall_s
        for r, tok in zip(b.requests, ex.last_tokens):
            r.kv_len += 1 if any(r is d for d in b.decodes) else b.chunks[b.prefills.index(r)]
            if r.kv_len >= r.prefill_target:
                got.setdefault(r.id, []).append(tok)
    return got


def mixed_plan():
    a, b, c = Request(0, 0.0, 300, 6), Request(1, 0.0, 40, 8), Request(2, 0.0, 520, 5)
    steps = [[(a, 200), (b, 40)], [(b, 1), (a, 100), (c, 270)], [(b, 1), (a, 1), (c, 250)]]
    return steps + [[(b, 1), (a, 1), (c, 1)] for _ in range(3)]


def test_chunked_prefill_and_decode_match_one_shot_prefill(tiny):
    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096)
    assert (ex.attention, ex.kernel) == ("contiguous", "sdpa")
    r = Request(7, 0.0, 120, 5)
    one = run_plan(ex, [[(r, 120)]] + [[(r, 1)]] * 4)
    ex.release()
    r = Request(7, 0.0, 120, 5)  # same id: same prompt tokens
    chunked = run_plan(ex, [[(r, 50)], [(r, 30)], [(r, 40)]] + [[(r, 1)]] * 4)
    assert one == chunked and len(one[7]) == 5
    assert len(set(one[7])) > 1  # the random model does not emit one constant token


def test_paged_layout_and_decode_graphs_match_contiguous(tiny):
    ref = run_plan(E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096, max_seq_tokens=1024), mixed_plan())
    paged = EmulatedPaged(tiny, "cpu", max_kv_tokens=4096, max_seq_tokens=1024, attention="paged")
    assert paged.attention == "paged"
    assert run_plan(paged, mixed_plan()) == ref
    graphs = EmulatedPaged(tiny, "cpu", max_kv_tokens=4096, max_seq_tokens=1024, attention="paged")
    assert graphs.capture_graphs(12) == 16 and graphs.graph_error is None
    assert run_plan(graphs, mixed_plan()) == ref
    assert graphs.graph_iterations == 3  # the decode-only iterations replayed a (padded) graph
    assert "paged" in graphs.description


def test_flash_over_slot_ranges_and_its_graphs_match_sdpa(tiny):
    ref = run_plan(E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096, max_seq_tokens=1024), mixed_plan())
    flash = EmulatedFlash(tiny, "cpu", max_kv_tokens=4096, max_seq_tokens=1024)
    assert (flash.attention, flash.kernel) == ("contiguous", "flash")
    assert run_plan(flash, mixed_plan()) == ref
    graphs = EmulatedFlash(tiny, "cpu", max_kv_tokens=4096, max_seq_tokens=1024)
    assert graphs.capture_graphs(3) == 4
    assert run_plan(graphs, mixed_plan()) == ref and graphs.graph_iterations == 3
    assert "FlashAttention varlen" in graphs.description


def test_warmup_pays_the_one_off_costs_of_a_chunk_after_context(tiny):
    """The first chunk after cached context imports the lower-right causal mask (~1.5 s on CPU): in warm-up."""
    import sys

    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096)
    ex.warmup((8,), (1,), steps=1)
    assert "torch.nn.attention.bias" in sys.modules
    assert ex.iterations == 0 and not ex.seqs and ex.ranges.free == [[0, ex.ranges.size]]


def test_denormal_flushing_is_confined_to_iterations(tiny):
    """Flushing denormals is process-wide CPU state: on while an iteration runs, off again after it."""
    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096)
    run_plan(ex, [[(Request(2, 0.0, 10, 2), 10)]])
    assert not flushing_denormals(torch)


def test_tensor_parallel_shard_and_fewer_layers(tiny):
    """What the profiler builds: one rank of TP 2 (heads, MLP, vocabulary halved), fewer layers."""
    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096, tp=2, layers=2)
    assert (ex.q_heads, ex.kv_heads, ex.vocab, len(ex.layers), len(ex.k_pool)) == (
        tiny.num_heads // 2, tiny.num_kv_heads // 2, tiny.vocab_size // 2, 2, 2)
    assert ex.layers[0]["gate_up_proj"].shape == (tiny.intermediate_size, tiny.hidden_size)
    r = Request(4, 0.0, 30, 3)
    got = run_plan(ex, [[(r, 30)], [(r, 1)], [(r, 1)]])
    assert len(got[4]) == 3 and all(0 <= t < ex.vocab for t in got[4])


def test_preempted_request_recomputes_and_frees_its_kv(tiny):
    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096, reserved_tokens=200)
    r = Request(3, 0.0, 60, 10)
    run_plan(ex, [[(r, 60)], [(r, 1)], [(r, 1)]])
    assert ex.seqs[3].written == 62
    # the scheduler preempts (recompute): KV dropped, prefill of prompt + generated tokens
    r.kv_len, r.prefill_target = 0, 63
    got = run_plan(ex, [[(r, 63)], [(r, 1)]])
    assert ex.seqs[3].written == 64 and len(got[3]) == 2
    # a finished request's slots are released at the next iteration
    r.kv_len = r.final_kv
    other = Request(4, 0.0, 150, 40)  # needs 190 of the 200 slots: fits only once request 3 is gone
    run_plan(ex, [[(other, 150)]])
    assert 3 not in ex.seqs and ex.ranges.free != []


def test_prefix_cache_hit_runs_only_the_uncached_tokens_and_matches_a_full_prefill(tiny):
    """A request that starts after a cached prefix computes the same next token
    as a full prefill of the same (content-derived) prompt."""
    from vidur.workload.content import TreeBuilder

    tree = TreeBuilder()
    doc = tree.node(-1, 0)
    leaf = tree.node(doc, 90)
    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096)
    ex.content_tree = (tree.parent, tree.start)
    a, b = Request(1, 0.0, 100, 3), Request(2, 0.0, 100, 3)
    a.content, b.content = (leaf, -1, 1, -1), (leaf, -1, 2, -1)
    full = run_plan(ex, [[(a, 100)]])
    assert ex.seqs[1].tokens[:100] == ex._seq(b).tokens[:100]  # shared content: equal token ids
    b.kv_len, b.kvc = 96, [[], [], []]  # as the prefix-caching block manager admits it after a hit
    hit = run_plan(ex, [[(b, 4)]])
    assert ex.prefix_fills == 1 and ex.seqs[2].written == 100
    assert hit[2] == full[1]


def test_stale_request_progress_is_caught(tiny):
    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=4096)
    r = Request(5, 0.0, 30, 10)
    run_plan(ex, [[(r, 30)], [(r, 1)]])
    r.kv_len -= 1  # as a lazily advanced decode group member would look unsynced
    with pytest.raises(RuntimeError, match="out of date"):
        run_plan(ex, [[(r, 1)]])


def test_kv_pool_exhaustion_is_a_clear_error(tiny):
    ex = E.ReferenceExecutor(tiny, "cpu", max_kv_tokens=64, reserved_tokens=100)
    with pytest.raises(VidurError, match="KV pool"):
        run_plan(ex, [[(Request(1, 0.0, 80, 40), 80)]])


def test_non_llama_models_are_rejected_in_one_line():
    with pytest.raises(VidurError, match="Llama-family") as exc:
        E.check_supported(load_model("microsoft/phi-2"))
    assert "\n" not in str(exc.value) and "parallel attention" in str(exc.value)


def test_model_too_big_for_the_device_is_a_clear_error():
    with pytest.raises(VidurError, match="too big") as exc:
        E.ReferenceExecutor(load_model("meta-llama/Meta-Llama-3-70B"), "cpu", max_kv_tokens=1024)
    assert "GiB" in str(exc.value) and "\n" not in str(exc.value)


def test_cuda_requested_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(VidurError, match="no CUDA GPU"):
        torch_device("cuda")


def test_gpu_sku_names():
    assert gpu_sku("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_sku("NVIDIA H200") == "h200"
    assert gpu_sku("NVIDIA A100-SXM4-80GB") == "a100"
    assert gpu_sku("Some Future GPU") is None


def test_iteration_and_request_error_tables():
    kinds = iteration_kind(np.array([1, 0, 2, 0]), np.array([0, 4, 3, 1]))
    assert kinds.tolist() == ["prefill_only", "decode_only", "mixed", "decode_only"]
    e = iteration_errors([1.1, 0.9, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], kinds)
    assert e["prefill_only"]["median"] == pytest.approx(0.1)
    assert e["decode_only"]["count"] == 2 and e["decode_only"]["median"] == pytest.approx(0.05)
    assert e["mixed"]["bias"] == pytest.approx(1.0)
    assert e["all"]["count"] == 4
    real = RequestTimings([1, 2, 3], [0.1, 0.1, 0.1], [2, 3, 4], [0, 1, 2], [2, 4, 6], [11, 11, 11])
    sim = RequestTimings([1, 2, 3.3], [0.1, 0.1, 0.1], [2, 3, 4], [0, 1, 2], [2, 4, 6], [11, 11, 11])
    r = request_errors(real, sim)
    assert r["ttft"]["p50"]["error"] == pytest.approx(0.0)
    assert r["ttft"]["p99"]["error"] == pytest.approx((3.274 - 2.98) / 2.98, rel=1e-6)
    assert r["tpot"]["paired_median"] == pytest.approx(0.0)


def _validate_json(args, capsys):
    rc = main(args + ["--json", "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_validate_tiny_model_on_cpu_end_to_end(tmp_path, capsys):
    """The CPU fidelity check: real (PyTorch, 1 thread) vs simulated (shipped CPU profile)."""
    out_dir = tmp_path / "v"
    rc, out, err = _validate_json([
        "validate", str(CPU_SCENARIO), "--device", "cpu", "--out", str(out_dir), "--no-plots",
    ], capsys)
    assert rc == 0, err
    rep = json.loads(out)
    run = rep["run"]
    assert run["model"] == "vidur/tiny-llama" and run["torch_device"] == "cpu"
    assert run["estimator_name"] == "profile", rep["notes"]
    prov = run["provenance"]  # the resolver's record: which estimator, from which profile, why
    assert prov["estimator"] == "profile" and prov["source_root"] == "shipped with vidur", prov
    assert any(n.startswith("estimator profile (auto: ") for n in rep["notes"]), rep["notes"]
    n = run["num_requests"]
    assert n == 24 and rep["cluster"]["completed"] == {"real": n, "sim": n}
    it = rep["iterations"]
    assert it["all"]["count"] == run["iterations_real"] > n
    assert it["decode_only"]["count"] > 0 and it["mixed"]["count"] + it["prefill_only"]["count"] > 0
    # Behaviour only: how close the two sides come depends on this host's pace against the profile's
    # (benchmarks/bench_validate_cpu.py measures it; the figures are in benchmarks/README.md).
    for kind in ("all", "decode_only"):
        assert it[kind]["median"] >= 0 and it[kind]["measured_ms_median"] > 0
    for m in ("ttft", "tpot", "e2e"):
        cell = rep["requests"][m]["p50"]
        assert cell["real"] > 0 and cell["sim"] > 0
    mk = rep["cluster"]["makespan_s"]
    assert mk["real"] > 0 and mk["sim"] > 0
    assert any(n.startswith("simulated side: ") and "profile" in n for n in rep["notes"]), rep["notes"]
    pace = run["host_pace"]  # the host's pace against the profile's was measured, and said when off
    assert pace["recorded_ms"] > 0 and len(pace["measured_ms"]) >= 2 and pace["ratio"] > 0
    assert any("pace probe" in n for n in rep["notes"]) == (abs(math.log(pace["ratio"])) > math.log(1.15))
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["iterations.csv", "requests.csv", "summary.txt", "validation.json"]
    lines = (out_dir / "iterations.csv").read_text().splitlines()
    assert len(lines) == run["iterations_real"] + 1 and lines[0].startswith("replica,start_s,kind")
    _check_rescore_reproduces_the_run(out_dir / "iterations.csv")


def _check_rescore_reproduces_the_run(path):
    """Re-pricing the saved batches with the run's own estimator gives back its predictions, exactly."""
    from vidur.estimate.profile_estimator import ProfileConfig, ProfileEstimator
    from vidur.resolve.device import resolve_device
    from vidur.hardware.catalog import default_node
    from vidur.validate.rescore import read_iterations_csv, rescore

    model = load_model("vidur/tiny-llama")
    est = ProfileEstimator(ProfileConfig(), model, resolve_device("cpu").spec, default_node("cpu"), 1, 1)
    it = read_iterations_csv(path)
    res = rescore(it, est)
    assert np.allclose(res["predicted_ms"], it["predicted_ms"], rtol=1e-5)
    assert res["after"]["all"]["median"] == pytest.approx(res["before"]["all"]["median"], rel=1e-4)
    # a run saved before prefill_kv/prefill_sq were recorded: derived, same prices for this estimator
    old = {k: v for k, v in it.items() if k not in ("prefill_kv", "prefill_sq")}
    assert np.allclose(rescore(old, est)["predicted_ms"], it["predicted_ms"], rtol=1e-5)


def _scenario(tmp_path, **over) -> str:
    import yaml

    raw = yaml.safe_load(CPU_SCENARIO.read_text())
    raw["workload"]["num_requests"] = 4
    for k, v in over.items():
        raw[k] = v
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


@pytest.mark.parametrize(
    "over, extra, message",
    [
        ({"model": "microsoft/phi-2"}, [], "Llama-family"),
        ({"model": "meta-llama/Llama-2-7b-hf"}, [], "no profile of meta-llama/Llama-2-7b-hf on device cpu"),
        ({"cluster": {"device": "cpu", "tensor_parallel": 2}}, [], "tensor_parallel"),
        ({"cluster": {"device": "h100"}}, ["--device", "cpu"], "set cluster.device: cpu"),
    ],
)
def test_validate_bad_input_is_one_line(tmp_path, capsys, over, extra, message):
    rc = main(["validate", _scenario(tmp_path, **over), "--device", "cpu", *extra, "--no-progress"])
    _, err = capsys.readouterr()
    assert rc == 2
    assert message in err and err.count("\n") == 1, err


def test_validate_writes_plots_when_matplotlib_is_present(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "p"
    rc = main(["validate", _scenario(tmp_path), "--device", "cpu", "--out", str(out_dir), "--no-progress",
               "--estimator", "roofline"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Per iteration" in out and "roofline" in out
    assert (out_dir / "iterations.png").stat().st_size > 1000
    assert (out_dir / "latency_cdf.png").stat().st_size > 1000


def test_max_iteration_error_sets_the_exit_status(tmp_path, capsys):
    # the roofline knows nothing about this CPU: far beyond a 0.1% error
    rc = main(["validate", _scenario(tmp_path), "--device", "cpu", "--no-progress", "--estimator", "roofline",
               "--max-iteration-error", "0.001"])
    _, err = capsys.readouterr()
    assert rc == 1 and "exceeds --max-iteration-error" in err


def test_preemption_and_two_replicas_run_for_real(tmp_path):
    """Recompute preemptions (tight KV) and batches of two replicas in flight at once."""
    import yaml

    from vidur.scenario import scenario_from_dict
    from vidur.validate.run import validate_scenario

    raw = yaml.safe_load(CPU_SCENARIO.read_text())
    raw["replica_scheduler"] = {"name": "vllm", "max_batch_size": 16}
    raw["cluster"]["num_replicas"] = 2
    raw["memory_planner"] = {"name": "paged", "gpu_memory_utilization": 0.0005, "overhead_gb": 0.0, "activation_reserve_gb": 0.0}
    raw["workload"] = {
        "num_requests": 16,
        "arrival": {"name": "poisson", "qps": 300.0},
        "lengths": {"name": "uniform", "prompt_min": 150, "prompt_max": 300, "output_min": 120, "output_max": 250},
    }
    res = validate_scenario(scenario_from_dict(raw), device="cpu", warmup=False)
    real = res.real_records.requests
    assert int(real["preemptions"].sum()) > 0
    assert set(real["replica"].tolist()) == {0, 1}
    assert res.report["cluster"]["completed"] == {"real": 16, "sim": 16}
    assert res.report["run"]["iterations_real"] == len(res.iterations["kind"])


def test_validate_notes_a_profile_of_another_attention_kernel():
    """A profile that measured SDPA; an executor running FlashAttention gets a note saying so."""
    import types

    from vidur.store.profiles import load_profile
    from vidur.validate.run import attention_mismatch

    repo = Path(__file__).resolve().parents[1]
    prof = load_profile(repo / "vidur/data/profiles/h200/meta-llama/Meta-Llama-3-8B")
    assert attention_mismatch(types.SimpleNamespace(profile=prof, tp=1), "flash") is None  # measured flash itself
    prof.metadata["shards"]["1"]["attention_backend"] = "sdpa"
    est = types.SimpleNamespace(profile=prof, tp=1)
    note = attention_mismatch(est, "flash")
    assert note and "sdpa" in note and "flash" in note and "re-profile" in note
    assert attention_mismatch(est, "sdpa") is None
    assert attention_mismatch(types.SimpleNamespace(), "flash") is None  # roofline: nothing to compare


def test_rescore_rejects_malformed_iterations(tmp_path):
    from vidur.validate.rescore import read_iterations_csv

    p = tmp_path / "iterations.csv"
    p.write_text("replica,num_prefill\n0,1\n")
    with pytest.raises(VidurError, match="lacks column 'prefill_tokens'"):
        read_iterations_csv(p)
    with pytest.raises(VidurError, match="cannot read"):
        read_iterations_csv(tmp_path / "missing.csv")


class _PacedExecutor:
    """Runs the pace probe in ``ms`` milliseconds (two operators of half that)."""

    def __init__(self, ms):
        self.ms = ms

    def time_iteration(self, decodes, prefills, warmup, repeats):
        from vidur.profile.cpu import PACE

        assert len(decodes) == PACE[1] and set(decodes) == {PACE[2]} and not prefills
        return [{"a": self.ms / 2e3, "b": self.ms / 2e3}] * repeats


def test_host_pace_against_the_profile_is_reported_when_off():
    import types

    from vidur.store.profiles import load_profile
    from vidur.validate.pace import measure_pace, pace_note, pace_report, recorded_pace

    est = types.SimpleNamespace(profile=load_profile(ROOT / "vidur/data/profiles/cpu/vidur/tiny-llama"), tp=1)
    rec = recorded_pace(est)
    assert rec == est.profile.metadata["shards"]["1"]["executor"]["machine_speed"]["pace_ms_median"]
    assert recorded_pace(types.SimpleNamespace()) is None  # roofline: no profile, no pace
    slow = pace_report(rec, [measure_pace(_PacedExecutor(2 * rec)), measure_pace(_PacedExecutor(1.6 * rec))])
    assert slow["ratio"] == pytest.approx(1.8, abs=1e-3)
    note = pace_note(slow)
    assert "1.80x" in note and "slower" in note and "\n" not in note
    assert "faster" in pace_note(pace_report(rec, [0.5 * rec]))
    assert pace_note(pace_report(rec, [1.1 * rec])) is None and pace_note(pace_report(rec, [0.9 * rec])) is None
    assert pace_report(rec, [None]) is None and pace_report(None, [1.0]) is None


def test_validate_says_when_the_host_runs_at_another_pace(tmp_path, capsys, monkeypatch):
    import vidur.validate.run as R
    from vidur.store.profiles import load_profile

    meta = load_profile(ROOT / "vidur/data/profiles/cpu/vidur/tiny-llama").metadata
    recorded = meta["shards"]["1"]["executor"]["machine_speed"]["pace_ms_median"]
    monkeypatch.setattr(R, "measure_pace", lambda ex, calls=None: 3.0 * recorded)  # a host three times slower
    rc, out, err = _validate_json(["validate", _scenario(tmp_path), "--device", "cpu", "--no-plots"], capsys)
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["run"]["host_pace"]["ratio"] == 3.0
    assert [n for n in rep["notes"] if "pace probe 3.00x the recorded time (slower" in n], rep["notes"]
