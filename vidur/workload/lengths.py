"""Built-in length generators: fixed, uniform, zipf, lognormal, trace.

All of them share two limits, applied in one place (:func:`clip_lengths`):

- ``min_output_tokens`` (default 1): every request produces at least this
  many output tokens.
- ``max_tokens`` (default None = no limit): prompt + output of a request is
  at most this (think: the model's context length). Like a serving engine,
  the prompt is kept (cut to ``max_tokens - min_output_tokens`` only if it is
  longer than that) and the output is cut to fit the rest.

Every prompt has at least one token.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.workload import _checks as ck
from vidur.workload.base import LengthGenerator
from vidur.workload.trace import read_lengths

L = ck.LENGTHS
_BIG = 1 << 40  # cap for samples from unbounded distributions before casting to int64


def clip_lengths(
    prompt: np.ndarray, output: np.ndarray, max_tokens: int | None = None, min_output_tokens: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the shared limits; returns new int64 arrays.

    After it: ``prompt >= 1``, ``output >= min_output_tokens`` and, if
    ``max_tokens`` is set, ``prompt + output <= max_tokens``. Requests already
    within the limits are unchanged.
    """
    if min_output_tokens < 1:
        raise VidurError(f"{L}.min_output_tokens must be an integer >= 1, got {min_output_tokens!r}")
    prompt = np.maximum(np.asarray(prompt, dtype=np.int64), 1)
    output = np.maximum(np.asarray(output, dtype=np.int64), min_output_tokens)
    if max_tokens is not None:
        if max_tokens < min_output_tokens + 1:
            raise VidurError(
                f"{L}.max_tokens ({max_tokens}) must be at least {L}.min_output_tokens + 1 "
                f"({min_output_tokens + 1}) to fit one prompt token"
            )
        np.minimum(prompt, max_tokens - min_output_tokens, out=prompt)
        np.minimum(output, max_tokens - prompt, out=output)
    return prompt, output


@attrs.frozen(kw_only=True)
class LengthLimits:
    """The limits every built-in length generator's ``Config`` inherits."""

    max_tokens: int | None = attrs.field(default=None, validator=ck.optional_int_at_least(L, 2))
    min_output_tokens: int = attrs.field(default=1, validator=ck.int_at_least(L, 1))

    def __attrs_post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < self.min_output_tokens + 1:
            raise VidurError(
                f"{L}.max_tokens ({self.max_tokens}) must be at least {L}.min_output_tokens + 1 "
                f"({self.min_output_tokens + 1}) to fit one prompt token"
            )


