"""SGLang (0.5.x, 2025-2026): prefill first, admission by an estimate of future decode tokens, retraction.

Each step SGLang's scheduler (``python/sglang/srt/managers/scheduler.py``,
``get_next_batch_to_run``) first tries a prefill batch and runs it alone if it
forms (``enable_mixed_chunk`` off, the default); otherwise it decodes every
running request. The prefill batch (``PrefillAdder`` in
``managers/schedule_policy.py``) continues the one chunked request first,
then takes waiting requests in ``schedule_policy`` order while:

- the token budgets last: ``chunked_prefill_size`` (a longer prompt is cut
  to what is left and continued next step; <= 0 turns chunking off) and
  ``max_prefill_tokens`` (a request at or over what is left waits, unless it
  is the first);
- ``max_running_requests`` is not reached;
- memory holds the *estimate*: a request needs ``prompt - cached +
  min(max_new_tokens, 4096)`` tokens strictly below ``free - reserve``, where
  ``free`` counts evictable radix-cache tokens and ``reserve`` is, for each
  decoding request, ``min(its remaining max_new_tokens, 4096) x
  new_token_ratio``, plus what this step's admissions already claimed.
  ``new_token_ratio`` starts at ``0.7 x schedule_conservativeness`` (at most
  1), falls by ``(init - 0.14 x init) / 600`` per decode step to ``0.14 x
  init`` and goes back to its start when the server idles
  (``SGLANG_INIT_NEW_TOKEN_RATIO`` 0.7, ``SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR``
  0.14, ``SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS`` 600 in ``srt/environ.py``;
  ``CLIP_MAX_NEW_TOKENS`` 4096 in ``schedule_policy.py``).

Orders (``SchedulePolicy.calc_priority``): ``fcfs`` (the default) keeps arrival order;
``lpm`` sorts by the longest cached prefix, except that of the waiting requests with at
most 32 cached tokens sharing their first 32 tokens only the first keeps its place (the
others go last, so one computes the prefix the rest will hit), and falls back to FCFS
past 128 waiting requests; ``lof`` puts the longest ``max_new_tokens`` first.

A request that fails the memory test stops admission and marks the batch full:
no prefill is tried again until a running request finishes or is retracted.

Decoding needs one token slot per request (``page_size`` 1). When they are not
free SGLang *retracts* (``ScheduleBatch.retract_decode``): requests with the
fewest output tokens, then the longest prompt, go back to the end of the
waiting queue with their KV freed (their prefix may stay in the radix cache)
until 20 free tokens per remaining request exist (``SGLANG_RETRACT_DECODE_STEPS``),
keeping at least one; ``new_token_ratio`` becomes ``min(1, (tokens decoded by
the rest + 20 x their count) / their max_new_tokens)``. A retracted request
recomputes its prompt and output so far.

The simulator knows each request's output length and takes it as the client's
``max_new_tokens`` (what benchmark clients send, with ``ignore_eos``). SGLang
checks ``ignore_eos`` requests by a worst-case plan instead when the radix
cache is off; that path is not modelled.

Engine settings: the overlap scheduler (on unless ``disable_overlap_schedule``)
runs the next step's host work during this step's GPU work, so a step takes
max(GPU, host); decode batches of at most ``cuda_graph_max_bs`` run as CUDA
graphs padded to the captured sizes (``cuda_graph_bs``; the default list is
1, 2, 4, 8, 12, 16..256 by 8, 272..496 by 16, 512.. by 32; vidur pads any batch
of that many tokens, prefills included, a few tokens at most). KV capacity is
the ``sglang`` memory planner's (``mem_fraction_static``). ``chunked_prefill_size``
and ``cuda_graph_max_bs`` unset take SGLang's per-GPU defaults
(:func:`vidur.memory.sglang.gpu_defaults`); ``max_running_requests`` unset is
``min(tokens // 2, clamp(tokens / context_length x 512, 2048, 4096))`` of the
KV pool (``model_runner.py``).
"""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.errors import VidurError
from vidur.memory.sglang import DEFAULT_MAX_PREFILL_TOKENS, gpu_defaults
from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig

