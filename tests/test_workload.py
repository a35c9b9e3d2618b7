"""Arrival processes, length generators, request tables."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.errors import VidurError
from vidur.plugins import PluginHost
from vidur.workload import (
    ArrivalProcess,
    FixedLengths,
    GammaArrivals,
    LengthGenerator,
    LognormalLengths,
    PoissonArrivals,
    RequestTable,
    StaticArrivals,
    TraceArrivals,
    TraceLengths,
    UniformLengths,
    ZipfLengths,
    arrival_at_rate,
    build_requests,
    clip_lengths,
)
from vidur.workload import lengths as lengths_mod

# CI clones the repository with shared/ beside it: <repo root>/../shared
TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "traces"
CONV = TRACES / "splitwise_conv.csv"
CODE = TRACES / "splitwise_code.csv"
ARXIV = TRACES / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
needs_shared = pytest.mark.skipif(not CONV.exists(), reason="shared traces not found beside the repository")

ARRIVAL_NAMES = ["gamma", "poisson", "static", "trace"]
LENGTH_NAMES = ["fixed", "lognormal", "trace", "uniform", "zipf"]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def small_trace(tmp_path) -> Path:
    """Five requests: arrivals 10, 11, 13, 13, 18 (span 8 s, mean gap 2 s)."""
    p = tmp_path / "small.csv"
    p.write_text(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n"
        "10,100,5\n11,200,6\n13,300,7\n13,400,8\n18,500,9\n"
    )
    return p


# --- registration and conventions ------------------------------------------


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost(autoload=False)


def test_builtins_registered(host):
    assert set(ARRIVAL_NAMES) <= set(host.names("workload.arrival"))
    assert set(LENGTH_NAMES) <= set(host.names("workload.length"))
    assert host.get("workload.arrival", "poisson") is PoissonArrivals
    assert host.get("workload.length", "trace") is TraceLengths
    assert host.get("workload.arrival", "trace") is TraceArrivals


@pytest.mark.parametrize("kind,name", [("workload.arrival", n) for n in ARRIVAL_NAMES]
                         + [("workload.length", n) for n in LENGTH_NAMES])
def test_plugin_conventions(host, kind, name):
    cls = host.get(kind, name)
    base = ArrivalProcess if kind.endswith("arrival") else LengthGenerator
    assert issubclass(cls, base) and cls.name == name
    assert cls.kind == kind.split(".")[1]
    assert attrs.has(cls.Config)
    cfg = cls.Config()  # every field has a default
    if attrs.fields(cls.Config):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(cfg, attrs.fields(cls.Config)[0].name, 1)
    assert cls.__doc__


def test_unknown_name_lists_valid(host):
    with pytest.raises(VidurError, match="poisson"):
        host.get("workload.arrival", "poison")


# --- poisson ---------------------------------------------------------------


def test_poisson_rate_exact_and_gaps_not_truncated():
    qps = 4.0
    times = PoissonArrivals(PoissonArrivals.Config(qps=qps)).generate(rng(1), 200_000, None)
    assert times.dtype == np.float64 and len(times) == 200_000
    assert (np.diff(times) >= 0).all() and times[0] > 0
    rate = len(times) / times[-1]
    assert abs(rate / qps - 1) < 0.01
    gaps = np.diff(np.concatenate([[0.0], times]))
    # the original Vidur cut gaps at 3/qps; exponential gaps exceed it with probability e^-3
    beyond = np.mean(gaps > 3 / qps)
    assert abs(beyond / math.exp(-3) - 1) < 0.05
    assert gaps.max() > 8 / qps
    assert abs(gaps.std() * qps - 1) < 0.02  # exponential: std == mean


def test_poisson_duration_keeps_arrivals_before_duration():
    p = PoissonArrivals(PoissonArrivals.Config(qps=50.0))
    counts = []
    for seed in range(20):
        t = p.generate(rng(seed), None, 10.0)
        assert (t < 10.0).all() and (np.diff(t) >= 0).all()
        counts.append(len(t))
    assert abs(np.mean(counts) / 500 - 1) < 0.03


def test_arrival_at_rate_is_the_one_rate_mechanism():
    """Search and sweep set a rate in the raw mapping; a rate replaces a time_scale."""
    assert arrival_at_rate(None, 3) == {"name": "poisson", "qps": 3.0}
    assert arrival_at_rate("gamma", 2) == {"name": "gamma", "qps": 2.0}
    raw = {"name": "trace", "path": "t.csv", "time_scale": 2.0}
    assert arrival_at_rate(raw, 1) == {"name": "trace", "path": "t.csv", "qps": 1.0}
    assert raw["time_scale"] == 2.0  # the input is not changed
    assert not hasattr(PoissonArrivals, "with_qps")
    assert PoissonArrivals(PoissonArrivals.Config(qps=3.0)).mean_qps == 3.0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "fast", True])
def test_poisson_bad_qps(bad):
    with pytest.raises(VidurError, match=r"^arrival\.qps must be a number > 0, got "):
        PoissonArrivals.Config(qps=bad)


@pytest.mark.parametrize("args", [(None, None), (10, 1.0)])
def test_generate_needs_exactly_one(args):
    with pytest.raises(VidurError, match="exactly one of num_requests and duration"):
        PoissonArrivals().generate(rng(), *args)


def test_zero_requests():
    assert len(PoissonArrivals().generate(rng(), 0, None)) == 0
    with pytest.raises(VidurError, match="num_requests must be an integer >= 0"):
        PoissonArrivals().generate(rng(), -1, None)


# --- gamma -----------------------------------------------------------------


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0, 4.0])
def test_gamma_mean_and_cv(cv):
    qps = 2.0
    t = GammaArrivals(GammaArrivals.Config(qps=qps, cv=cv)).generate(rng(7), 200_000, None)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert abs(gaps.mean() * qps - 1) < 0.03
    assert abs(gaps.std() / gaps.mean() / cv - 1) < 0.05


def test_gamma_duration():
    g = GammaArrivals(GammaArrivals.Config(qps=10.0, cv=3.0))
    t = g.generate(rng(3), None, 100.0)
    assert (t < 100).all() and len(t) > 0
    assert g.mean_qps == 10.0
    with pytest.raises(VidurError, match="arrival.cv"):
        GammaArrivals.Config(cv=0)


# --- static ----------------------------------------------------------------


def test_static():
    s = StaticArrivals()
    assert (s.generate(rng(), 7, None) == 0).all()
    assert s.generate(rng(), 7, None).dtype == np.float64
    assert s.mean_qps is None
    with pytest.raises(VidurError, match="give num_requests"):
        s.generate(rng(), None, 5.0)


# --- trace arrivals --------------------------------------------------------


def test_trace_arrivals_replay_and_cycle(small_trace):
    tr = TraceArrivals(TraceArrivals.Config(path=str(small_trace)))
    assert tr.generate(rng(), 5, None).tolist() == [0, 1, 3, 3, 8]
    assert tr.generate(rng(), 3, None).tolist() == [0, 1, 3]
    assert tr.mean_qps == pytest.approx(0.5)
    # cycling continues one mean gap (2 s) after the last arrival: period 10 s
    t = tr.generate(rng(), 12, None)
    assert t.tolist() == [0, 1, 3, 3, 8, 10, 11, 13, 13, 18, 20, 21]
    d = tr.generate(rng(), None, 19.0)
    assert d.tolist() == [0, 1, 3, 3, 8, 10, 11, 13, 13, 18]
    assert tr.generate(rng(), None, 3.0).tolist() == [0, 1]


def test_trace_arrivals_on_short_error(small_trace):
    tr = TraceArrivals(TraceArrivals.Config(path=str(small_trace), on_short="error"))
    assert len(tr.generate(rng(), 5, None)) == 5
    with pytest.raises(VidurError, match="has 5 arrivals but 6 were asked for.*on_short: cycle"):
        tr.generate(rng(), 6, None)
    with pytest.raises(VidurError, match="ends at 8 s, before the duration of 100 s"):
        tr.generate(rng(), None, 100.0)
    assert tr.generate(rng(), None, 8.0).tolist() == [0, 1, 3, 3]


def test_trace_arrivals_scaling(small_trace):
    slow = TraceArrivals(TraceArrivals.Config(path=str(small_trace), time_scale=2.0))
    assert slow.generate(rng(), 6, None).tolist() == [0, 2, 6, 6, 16, 20]
    fast = TraceArrivals(TraceArrivals.Config(path=str(small_trace), qps=2.0))
    t = fast.generate(rng(), 5, None)
    assert (len(t) - 1) / t[-1] == pytest.approx(2.0)
    assert fast.mean_qps == pytest.approx(2.0)
    again = TraceArrivals(TraceArrivals.Config(**{k: v for k, v in arrival_at_rate(
        {"path": str(small_trace), "time_scale": 2.0}, 1.0).items()}))  # a rate drops time_scale
    assert again.config.time_scale == 1.0 and again.mean_qps == pytest.approx(1.0)
    with pytest.raises(VidurError, match="not both"):
        TraceArrivals(TraceArrivals.Config(path=str(small_trace), qps=2.0, time_scale=2.0))
    with pytest.raises(VidurError, match="arrival.path is required"):
        TraceArrivals()
    with pytest.raises(VidurError, match="arrival.on_short must be one of cycle, error"):
        TraceArrivals.Config(path="x", on_short="wrap")


def test_trace_single_row_and_same_times(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("arrived_at\n5\n")
    tr = TraceArrivals(TraceArrivals.Config(path=str(one)))
    assert tr.generate(rng(), 3, None).tolist() == [0, 0, 0]  # no rate: all at once
    assert tr.mean_qps is None
    with pytest.raises(VidurError, match="cannot fill"):
        tr.generate(rng(), None, 1.0)
    at2 = TraceArrivals(TraceArrivals.Config(path=str(one), qps=2.0))
    assert at2.generate(rng(), 3, None).tolist() == [0, 0.5, 1.0]
    same = tmp_path / "same.csv"
    same.write_text("arrived_at\n5\n5\n")
    with pytest.raises(VidurError, match="no rate to rescale"):
        TraceArrivals(TraceArrivals.Config(path=str(same), qps=1.0)).generate(rng(), 3, None)


# --- lengths ---------------------------------------------------------------


def test_fixed():
    p, o = FixedLengths(FixedLengths.Config(prompt_tokens=10, output_tokens=3)).generate(rng(), 4)
    assert p.tolist() == [10] * 4 and o.tolist() == [3] * 4
    assert p.dtype == np.int64 and o.dtype == np.int64


def test_uniform_ranges():
    cfg = UniformLengths.Config(prompt_min=5, prompt_max=9, output_min=1, output_max=2)
    p, o = UniformLengths(cfg).generate(rng(), 5000)
    assert set(p.tolist()) == {5, 6, 7, 8, 9} and set(o.tolist()) == {1, 2}
    with pytest.raises(VidurError, match=r"lengths.output_min \(3\) must be <= lengths.output_max \(2\)"):
        UniformLengths.Config(output_min=3, output_max=2)


def test_zipf_shape_and_ratio():
    cfg = ZipfLengths.Config(theta=1.2, min_total_tokens=100, max_total_tokens=1000, prefill_decode_ratio=9.0)
    p, o = ZipfLengths(cfg).generate(rng(5), 50_000)
    total = p + o
    assert total.min() >= 100 and total.max() <= 1000
    values, counts = np.unique(total, return_counts=True)
    assert values[np.argmax(counts)] == 100  # rank 1 is the most likely
    assert np.median(total) < 200
    assert abs(np.mean(o / total) - 0.1) < 0.01
    # theta = 0 is uniform over the range
    u, _ = ZipfLengths(ZipfLengths.Config(theta=0.0, min_total_tokens=10, max_total_tokens=19,
                                          prefill_decode_ratio=1.0)).generate(rng(), 20_000)
    assert abs(np.mean(u) - np.mean(np.arange(10, 20) - np.rint(np.arange(10, 20) / 2))) < 0.2


def test_zipf_scramble_moves_the_mode():
    cfg = ZipfLengths.Config(theta=1.5, min_total_tokens=100, max_total_tokens=10_000, scramble=True)
    p, o = ZipfLengths(cfg).generate(rng(2), 20_000)
    values, counts = np.unique(p + o, return_counts=True)
    assert values[np.argmax(counts)] != 100
    assert (p + o).min() >= 100 and (p + o).max() <= 10_000


def test_lognormal_defaults_match_fit():
    p, o = LognormalLengths().generate(rng(11), 200_000)
    assert abs(np.median(p) / 760.0 - 1) < 0.03
    assert abs(np.median(o) / 151.3 - 1) < 0.03
    assert abs(np.log(p).std() - 0.985) < 0.02
    lim = LognormalLengths(LognormalLengths.Config(max_tokens=4096)).generate(rng(11), 10_000)
    assert ((lim[0] + lim[1]) <= 4096).all()


@needs_shared
def test_lognormal_constants_are_the_fit_of_splitwise_conv():
    from vidur.workload.trace import read_lengths

    data = read_lengths(CONV)
    for arr, median, sigma in [
        (data.prompt, lengths_mod.SPLITWISE_CONV_PROMPT_MEDIAN, lengths_mod.SPLITWISE_CONV_PROMPT_SIGMA),
        (data.output, lengths_mod.SPLITWISE_CONV_OUTPUT_MEDIAN, lengths_mod.SPLITWISE_CONV_OUTPUT_SIGMA),
    ]:
        logs = np.log(arr)
        assert math.exp(logs.mean()) == pytest.approx(median, rel=1e-3)
        assert logs.std() == pytest.approx(sigma, abs=1e-3)


def test_trace_lengths_sequential_cycle_and_shuffle(small_trace):
    seq = TraceLengths(TraceLengths.Config(path=str(small_trace)))
    p, o = seq.generate(rng(), 7)
    assert p.tolist() == [100, 200, 300, 400, 500, 100, 200]
    assert o.tolist() == [5, 6, 7, 8, 9, 5, 6]
    shuf = TraceLengths(TraceLengths.Config(path=str(small_trace), shuffle=True))
    p, o = shuf.generate(rng(3), 10)
    assert sorted(p[:5].tolist()) == [100, 200, 300, 400, 500]  # each row once per pass
    assert sorted(p[5:].tolist()) == [100, 200, 300, 400, 500]
    assert ((o - 4) * 100 == p).all()  # rows stay paired
    assert not np.array_equal(p, seq.generate(rng(), 10)[0])
    strict = TraceLengths(TraceLengths.Config(path=str(small_trace), on_short="error"))
    assert len(strict.generate(rng(), 5)[0]) == 5
    with pytest.raises(VidurError, match="has 5 rows but 6 requests"):
        strict.generate(rng(), 6)
    with pytest.raises(VidurError, match="lengths.path is required"):
        TraceLengths()


def test_length_config_errors():
    with pytest.raises(VidurError, match=r"^lengths.max_tokens \(4\) must be at least lengths.min_output_tokens \+ 1"):
        FixedLengths.Config(max_tokens=4, min_output_tokens=4)
    with pytest.raises(VidurError, match="lengths.min_output_tokens must be an integer >= 1, got 0"):
        FixedLengths.Config(min_output_tokens=0)
    with pytest.raises(VidurError, match="lengths.prompt_tokens must be an integer >= 1"):
        FixedLengths.Config(prompt_tokens=1.5)


# --- the shared clipping ---------------------------------------------------


def test_clip_examples():
    p, o = clip_lengths(np.array([10, 5000, 0, 3]), np.array([0, 10, 2, 1000]), max_tokens=100, min_output_tokens=2)
    assert p.tolist() == [10, 98, 1, 3]
    assert o.tolist() == [2, 2, 2, 97]


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=0, max_size=50),
    min_out=st.integers(1, 50),
    extra=st.one_of(st.none(), st.integers(1, 10**5)),
)
def test_clip_invariants(pairs, min_out, extra):
    prompt = np.array([a for a, _ in pairs], dtype=np.int64)
    output = np.array([b for _, b in pairs], dtype=np.int64)
    max_tokens = None if extra is None else min_out + extra
    p, o = clip_lengths(prompt, output, max_tokens, min_out)
    assert p.dtype == np.int64 and o.dtype == np.int64 and len(p) == len(prompt)
    assert (p >= 1).all() and (o >= min_out).all()
    if max_tokens is not None:
        assert ((p + o) <= max_tokens).all()
    fine = (prompt >= 1) & (output >= min_out)
    if max_tokens is not None:
        fine &= prompt + output <= max_tokens
    assert (p[fine] == prompt[fine]).all() and (o[fine] == output[fine]).all()
    # the prompt is kept when it leaves room for min_out output tokens
    if max_tokens is not None:
        keep = (prompt >= 1) & (prompt <= max_tokens - min_out)
        assert (p[keep] == prompt[keep]).all()


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(["fixed", "uniform", "zipf", "lognormal"]),
    min_out=st.integers(1, 20),
    extra=st.one_of(st.none(), st.integers(1, 3000)),
    seed=st.integers(0, 2**32 - 1),
)
def test_generators_respect_limits(which, min_out, extra, seed):
    limits = dict(min_output_tokens=min_out, max_tokens=None if extra is None else min_out + extra)
    gen = {
        "fixed": lambda: FixedLengths(FixedLengths.Config(prompt_tokens=2000, output_tokens=1, **limits)),
        "uniform": lambda: UniformLengths(UniformLengths.Config(**limits)),
        "zipf": lambda: ZipfLengths(ZipfLengths.Config(**limits)),
        "lognormal": lambda: LognormalLengths(LognormalLengths.Config(**limits)),
    }[which]()
    p, o = gen.generate(rng(seed), 64)
    assert len(p) == len(o) == 64 and p.dtype == np.int64 and o.dtype == np.int64
    assert (p >= 1).all() and (o >= min_out).all()
    if limits["max_tokens"] is not None:
        assert ((p + o) <= limits["max_tokens"]).all()


# --- determinism -----------------------------------------------------------


def _arrivals(small_trace):
    return [
        PoissonArrivals(PoissonArrivals.Config(qps=3.0)),
        GammaArrivals(GammaArrivals.Config(qps=3.0, cv=2.0)),
        StaticArrivals(),
        TraceArrivals(TraceArrivals.Config(path=str(small_trace))),
    ]


def _lengths(small_trace):
    return [
        FixedLengths(),
        UniformLengths(),
        ZipfLengths(ZipfLengths.Config(scramble=True)),
        LognormalLengths(),
        TraceLengths(TraceLengths.Config(path=str(small_trace), shuffle=True)),
    ]


def test_same_seed_same_requests(small_trace):
    for arr in _arrivals(small_trace):
        for lens in _lengths(small_trace):
            a = build_requests(arr, lens, rng(42), num_requests=300)
            b = build_requests(arr, lens, rng(42), num_requests=300)
            for col in ("arrival", "prompt", "output"):
                assert np.array_equal(getattr(a, col), getattr(b, col)), (arr.name, lens.name, col)
    a = build_requests(_arrivals(small_trace)[0], LognormalLengths(), rng(1), num_requests=100)
    b = build_requests(_arrivals(small_trace)[0], LognormalLengths(), rng(2), num_requests=100)
    assert not np.array_equal(a.arrival, b.arrival) and not np.array_equal(a.prompt, b.prompt)


# --- build_requests / RequestTable / Workload ------------------------------


def test_build_requests_table():
    t = build_requests(PoissonArrivals(PoissonArrivals.Config(qps=10)), LognormalLengths(), rng(), num_requests=1000)
    assert isinstance(t, RequestTable) and len(t) == t.num_requests == 1000
    assert t.arrival.dtype == np.float64 and t.prompt.dtype == np.int64 and t.output.dtype == np.int64
    assert (np.diff(t.arrival) >= 0).all() and (t.prompt >= 1).all() and (t.output >= 1).all()


def test_build_requests_duration():
    t = build_requests(PoissonArrivals(PoissonArrivals.Config(qps=10)), FixedLengths(), rng(4), duration=60.0)
    assert 450 < len(t) < 750 and (t.arrival < 60.0).all()
    assert len(t.prompt) == len(t)


@pytest.mark.parametrize("kw", [{}, {"num_requests": 5, "duration": 1.0}])
def test_build_requests_needs_exactly_one(kw):
    with pytest.raises(VidurError, match="exactly one of num_requests and duration"):
        build_requests(PoissonArrivals(), FixedLengths(), rng(), **kw)


def test_build_requests_bad_values():
    with pytest.raises(VidurError, match="duration must be"):
        build_requests(PoissonArrivals(), FixedLengths(), rng(), duration=0)
    with pytest.raises(VidurError, match="numpy.random.Generator"):
        build_requests(PoissonArrivals(), FixedLengths(), 42, num_requests=3)


def test_lengths_do_not_depend_on_the_arrival_process():
    lens = LognormalLengths()
    a = build_requests(PoissonArrivals(PoissonArrivals.Config(qps=1)), lens, rng(9), num_requests=200)
    b = build_requests(GammaArrivals(GammaArrivals.Config(qps=7, cv=3)), lens, rng(9), num_requests=200)
    assert np.array_equal(a.prompt, b.prompt) and np.array_equal(a.output, b.output)
    assert not np.array_equal(a.arrival, b.arrival)


def test_request_table_validates():
    with pytest.raises(VidurError, match="sorted"):
        RequestTable(np.array([1.0, 0.5]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(VidurError, match="differ in length"):
        RequestTable(np.array([0.0]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(VidurError, match="int64"):
        RequestTable(np.array([0.0]), np.array([1.0]), np.array([1]))


def test_build_requests_helper():
    t = build_requests(PoissonArrivals(PoissonArrivals.Config(qps=2)), FixedLengths(), rng(), num_requests=10)
    assert len(t) == 10


# --- the real shared traces ------------------------------------------------


@needs_shared
def test_real_traces():
    conv = TraceArrivals(TraceArrivals.Config(path=str(CONV)))
    t = conv.generate(rng(), 19_366, None)
    assert t[0] == 0 and (np.diff(t) >= 0).all()
    assert conv.mean_qps == pytest.approx(5.53, rel=0.01)
    longer = conv.generate(rng(), 50_000, None)  # cycles instead of crashing
    assert len(longer) == 50_000 and (np.diff(longer) >= 0).all()
    assert np.array_equal(longer[:19_366], t)
    at = TraceArrivals(TraceArrivals.Config(path=str(CODE), qps=8.0)).generate(rng(), 8_819, None)
    assert (len(at) - 1) / at[-1] == pytest.approx(8.0)
    p, o = TraceLengths(TraceLengths.Config(path=str(ARXIV), max_tokens=4096)).generate(rng(), 28_257)
    assert ((p + o) <= 4096).all() and (o >= 1).all()
    req = build_requests(conv, TraceLengths(TraceLengths.Config(path=str(CONV))), rng(), num_requests=100)
    assert req.prompt[:2].tolist() == [374, 396] and req.output[:2].tolist() == [44, 109]
    with pytest.raises(VidurError, match="no column 'arrived_at'.*'num_prefill_tokens'"):
        TraceArrivals(TraceArrivals.Config(path=str(ARXIV)))