class BoundedLengthGenerator(LengthGenerator):
    """A length generator whose ``Config`` extends :class:`LengthLimits`.

    Subclasses implement :meth:`sample` (raw lengths); :meth:`generate` adds
    the shared clipping. Third-party generators may subclass it too.
    """

    def __init__(self, config=None):
        super().__init__(config if config is not None else self.Config())

    def sample(self, rng: np.random.Generator, num_requests: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (prompt, output) arrays of length ``num_requests``, before clipping."""
        raise NotImplementedError

    def generate(self, rng: np.random.Generator, num_requests: int) -> tuple[np.ndarray, np.ndarray]:
        n = ck.check_count(num_requests)
        prompt, output = self.sample(rng, n)
        if len(prompt) != n or len(output) != n:
            raise VidurError(
                f"length generator {self.name!r} returned {len(prompt)} prompts and {len(output)} "
                f"outputs for {n} requests; fix its sample()"
            )
        cap, floor = self.config.max_tokens, self.config.min_output_tokens
        prompt, output = clip_lengths(prompt, output, None, floor)
        #: how many requests ``max_tokens`` cut (prompt + output longer): the run says so
        self.clipped = 0 if cap is None else int(np.count_nonzero(prompt + output > cap))
        return clip_lengths(prompt, output, cap, floor) if self.clipped else (prompt, output)


def _rounded(x: np.ndarray) -> np.ndarray:
    return np.rint(np.minimum(x, _BIG)).astype(np.int64)


class FixedLengths(BoundedLengthGenerator):
    """Every request has the same prompt and output length."""

    name: ClassVar[str] = "fixed"

    @attrs.frozen(kw_only=True)
    class Config(LengthLimits):
        prompt_tokens: int = attrs.field(default=1024, validator=ck.int_at_least(L, 1))
        output_tokens: int = attrs.field(default=256, validator=ck.int_at_least(L, 1))

    def sample(self, rng, num_requests):
        return (
            np.full(num_requests, self.config.prompt_tokens, dtype=np.int64),
            np.full(num_requests, self.config.output_tokens, dtype=np.int64),
        )


class UniformLengths(BoundedLengthGenerator):
    """Prompt and output lengths drawn independently and uniformly from inclusive ranges."""

    name: ClassVar[str] = "uniform"

    @attrs.frozen(kw_only=True)
    class Config(LengthLimits):
        prompt_min: int = attrs.field(default=64, validator=ck.int_at_least(L, 1))
        prompt_max: int = attrs.field(default=2048, validator=ck.int_at_least(L, 1))
        output_min: int = attrs.field(default=16, validator=ck.int_at_least(L, 1))
        output_max: int = attrs.field(default=512, validator=ck.int_at_least(L, 1))

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            for what in ("prompt", "output"):
                lo, hi = getattr(self, f"{what}_min"), getattr(self, f"{what}_max")
                if lo > hi:
                    raise VidurError(f"{L}.{what}_min ({lo}) must be <= {L}.{what}_max ({hi})")

    def sample(self, rng, num_requests):
        c = self.config
        prompt = rng.integers(int(c.prompt_min), int(c.prompt_max), size=num_requests, endpoint=True)
        output = rng.integers(int(c.output_min), int(c.output_max), size=num_requests, endpoint=True)
        return prompt.astype(np.int64), output.astype(np.int64)


class ZipfLengths(BoundedLengthGenerator):
    """Total tokens from a bounded Zipf law, split by a prefill:decode ratio.

    Total length ``min_total_tokens + k - 1`` has probability proportional to
    ``k ** -theta`` for ``k = 1 .. max_total_tokens - min_total_tokens + 1``
    (short requests most common; ``theta = 0`` is uniform). With ``scramble``
    the probabilities are shuffled over the lengths (one permutation per
    call, drawn from the rng). Output is ``round(total / (1 + ratio))``, at
    least 1; the prompt is the rest.
    """

    name: ClassVar[str] = "zipf"

    @attrs.frozen(kw_only=True)
    class Config(LengthLimits):
        theta: float = attrs.field(default=0.6, validator=ck.non_negative(L))
        min_total_tokens: int = attrs.field(default=1024, validator=ck.int_at_least(L, 2))
        max_total_tokens: int = attrs.field(default=4096, validator=ck.int_at_least(L, 2))
        prefill_decode_ratio: float = attrs.field(default=20.0, validator=ck.positive(L))
        scramble: bool = attrs.field(default=False, validator=ck.is_bool(L))

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            lo, hi = self.min_total_tokens, self.max_total_tokens
            if lo > hi:
                raise VidurError(f"{L}.min_total_tokens ({lo}) must be <= {L}.max_total_tokens ({hi})")
            if hi - lo >= 50_000_000:
                raise VidurError(f"{L}.max_total_tokens - {L}.min_total_tokens must be < 50,000,000")

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        ranks = np.arange(1, int(c.max_total_tokens) - int(c.min_total_tokens) + 2, dtype=np.float64)
        cdf = np.cumsum(ranks ** -float(c.theta))
        self._cdf = cdf / cdf[-1]

    def sample(self, rng, num_requests):
        c = self.config
        k = np.searchsorted(self._cdf, rng.random(num_requests), side="right")
        np.minimum(k, len(self._cdf) - 1, out=k)
        if c.scramble:
            k = rng.permutation(len(self._cdf))[k]
        total = int(c.min_total_tokens) + k.astype(np.int64)
        output = np.maximum(_rounded(total / (1.0 + float(c.prefill_decode_ratio))), 1)
        prompt = np.maximum(total - output, 1)
        return prompt, output


# Fitted to /work/shared/data/traces/splitwise_conv.csv (the Azure LLM inference
# conversation trace 2023 as published with microsoft/vidur, 19,366 requests):
# maximum-likelihood lognormal fit, i.e. median = exp(mean(log x)) and
# sigma = std(log x). Prompt: median 760.0, sigma 0.985 (trace median 1,020,
# mean 1,155, max 14,050). Output: median 151.3, sigma 0.859 (trace median 129,
# mean 211, max 1,000). Prompt and output are almost uncorrelated there
# (correlation of logs 0.087), so they are drawn independently.
SPLITWISE_CONV_PROMPT_MEDIAN = 760.0
SPLITWISE_CONV_PROMPT_SIGMA = 0.985
SPLITWISE_CONV_OUTPUT_MEDIAN = 151.3
SPLITWISE_CONV_OUTPUT_SIGMA = 0.859


class LognormalLengths(BoundedLengthGenerator):
    """Independent lognormal prompt and output lengths given by median and sigma (of the log).

    The defaults are fitted to the Splitwise conversation trace; set
    ``max_tokens`` to the model's context length, since the tail is unbounded.
    """

    name: ClassVar[str] = "lognormal"

    @attrs.frozen(kw_only=True)
    class Config(LengthLimits):
        prompt_median: float = attrs.field(default=SPLITWISE_CONV_PROMPT_MEDIAN, validator=ck.positive(L))
        prompt_sigma: float = attrs.field(default=SPLITWISE_CONV_PROMPT_SIGMA, validator=ck.non_negative(L))
        output_median: float = attrs.field(default=SPLITWISE_CONV_OUTPUT_MEDIAN, validator=ck.positive(L))
        output_sigma: float = attrs.field(default=SPLITWISE_CONV_OUTPUT_SIGMA, validator=ck.non_negative(L))

    def sample(self, rng, num_requests):
        c = self.config
        prompt = rng.lognormal(math.log(c.prompt_median), c.prompt_sigma, size=num_requests)
        output = rng.lognormal(math.log(c.output_median), c.output_sigma, size=num_requests)
        return _rounded(prompt), _rounded(output)


class TraceLengths(BoundedLengthGenerator):
    """Prompt/output lengths from the ``num_prefill_tokens``/``num_decode_tokens`` columns of a CSV.

    Rows are used in file order (so a trace used for both arrivals and
    lengths stays paired), or with ``shuffle`` in a random order drawn from
    the rng, each row once per pass. Asked for more requests than rows,
    ``on_short: cycle`` starts another pass; ``on_short: error`` refuses.

    A trace with block hashes (a ``hash_ids`` column, or a Mooncake
    ``.jsonl`` file) also gives the requests' content, one id per
    ``hash_block_size`` prompt tokens (Mooncake: 512), so prefix caching
    finds what they share; prompt tokens past the last id are the
    request's own.
    """

    name: ClassVar[str] = "trace"

    @attrs.frozen(kw_only=True)
    class Config(LengthLimits):
        path: str = attrs.field(default="", validator=ck.is_str(L))
        shuffle: bool = attrs.field(default=False, validator=ck.is_bool(L))
        on_short: str = attrs.field(default="cycle", validator=ck.one_of(L, ("cycle", "error")))
        hash_block_size: int = attrs.field(default=512, validator=ck.int_at_least(L, 1))

    def __init__(self, config=None):
        super().__init__(config)
        if not self.config.path:
            raise VidurError(f"{L}.path is required for the trace length generator; set it to a CSV "
                             "with num_prefill_tokens and num_decode_tokens columns")
        read_lengths(self.config.path)  # fail early on a bad file

    def build(self, rng, arrivals, num_requests):
        """The request table with content when the trace has block hashes, else None."""
        from vidur.workload.trace import has_hashes
        from vidur.workload.workload import RequestTable

        if not has_hashes(self.config.path):
            return None
        n = len(arrivals)
        idx = self._rows(rng, n)
        data = read_lengths(self.config.path)
        prompt, output = clip_lengths(data.prompt[idx], data.output[idx], self.config.max_tokens,
                                      self.config.min_output_tokens)
        content = trace_content(self.config.path, idx, prompt, int(self.config.hash_block_size))
        return RequestTable(np.asarray(arrivals, dtype=np.float64), prompt, output, content)

    def _rows(self, rng, num_requests) -> np.ndarray:
        """Which trace row each request takes (file order, or shuffled passes)."""
        c = self.config
        rows = len(read_lengths(c.path))
        if num_requests > rows and c.on_short == "error":
            raise VidurError(
                f"trace {c.path} has {rows} rows but {num_requests} requests were asked for; "
                f"set {L}.on_short: cycle or ask for fewer requests"
            )
        passes = -(-num_requests // rows)
        if c.shuffle:
            order = np.tile(np.arange(rows), (passes, 1))
            return rng.permuted(order, axis=1).ravel()[:num_requests]
        return np.arange(num_requests) % rows

    def sample(self, rng, num_requests):
        data = read_lengths(self.config.path)
        idx = self._rows(rng, num_requests)
        return data.prompt[idx], data.output[idx]


def trace_content(path, rows: np.ndarray, prompt: np.ndarray, hash_block_size: int = 512):
    """The :class:`~vidur.workload.content.Content` of requests taking trace
    ``rows`` with these prompt lengths: one tree node per (preceding blocks,
    block id), so equal ids after equal ids share; prompt tokens past the
    last id are the request's own."""
    from vidur.workload.content import Content, TreeBuilder
    from vidur.workload.trace import read_hashes

    hashes = read_hashes(path)
    size = int(hash_block_size)
    tree = TreeBuilder()
    leaf = np.empty(len(rows), dtype=np.int64)
    for i, (row, p) in enumerate(zip(np.asarray(rows).tolist(), np.asarray(prompt).tolist())):
        h = hashes[row][: -(-p // size)]
        node = -1
        for j, label in enumerate(h):
            node = tree.intern(node, label, j * size)
        if len(h) * size < p:  # tokens no hash covers: this request's own
            node = tree.node(node, len(h) * size)
        leaf[i] = node
    return Content(tree.build(), leaf, np.full(len(rows), -1, dtype=np.int64))
