"""Hypothesis strategies for vidur inputs: requests, traces and workloads.

>>> from hypothesis import given
>>> from vidur.testing.strategies import traces
>>> @given(trace=traces(max_prompt=64))
... def test_my_policy(trace, replica_harness):
...     h = replica_harness(MyScheduler)
...     h.add_trace(trace)
...     h.run()
...     assert not h.unfinished

Lengths are small by default so that simulations of drawn inputs take
milliseconds; raise the bounds when a property needs long requests.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import attrs
from hypothesis import strategies as st

from vidur.entities.request import Request

__all__ = [
    "Trace",
    "lengths",
    "requests",
    "traces",
    "arrival_sections",
    "length_sections",
    "workloads",
]


def lengths(
    *, min_prompt: int = 1, max_prompt: int = 64, min_output: int = 1, max_output: int = 32
) -> st.SearchStrategy[tuple[int, int]]:
    """``(prompt tokens, output tokens)`` pairs, each at least 1."""
    if not 1 <= min_prompt <= max_prompt or not 1 <= min_output <= max_output:
        raise ValueError("lengths need 1 <= min <= max for prompt and output")
    return st.tuples(
        st.integers(min_value=min_prompt, max_value=max_prompt),
        st.integers(min_value=min_output, max_value=max_output),
    )


def requests(
    *,
    max_prompt: int = 64,
    max_output: int = 32,
    max_arrival: float = 0.0,
    id: int = 0,
) -> st.SearchStrategy[Request]:
    """Fresh :class:`~vidur.entities.request.Request` objects (id ``id``,
    arrival in ``[0, max_arrival]``), untouched by any scheduler."""

    def build(pair: tuple[int, int], arrival: float) -> Request:
        return Request(id, arrival, pair[0], pair[1])

    arrival = st.just(0.0) if max_arrival <= 0 else st.floats(0.0, max_arrival, allow_nan=False)
    return st.builds(build, lengths(max_prompt=max_prompt, max_output=max_output), arrival)


@attrs.frozen
class Trace:
    """A request trace: sorted ``arrivals`` (seconds) and per-request lengths.

    Iterating yields ``(arrival, prompt, output)`` rows, which is what
    :meth:`vidur.testing.harness.ReplicaHarness.add_trace` takes.
    """

    arrivals: tuple[float, ...]
    prompts: tuple[int, ...]
    outputs: tuple[int, ...]

    def __attrs_post_init__(self) -> None:
        n = len(self.arrivals)
        if len(self.prompts) != n or len(self.outputs) != n:
            raise ValueError("Trace columns differ in length")
        if any(b < a for a, b in zip(self.arrivals, self.arrivals[1:])):
            raise ValueError("Trace arrivals must be sorted")

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[float, int, int]]) -> "Trace":
        """Build from ``(arrival, prompt, output)`` rows."""
        if not rows:
            return cls((), (), ())
        a, p, o = zip(*rows)
        return cls(tuple(float(x) for x in a), tuple(int(x) for x in p), tuple(int(x) for x in o))

    def __len__(self) -> int:
        return len(self.arrivals)

    def __iter__(self) -> Iterator[tuple[float, int, int]]:
        return iter(zip(self.arrivals, self.prompts, self.outputs))

    @property
    def last_arrival(self) -> float:
        return self.arrivals[-1] if self.arrivals else 0.0

    def make_requests(self) -> list[Request]:
        """Fresh requests with ids 0..n-1."""
        return [Request(i, a, p, o) for i, (a, p, o) in enumerate(self)]

    def to_table(self):
        """A :class:`vidur.workload.workload.RequestTable`, for ``Simulation(..., requests=...)``."""
        import numpy as np

        from vidur.workload.workload import RequestTable

        return RequestTable(
            arrival=np.array(self.arrivals, dtype=np.float64),
            prompt=np.array(self.prompts, dtype=np.int64),
            output=np.array(self.outputs, dtype=np.int64),
        )


@st.composite
def traces(
    draw,
    *,
    min_size: int = 1,
    max_size: int = 25,
    max_gap: float = 0.05,
    burst_probability: float = 0.3,
    min_prompt: int = 1,
    max_prompt: int = 40,
    min_output: int = 1,
    max_output: int = 30,
) -> Trace:
    """Traces of ``min_size..max_size`` requests. Gaps between arrivals are in
    ``[0, max_gap]`` seconds; about ``burst_probability`` of them are exactly 0
    (simultaneous arrivals, the case that exposes ordering bugs)."""
    pair = lengths(min_prompt=min_prompt, max_prompt=max_prompt, min_output=min_output, max_output=max_output)
    gap = st.floats(min_value=0.0, max_value=max_gap, allow_nan=False, allow_infinity=False)
    if burst_probability > 0:
        weight = max(1, round(burst_probability * 10))
        gap = st.one_of(*([st.just(0.0)] * weight), *([gap] * (10 - weight)))
    rows = draw(st.lists(st.tuples(gap, pair), min_size=min_size, max_size=max_size))
    t, out = 0.0, []
    for i, (g, (p, o)) in enumerate(rows):
        t = t + g if i else g
        out.append((t, p, o))
    return Trace.from_rows(out)


def arrival_sections(*, max_qps: float = 50.0) -> st.SearchStrategy[dict]:
    """``workload.arrival`` sections for the built-in arrival processes
    (poisson, gamma, static) with valid parameters."""
    qps = st.floats(min_value=0.1, max_value=max_qps, allow_nan=False, allow_infinity=False)
    cv = st.floats(min_value=0.25, max_value=4.0, allow_nan=False, allow_infinity=False)
    return st.one_of(
        st.builds(lambda q: {"name": "poisson", "qps": q}, qps),
        st.builds(lambda q, c: {"name": "gamma", "qps": q, "cv": c}, qps, cv),
        st.just({"name": "static"}),
    )


def length_sections(*, max_tokens: int = 512) -> st.SearchStrategy[dict]:
    """``workload.lengths`` sections for the built-in length generators
    (fixed, uniform, zipf, lognormal), every request at most ``max_tokens``."""
    if max_tokens < 4:
        raise ValueError("length_sections needs max_tokens >= 4")
    tok = st.integers(min_value=1, max_value=max_tokens // 2)

    @st.composite
    def uniform(draw):
        a, b, c, d = draw(tok), draw(tok), draw(tok), draw(tok)
        return {"name": "uniform", "prompt_min": min(a, b), "prompt_max": max(a, b),
                "output_min": min(c, d), "output_max": max(c, d), "max_tokens": max_tokens}

    @st.composite
    def zipf(draw):
        lo = draw(st.integers(min_value=2, max_value=max_tokens))
        hi = draw(st.integers(min_value=lo, max_value=max_tokens))
        return {"name": "zipf", "theta": draw(st.floats(0.0, 2.0)), "min_total_tokens": lo,
                "max_total_tokens": hi, "prefill_decode_ratio": draw(st.floats(0.5, 40.0)),
                "max_tokens": max_tokens}

    fixed = st.builds(
        lambda p, o: {"name": "fixed", "prompt_tokens": p, "output_tokens": o, "max_tokens": max_tokens}, tok, tok
    )
    lognormal = st.builds(
        lambda pm, om, s: {"name": "lognormal", "prompt_median": pm, "output_median": om,
                           "prompt_sigma": s, "output_sigma": s, "max_tokens": max_tokens},
        st.floats(1.0, max_tokens / 2), st.floats(1.0, max_tokens / 2), st.floats(0.0, 1.5),
    )
    return st.one_of(fixed, uniform(), zipf(), lognormal)


@st.composite
def workloads(draw, *, max_requests: int = 50, max_qps: float = 50.0, max_tokens: int = 512) -> dict:
    """Scenario ``workload`` sections: ``num_requests`` (1..max_requests), an
    arrival section and a lengths section, all valid for the built-ins.

    Use as ``scenario_from_dict({"model": ..., "workload": draw(workloads())})``.
    """
    return {
        "num_requests": draw(st.integers(min_value=1, max_value=max_requests)),
        "arrival": draw(arrival_sections(max_qps=max_qps)),
        "lengths": draw(length_sections(max_tokens=max_tokens)),
    }