#: SGLang's scheduler constants (``srt/environ.py``; ``schedule_policy.py``)
INIT_NEW_TOKEN_RATIO = 0.7
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14
NEW_TOKEN_RATIO_DECAY_STEPS = 600
RETRACT_DECODE_STEPS = 20
CLIP_MAX_NEW_TOKENS = 4096
#: the waiting-queue length above which ``lpm`` falls back to ``fcfs`` (``SchedulePolicy``)
LPM_MAX_QUEUE = 128
#: ``IN_BATCH_PREFIX_CACHING_CHECK_THRESHOLD`` and ``_DEPRIORITIZE_THRESHOLD`` (32 tokens each, ``schedule_policy.py``)
IN_BATCH_PREFIX_TOKENS = 32
#: ``schedule_policy`` values modelled here
POLICIES = ("fcfs", "lpm", "lof")
#: SGLang's other policies, refused by name
OTHER_POLICIES = ("random", "dfs-weight", "routing-key", "hrrn", "shortest-prefill-first", "priority")


def default_capture_bs(max_bs: int, padding: bool = True) -> tuple[int, ...]:
    """SGLang's CUDA-graph batch sizes up to ``max_bs`` (``ServerArgs._generate_cuda_graph_batch_sizes``,
    no speculative decoding); without padding every size from 1."""
    if not padding:
        return tuple(range(1, max_bs + 1))
    sizes = [1, 2, 4, 8, 12] + list(range(16, 257, 8)) + list(range(272, 512, 16)) + list(range(512, max_bs + 1, 32))
    return tuple(s for s in sizes if s <= max_bs)


def _int_or_none(name: str, v, low: int) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
        raise VidurError(f"sglang {name} must be an integer >= {low} or null, got {v!r}")


def _bs_list(value):
    if value is None:
        return None
    try:
        sizes = tuple(sorted({int(v) for v in value}))
    except (TypeError, ValueError):
        raise VidurError(f"sglang cuda_graph_bs must be a list of positive integers, got {value!r}") from None
    if not sizes or sizes[0] < 1:
        raise VidurError(f"sglang cuda_graph_bs must be a non-empty list of positive integers, got {value!r}")
    return sizes


