"""``vidur estimate``, ``vidur fit`` and ``vidur profile`` on the command line (in-process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vidur.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "vidur" / "data" / "profiles" / "cpu" / "vidur" / "tiny-llama"
TINY_ARGS = ["estimate", "--model", "vidur/tiny-llama", "--device", "cpu", "--tp", "1"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_CACHE_DIR", str(tmp_path / "cache"))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_text_breakdown(capsys):
    code, out, err = run(capsys, *TINY_ARGS, "--prefill", "256", "--prefill", "64:512", "--decode", "16:300")
    assert code == 0, err
    assert "estimator: profile" in out
    for op in ("qkv_proj", "gate_up_proj", "attn_prefill", "attn_decode", "gpu_ms", "total_ms", "cpu overhead"):
        assert op in out
    assert "2 prefill chunk(s) (320 tokens), 16 decode(s)" in out


def test_estimate_json(capsys):
    code, out, _ = run(capsys, *TINY_ARGS, "--prefill", "256", "--decode", "16:300", "--json")
    assert code == 0
    d = json.loads(out)
    assert {"gpu_ms", "total_ms", "estimator", "ops"} <= set(d)
    assert d["estimator"] == "profile"
    assert sum(d["ops"].values()) == pytest.approx(d["gpu_ms"], rel=1e-6)
    assert d["total_ms"] >= d["gpu_ms"] > 0


def test_estimate_eager_mode(capsys):
    code, out, _ = run(capsys, *TINY_ARGS, "--decode", "4:100", "--engine-mode", "eager", "--json")
    assert code == 0 and json.loads(out)["estimator"] == "profile"


def test_estimate_falls_back_to_roofline_and_says_so(capsys):
    code, out, _ = run(
        capsys, "estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h100", "--tp", "1",
        "--prefill", "2048", "--prefill", "512:2048", "--decode", "128:1024",
    )
    assert code == 0
    assert "roofline" in out and "no profile of meta-llama/Meta-Llama-3-8B on h100" in out
    code, out, _ = run(
        capsys, "estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h100", "--decode", "8:100", "--json"
    )
    assert json.loads(out)["estimator"] == "roofline"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["estimate", "--model", "nope/none", "--device", "cpu", "--prefill", "8"], "unknown model"),
        (["estimate", "--model", "vidur/tiny-llama", "--device", "h900", "--prefill", "8"], "unknown device"),
        (["estimate", "--model", "vidur/tiny-llama", "--device", "cuda", "--prefill", "8"], "not 'cuda'"),
        (["estimate", "--model", "vidur/tiny-llama", "--device", "cpu", "--prefill", "abc"], "--prefill 'abc'"),
        (["estimate", "--model", "vidur/tiny-llama", "--device", "cpu", "--decode", "8"], "BATCH:CONTEXT"),
        (["estimate", "--model", "vidur/tiny-llama", "--device", "cpu"], "nothing to price"),
        (["estimate", "--model", "vidur/tiny-llama", "--device", "cpu", "--tp", "3", "--prefill", "8"], "tensor_parallel=3"),
        (
            ["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--device", "cpu", "--profile", str(TINY), "--prefill", "8"],
            "measured for vidur/tiny-llama",
        ),
        (["fit", "/nonexistent/profile"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_profile_is_one_line(capsys, tmp_path):
    p = tmp_path / "p"
    shutil.copytree(TINY, p)
    f = p / "tp1.csv"
    f.write_text(f.read_text()[:5000])
    code, _, err = run(capsys, *TINY_ARGS, "--profile", str(p), "--prefill", "8")
    assert code == 2 and "truncated" in err and err.count("\n") == 1


def test_profile_cuda_without_gpu_is_one_line(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run(capsys, "profile", "--model", "vidur/tiny-llama", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err and err.count("\n") == 1


def test_fit_prints_holdout_table(capsys, tmp_path):
    p = tmp_path / "p"
    shutil.copytree(TINY, p)
    code, out, _ = run(capsys, "fit", str(p))
    assert code == 0
    assert "held-out accuracy" in out and "qkv_proj" in out and "MAPE" in out
    code, out, _ = run(capsys, "fit", str(p), "--json", "--holdout", "0")
    d = json.loads(out)
    assert d["fit_seconds"] < 10 and "holdout" not in d


def test_profile_command_small_grid(capsys, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "prof"
    code, text, err = run(
        capsys, "profile", "--model", "vidur/tiny-llama", "--device", "cpu", "--tp", "1", "--grid", "test",
        "--max-tokens", "64", "--repeats", "1", "--out", str(out), "--quiet",
    )
    assert code == 0, err
    assert "complete shards: tp 1" in text and "fitted" in text
    assert (out / "fitted.json").is_file()
    code, text, _ = run(capsys, *TINY_ARGS, "--profile", str(out), "--prefill", "32", "--json")
    assert code == 0 and json.loads(text)["estimator"] == "profile"


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm_v1", "sglang"])
def test_estimate_scheduler_prices_a_decode_step_as_that_run_does(capsys, tmp_path, scheduler):
    """``--scheduler`` prices as a run with that policy: the estimator ``auto`` picks for the engine
    it models (the H200 profile of vidur's executor for sarathi, the roofline for vLLM V1 and
    SGLang), its CUDA-graph padding and its host overlap. Every single-request decode step of a
    short run on the H200 lasts exactly what ``vidur estimate --scheduler`` prices for it."""
    from vidur.engine.run_scenario import run_scenario
    from vidur.scenario import load_scenario

    path = tmp_path / "scenario.yaml"
    path.write_text(
        "model: meta-llama/Meta-Llama-3-8B\n"
        "cluster: {device: h200}\n"
        f"replica_scheduler: {{name: {scheduler}}}\n"
        "workload: {num_requests: 40, arrival: {name: poisson, qps: 10}, lengths: {name: lognormal, max_tokens: 4096}}\n"
        "metrics: {batch_log: full}\n"
        "simulation: {progress: false}\n"
    )
    sc = load_scenario(path)
    result, _ = run_scenario(sc, None)
    b = result.records.batches
    single = (b["num_decode"] == 1) & (b["num_prefill"] == 0)
    assert single.sum() > 20
    idx = np.flatnonzero(single)[:: max(1, int(single.sum()) // 8)]
    for i in idx:
        ctx = int(b["decode_kv"][i]) - 1
        code, out, err = run(capsys, "estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h200",
                             "--decode", f"1:{ctx}", "--scheduler", scheduler, "--json")
        assert code == 0, err
        d = json.loads(out)
        assert d["estimator_detail"] == result.estimator
        assert d["host_overlap"] is (scheduler != "sarathi")
        assert d["total_ms"] / 1e3 == pytest.approx(float(b["end"][i] - b["start"][i]), rel=1e-9)
    if scheduler == "sarathi":
        return
    # the roofline prices a decode batch by its size and summed context: steps of 3, 5 and 7 requests
    # (padded to CUDA-graph sizes 4 and 8 by both engines) priced from one split of that sum
    for n in (3, 5, 7):
        rows = np.flatnonzero((b["num_decode"] == n) & (b["num_prefill"] == 0))
        assert len(rows), n
        i = rows[0]
        kv = int(b["decode_kv"][i]) - n  # the contexts' sum before this step's token
        c = kv // n
        code, out, err = run(capsys, "estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h200",
                             "--decode", f"{n - 1}:{c}", "--decode", f"1:{kv - c * (n - 1)}",
                             "--scheduler", scheduler, "--json")
        assert code == 0, err
        assert json.loads(out)["total_ms"] / 1e3 == pytest.approx(float(b["end"][i] - b["start"][i]), rel=1e-9)


def test_estimate_scheduler_overlaps_host_work_on_single_stage_replicas_only(capsys):
    """The event loop overlaps an engine's host work with the GPU only at pp=1 (a pipelined batch
    adds it to its first stage), and so does ``--scheduler``'s total."""
    args = ["estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h200", "--decode", "8:1024",
            "--scheduler", "vllm_v1", "--json"]
    code, out, err = run(capsys, *args, "--pp", "2")
    assert code == 0, err
    d = json.loads(out)
    assert d["host_overlap"] is False
    assert d["total_ms"] == pytest.approx(d["gpu_ms"] + d["launch_stall_ms"] + d["cpu_overhead_ms"], rel=1e-12)
    code, out, _ = run(capsys, *args)
    d = json.loads(out)
    assert d["host_overlap"] is True
    assert d["total_ms"] == pytest.approx(max(d["gpu_ms"] + d["launch_stall_ms"], d["cpu_overhead_ms"]), rel=1e-12)


def test_estimate_scheduler_unknown_is_one_line(capsys):
    code, out, err = run(capsys, *TINY_ARGS, "--decode", "4:100", "--scheduler", "no_such_policy")
    assert code != 0
    assert "no_such_policy" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_estimate_absurd_decode_batch_is_priced_at_once_with_warnings(capsys):
    """``--decode BATCH:CONTEXT`` adds the batch in constant time: a trillion decodes do not
    start a trillion-step loop; the capacity warnings say the iteration cannot run."""
    code, out, err = run(capsys, "estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h100",
                         "--decode", "1000000000000:10", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["batch"]["num_decode"] == 10**12 and d["batch"]["decode_kv"] == 11 * 10**12
    assert any("has room for" in w for w in d["warnings"])


def test_add_decodes_equals_repeated_add_decode():
    from vidur.estimate.base import BatchShape

    a, b = BatchShape(), BatchShape()
    a.add_prefill(100, 20)
    b.add_prefill(100, 20)
    for _ in range(7):
        a.add_decode(300)
    b.add_decodes(7, 300)
    assert repr(a) == repr(b)