@attrs.frozen(kw_only=True)
class SGLangConfig(SchedulerConfig):
    """SGLang's server arguments under their own names (``python -m sglang.launch_server``).

    ``max_batch_size`` mirrors ``max_running_requests`` and ``prefix_caching`` mirrors
    ``not disable_radix_cache``: set either name, not both to different values. None in
    ``max_running_requests``, ``chunked_prefill_size`` and ``cuda_graph_max_bs`` is
    SGLang's derived default (from the KV pool, the GPU's memory and TP).
    """

    max_batch_size: int | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    schedule_policy: str = "fcfs"
    schedule_conservativeness: float = 1.0
    enable_mixed_chunk: bool = False
    disable_radix_cache: bool | None = None
    page_size: int = 1
    disable_overlap_schedule: bool = False
    cuda_graph_max_bs: int | None = None
    cuda_graph_bs: tuple[int, ...] | None = attrs.field(default=None, converter=_bs_list)
    disable_cuda_graph: bool = False
    disable_cuda_graph_padding: bool = False
    context_length: int | None = None

    def __attrs_post_init__(self):
        m, b = self.max_running_requests, self.max_batch_size
        if m is not None and b not in (None, m):
            raise VidurError(
                f"sglang max_batch_size mirrors max_running_requests (SGLang's name); got max_batch_size {b} "
                f"and max_running_requests {m}: set one"
            )
        m = m if m is not None else b
        _int_or_none("max_running_requests", m, 1)
        object.__setattr__(self, "max_running_requests", m)
        object.__setattr__(self, "max_batch_size", m)
        for key in ("enable_mixed_chunk", "disable_overlap_schedule", "disable_cuda_graph",
                    "disable_cuda_graph_padding"):
            if not isinstance(getattr(self, key), bool):
                raise VidurError(f"sglang {key} must be true or false, got {getattr(self, key)!r}")
        d, pc = self.disable_radix_cache, self.prefix_caching
        if d is not None and not isinstance(d, bool):
            raise VidurError(f"sglang disable_radix_cache must be true or false, got {d!r}")
        if d is not None and pc is not None and pc == d:
            raise VidurError(
                f"sglang prefix_caching mirrors not disable_radix_cache (SGLang's name); got prefix_caching "
                f"{pc} and disable_radix_cache {d}: set one"
            )
        d = (not pc) if d is None and pc is not None else bool(d)
        object.__setattr__(self, "disable_radix_cache", d)
        object.__setattr__(self, "prefix_caching", not d)
        c = self.chunked_prefill_size
        if c is not None and (isinstance(c, bool) or not isinstance(c, int)):
            raise VidurError(f"sglang chunked_prefill_size must be an integer (<= 0: chunked prefill off) or null, got {c!r}")
        _int_or_none("max_prefill_tokens", self.max_prefill_tokens, 1)
        _int_or_none("cuda_graph_max_bs", self.cuda_graph_max_bs, 1)
        _int_or_none("context_length", self.context_length, 1)
        p = self.schedule_policy
        if p not in POLICIES:
            what = "is not modelled" if p in OTHER_POLICIES else "is not an SGLang schedule_policy"
            raise VidurError(f"sglang schedule_policy {p!r} {what}; modelled: {', '.join(POLICIES)}")
        s = self.schedule_conservativeness
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s >= 0:
            raise VidurError(f"sglang schedule_conservativeness must be a number >= 0, got {s!r}")
        if self.page_size != 1:
            raise VidurError(
                f"sglang page_size {self.page_size!r} is not modelled: the policy keeps token-granular KV "
                "(SGLang's default page_size 1)"
            )
        if self.cuda_graph_bs is not None and self.cuda_graph_max_bs not in (None, self.cuda_graph_bs[-1]):
            raise VidurError(
                f"sglang cuda_graph_max_bs {self.cuda_graph_max_bs} but cuda_graph_bs ends at {self.cuda_graph_bs[-1]}: "
                "SGLang takes the largest captured size; set one"
            )


class SGLangScheduler(ReplicaScheduler):
    """SGLang's scheduler: a prefill batch when one forms (the chunked request first, then
    waiting requests admitted against the ``new_token_ratio`` estimate), else a decode batch
    of every running request, retracting requests when decode tokens do not fit."""

    name = "sglang"
    Config = SGLangConfig
    models_engine = "SGLang"
    kv_block_size = 1  # SGLang's page_size 1
    lazy_decode = True
    prefix_caching_default = True  # the radix cache

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        if self.num_stages > 1:
            raise VidurError("sglang: pipeline parallelism is not modelled (SGLang's PP event loop); use pipeline_parallel 1")
        est = self._estimator
        device_mem = est.device.memory_bytes if est is not None else None
        tp = est.tp if est is not None else 1
        if device_mem is not None:
            chunk, graph_bs = gpu_defaults(device_mem, tp)
        else:  # SGLang's fallback when the GPU's memory is unknown
            chunk, graph_bs = 4096, 160
        if c.chunked_prefill_size is not None:
            chunk = c.chunked_prefill_size
        if c.cuda_graph_bs is not None:
            graph_bs = c.cuda_graph_bs[-1]
        elif c.cuda_graph_max_bs is not None:
            graph_bs = c.cuda_graph_max_bs
        self._chunk_setting = chunk  # SGLang's value (<= 0: off), compared with the memory planner's
        #: tokens per prefill chunk in effect (None: chunked prefill off)
        self.chunk_size = chunk if chunk > 0 else None
        #: the largest CUDA-graph batch in effect (also the input of the memory heuristic)
        self.cuda_graph_max_bs = graph_bs
        tokens = self.kv.num_blocks * self.kv.block_size
        self._pool = tokens
        if c.max_running_requests is not None:
            self.max_running = c.max_running_requests
        else:
            ctx = c.context_length or (est.model.max_position_embeddings if est is not None else tokens)
            pool = min(max(int(tokens / ctx * 512), 2048), 4096)
            self.max_running = max(1, min(tokens // 2, pool))
        self.init_ratio = min(INIT_NEW_TOKEN_RATIO * c.schedule_conservativeness, 1.0)
        self.min_ratio = min(self.init_ratio * MIN_NEW_TOKEN_RATIO_FACTOR, 1.0)
        self.ratio_decay = (self.init_ratio - self.min_ratio) / NEW_TOKEN_RATIO_DECAY_STEPS
        self.new_token_ratio = self.init_ratio
        self.chunked = None  # the request whose prefill continues next step
        self.batch_full = False  # SGLang's running_batch.batch_is_full
        self._expected_decoding = 0  # SGLang's running batch since the last decode step (to see finishes)
        #: the engine overlaps host work with the GPU (read by the event loop)
        self.host_overlap = not c.disable_overlap_schedule
        if c.disable_cuda_graph:
            sizes = ()
        elif c.cuda_graph_bs is not None:
            sizes = c.cuda_graph_bs
        else:
            sizes = default_capture_bs(graph_bs, not c.disable_cuda_graph_padding)
        #: batch sizes that run as CUDA graphs (read when the estimator is built); decode batches
        #: only: SGLang captures its decode step (cuda_graph_max_bs), extend batches run eagerly
        self.cuda_graph_sizes = sizes
        self.cuda_graph_decode_only = True
        if est is not None and sizes:
            est.use_cuda_graphs(sizes, decode_only=True)

    # -- what the engine reads ----------------------------------------------------
    def max_new_tokens(self, req) -> int:
        """The request's ``max_new_tokens`` as SGLang holds it: its output length, cut so that
        prompt + max_new_tokens stays under ``max_req_len`` (the pool less one token) as SGLang's
        ``handle_generate_request`` cuts it (the simulated request still produces all its tokens)."""
        cap = self._pool - 2 - req.prompt
        return req.output if req.output < cap else (cap if cap > 0 else 0)

    def check_memory_planner(self, name: str, config) -> str | None:
        """With the ``sglang`` planner and its ``mem_fraction_static`` heuristic, the heuristic's
        inputs must be this policy's values (one SGLang argument, two sections)."""
        if name != "sglang" or getattr(config, "mem_fraction_static", None) is not None or self._estimator is None:
            return None
        est = self._estimator
        p_chunk, p_graph, _ = config.effective(est.device, est.tp, est.pp)
        pairs = [("chunked_prefill_size", self._chunk_setting, p_chunk), ("cuda_graph_max_bs", self.cuda_graph_max_bs, p_graph)]
        if self.chunk_size is None:  # the heuristic reads max_prefill_tokens instead
            pairs.append(("max_prefill_tokens", self.config.max_prefill_tokens, config.max_prefill_tokens))
        for key, mine, theirs in pairs:
            if mine != theirs:
                return (f"sglang: replica_scheduler {key} is {mine} but memory_planner {key} is {theirs}; SGLang "
                        "sizes mem_fraction_static from it: set the same value in both or set memory_planner.mem_fraction_static")
        return None

    # -- scheduling ---------------------------------------------------------------
    def schedule(self) -> Batch | None:
        batch = self._prefill()
        return batch if batch is not None else self._decode()

    def _order_waiting(self) -> None:
        policy, waiting = self.config.schedule_policy, self.waiting
        if policy == "fcfs" or len(waiting) < 2:
            return
        if policy == "lof":
            ordered = sorted(waiting, key=lambda r: -r.output)
        else:  # lpm; SGLang turns it off past 128 waiting requests and without the radix cache
            kv = self.kv
            if len(waiting) > LPM_MAX_QUEUE or not kv.prefix_caching:
                return
            # SGLang's in-batch prefix caching: of waiting requests with at most 32 cached tokens that
            # share their first 32 tokens, only the first keeps its place; the others go last
            limit = IN_BATCH_PREFIX_TOKENS
            hits, late, seen = {}, set(), set()
            for r in waiting:
                h = hits[id(r)] = kv.cached_prefix(r)
                if h <= limit:
                    key = kv.prefix_key(r, limit)
                    if key is not None:
                        if key in seen:
                            late.add(id(r))
                        else:
                            seen.add(key)
            inf = float("inf")
            ordered = sorted(waiting, key=lambda r: inf if id(r) in late else -hits[id(r)])
        waiting.clear()
        waiting.extend(ordered)

    def _running_reserve(self) -> float:
        """Σ over decoding requests of min(remaining max_new_tokens, 4096) x new_token_ratio."""
        decoding = self.decoding
        if not decoding:
            return 0.0
        self.sync_decoding()
        clip = CLIP_MAX_NEW_TOKENS
        pool = self._pool - 2
        total = 0
        for r in decoding:
            left = r.final_kv - r.kv_len
            over = r.prompt + r.output - pool  # tokens SGLang's max_new_tokens lacks
            if over > 0:
                left = left - over if left > over else 0
            total += left if left < clip else clip
        return total * self.new_token_ratio

    def _prefill(self) -> Batch | None:
        cfg, kv, waiting = self.config, self.kv, self.waiting
        chunked = self.chunked
        if chunked is None and (self.batch_full or not waiting):
            return None
        if chunked is None and len(self.running) >= self.max_running:
            self.batch_full = True
            return None
        mixed = cfg.enable_mixed_chunk and self.chunk_size is not None
        decoding = self.decoding
        n_mixed = len(decoding) if mixed else 0
        rem_input = cfg.max_prefill_tokens - n_mixed
        rem_chunk = None if self.chunk_size is None else self.chunk_size - n_mixed
        if waiting:
            self._order_waiting()
            if chunked is None:  # quick exit: the head does not fit even before any reserve
                head = waiting[0]
                if not kv.can_admit(head, head.prefill_target, self._new_tokens(head) + 1):
                    self.batch_full = True
                    return None
        reserve = self._running_reserve()
        batch = Batch()
        if chunked is not None:
            left = chunked.prefill_target - chunked.kv_len
            room = int(kv.free - reserve)
            room = room if room < rem_chunk else rem_chunk
            if room > 0:
                n = left if left < room else room
                kv.ensure(chunked, chunked.kv_len + n)
                batch.add(chunked, n)
                rem_input -= n
                if rem_chunk is not None:
                    rem_chunk -= n
                if n == left:
                    reserve += self._new_tokens(chunked)
                    self.chunked = None
                    chunked = None
        state = self._budget_state(kv.free - reserve, rem_input, rem_chunk)
        caching = kv.prefix_caching
        while state == "continue" and waiting and self.chunked is None:
            if len(self.running) >= self.max_running:
                self.batch_full = True
                break
            req = waiting[0]
            hit = kv.cached_prefix(req) if caching else 0
            target = req.prefill_target
            extend = target - hit
            max_new = self._new_tokens(req)
            # strictly below free - reserve once the cached prefix is locked (can_admit counts it)
            if not kv.can_admit(req, target, max_new + int(reserve) + 1):
                self.batch_full = True
                break
            if extend >= rem_input and batch:
                break
            if rem_chunk is None or extend <= rem_chunk:
                n = extend
                reserve += max_new
            else:
                n = rem_chunk
                if n <= 0:
                    break
                self.chunked = req
            self.admit(req, hit + n)
            batch.add(req, n)
            rem_input -= n
            if rem_chunk is not None:
                rem_chunk -= n
            state = self._budget_state(kv.free - reserve, rem_input, rem_chunk)
            if state == "no_token":
                self.batch_full = True
        if not batch:
            return None
        for r, n in zip(batch.prefills, batch.chunks):  # requests that will decode join the running batch
            if r.kv_len + n >= r.prefill_target and r.prefill_target < r.final_kv:
                self._expected_decoding += 1
        if mixed and decoding:
            self.decode_all(batch, self.decoding)
        return batch

    def _new_tokens(self, req) -> int:
        """min(max_new_tokens - output so far, 4096): what admission charges a request."""
        left = self.max_new_tokens(req) - req.generated
        return 0 if left < 0 else (left if left < CLIP_MAX_NEW_TOKENS else CLIP_MAX_NEW_TOKENS)

    @staticmethod
    def _budget_state(rem_total: float, rem_input: int, rem_chunk: int | None) -> str:
        if rem_total <= 0:
            return "no_token"
        if rem_input <= 0 or (rem_chunk is not None and rem_chunk <= 0):
            return "other"
        return "continue"

    def _decode(self) -> Batch | None:
        """SGLang's ``update_running_batch``: a running batch that shrank (requests finished) or
        emptied clears ``batch_is_full``; then decode every request, retracting if slots lack."""
        decoding = self.decoding
        if len(decoding) < self._expected_decoding or not decoding:
            was_full = self.batch_full
            self.batch_full = False
            if not decoding:
                self._expected_decoding = 0
                if was_full and self.waiting:  # SGLang's next loop turn tries prefill
                    return self._prefill()
                if not self.running:
                    self.new_token_ratio = self.init_ratio  # idle: SGLang re-initialises the estimate
                return None
        if self.kv.free < len(decoding):  # one token slot per request (page_size 1)
            self._retract()
            self.batch_full = False
            if not self.decoding:  # nothing left to decode: the freed memory goes to prefill
                self._expected_decoding = 0
                return self._prefill()
        else:
            r = self.new_token_ratio - self.ratio_decay
            self.new_token_ratio = r if r > self.min_ratio else self.min_ratio
        batch = Batch()
        self.decode_all(batch, self.decoding)
        self._expected_decoding = len(self.decoding)
        return batch or None

    def _retract(self) -> None:
        """SGLang's ``retract_decode``: fewest output tokens, then longest prompt, first."""
        self.sync_decoding()
        order = sorted(self.decoding, key=lambda r: (r.generated, -r.prompt), reverse=True)
        kv = self.kv
        out = []
        while len(order) > 1 and (not out or kv.free < RETRACT_DECODE_STEPS * len(order)):
            victim = order.pop()
            self.preempt(victim)
            out.append(victim)
        while order and kv.free < len(order):  # SGLang asserts here; vidur retracts the last one too
            victim = order.pop()
            self.preempt(victim)
            out.append(victim)
        waiting = self.waiting  # preempt() queued them at the front; SGLang appends them
        for _ in out:
            waiting.popleft()
        waiting.extend(out)
        if order:
            decoded = sum(r.generated for r in order)
            budget = sum(self.max_new_tokens(r) for r in order) or 1
            self.new_token_ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(order)) / budget)

    def victim(self, req, candidates):
        """Mixed batches grow decodes through :meth:`decode_all`; evict in SGLang's retraction order."""
        return min(candidates, key=lambda r: (r.generated, -r.prompt))

    def is_steady(self, batch: Batch) -> bool:
        return (self.batch_full or not self.waiting) and self.chunked is None and self.steady_decode(batch)

    def on_repeat(self, times: int) -> None:
        r = self.new_token_ratio - times * self.ratio_decay
        self.new_token_ratio = r if r > self.min_ratio else self.min_ratio
