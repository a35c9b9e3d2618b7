"""Build a simulation from a scenario and run it."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import attrs
import numpy as np

from vidur.engine import parallel
from vidur.engine.budget import check_replicas_fit
from vidur.engine.log import BatchLog
from vidur.engine.loop import EventLoop, ReplicaState
from vidur.engine.request_view import RequestsView
from vidur.engine.requests import TableRequests, requests_for_rows
from vidur.entities.request import Request
from vidur.errors import PluginError, PolicyOutputError, VidurError
from vidur.estimate.base import apply_policy_cuda_graphs
from vidur.metrics.records import REQUEST_COLUMNS, BatchRowsNotKept, ReplicaInfo, RunRecords
from vidur.plugins import PluginHost, get_host
from vidur.scenario import Scenario
from vidur.scheduler.prefix_cache import caching_enabled, make_kv_manager
from vidur.workload.workload import RequestTable, build_requests


def _check_one_kv_dtype(sc: Scenario, kv_bytes: int) -> None:
    """The KV cache's element size has one home, ``cluster.kv_cache_dtype``.

    The paged planner and the roofline still accept ``kv_dtype_bytes`` (their
    own unit tests and direct use); in a scenario a value that disagrees with
    the deployed model's would size the cache with one precision and price
    its reads with another, so it is refused.
    """
    for section, cfg in (("memory_planner", sc.memory_planner.config), ("runtime_estimator", sc.runtime_estimator.config)):
        v = getattr(cfg, "kv_dtype_bytes", None)
        if v is not None and v != kv_bytes:
            raise VidurError(
                f"{section}.kv_dtype_bytes={v} disagrees with cluster.kv_cache_dtype "
                f"{sc.cluster.kv_cache_dtype!r} ({kv_bytes} bytes per KV element): set the KV cache's precision once, "
                "in cluster.kv_cache_dtype (auto | bf16 | fp16 | fp8), and drop kv_dtype_bytes"
            )


@attrs.define
class SimulationResult:
    """What ``Simulation.run`` returns: the raw records and the scenario.

    ``requests`` is a read-only view of the per-request columns of ``records``
    (:class:`~vidur.engine.request_view.RequestsView`: ``len``, iteration and
    indexing give light records with a request's attribute names); no
    :class:`Request` object outlives the run.
    """

    scenario: Scenario
    records: RunRecords
    estimator: str
    provenance: Any = None  # vidur.resolve.provenance.Provenance: which estimator, from which data, why
    #: how the run executed: "N worker processes, ..." or "sequential: <why>" (vidur.engine.parallel.plan)
    execution: str = ""

    @property
    def requests(self) -> RequestsView:
        """The requests in id order, read from ``records.requests`` (see :class:`RequestsView`)."""
        return RequestsView(self.records.requests)


def _base_files() -> dict[str, str]:
    """Registry kind -> the file of its framework base class."""
    import vidur.estimate.base as est_base
    import vidur.scheduler.base as sched_base
    import vidur.scheduler.global_base as global_base

    return {
        "replica_scheduler": sched_base.__file__,
        "global_scheduler": global_base.__file__,
        "runtime_estimator": est_base.__file__,
    }


def prefix_cache_stats(kv) -> dict | None:
    """A replica's prefix-cache counters (None without prefix caching)."""
    if not kv.prefix_caching:
        return None
    return {
        "hit_tokens": kv.hit_tokens,
        "query_tokens": kv.query_tokens,
        "evicted_blocks": kv.evicted_blocks,
        "recompute_hit_tokens": kv.recompute_hit_tokens,
    }


class Simulation:
    """One scenario made concrete: model, hardware, replicas, workload, router.

    Build it (validates everything and raises one-line VidurErrors), then
    :meth:`run`. ``requests`` may be given to replay a fixed request table.

    ``serial_host=True`` prices every step as host work then device work even
    where the replica scheduler models an engine that overlaps them
    (``host_overlap``: vLLM V1's async scheduling, SGLang's overlap scheduler);
    ``cuda_graph_sizes`` (empty: none) replaces the batch sizes the policy
    says run as CUDA graphs (``cuda_graph_sizes``: vLLM V1's and SGLang's
    capture sizes). ``vidur validate`` sets both to what its reference
    executor does, so that the simulated side prices what the real side runs.
    """

    def __init__(
        self,
        scenario: Scenario,
        host: PluginHost | None = None,
        requests: RequestTable | None = None,
        *,
        serial_host: bool = False,
        cuda_graph_sizes: Sequence[int] | None = None,
    ):
        from vidur.model.catalog import check_parallelism, deploy, load_model

        self.scenario = sc = scenario
        self.host = host = host or get_host()
        self.rng = np.random.default_rng(sc.seed)
        cl = sc.cluster
        check_replicas_fit(cl.num_replicas)  # before any replica is built
        self.model = deploy(
            load_model(sc.model, host),
            weight_dtype=cl.weight_dtype,
            kv_cache_dtype=cl.kv_cache_dtype,
            expert_parallel=cl.expert_parallel,
        )
        _check_one_kv_dtype(sc, self.model.kv_bytes)
        from vidur.estimate.base import PricingTarget
        from vidur.resolve.device import resolve_device
        from vidur.resolve.estimator import resolve_estimator

        # registered, a device file (scoped to this simulation) or known only from a profile
        dev = resolve_device(cl.device, host, node=cl.node, device_file=cl.device_file)
        self.device, self.node = dev.spec, dev.node
        tp, pp = cl.tensor_parallel, cl.pipeline_parallel
        check_parallelism(self.model, tp, pp, self.node)

        planner_cls = host.get("memory_planner", sc.memory_planner.name)
        with self._setting_up("memory planner", "memory_planner", sc.memory_planner.name):
            self.memory = planner_cls(sc.memory_planner.config).plan(self.model, self.device, tp, pp)
        self._check_plan(sc.memory_planner.name)

        # the engine whose kernels the policy prices; a device known only from its profile has nothing else
        engine = None if dev.from_profile_only else getattr(host.get("replica_scheduler", sc.replica_scheduler.name), "models_engine", None)
        target = PricingTarget(self.model, self.device, self.node, tp, pp, engine_mode=cl.engine_mode, engine=engine)
        resolved = resolve_estimator(
            sc.runtime_estimator.name, sc.runtime_estimator.config, target, host, device_source=dev.source
        )
        est_name = resolved.name
        with self._setting_up("runtime estimator", "runtime_estimator", est_name):
            self.estimator = resolved.build(target)
            #: where the run's timings come from (printed in the run header, stored in summary.json)
            self.provenance = resolved.completed(self.estimator)
        self.estimator_name = est_name

        if requests is None:
            wl = sc.workload
            with self._setting_up("arrival process", "workload.arrival", wl.arrival.name):
                arrival = host.get("workload.arrival", wl.arrival.name)(wl.arrival.config)
            with self._setting_up("length generator", "workload.length", wl.lengths.name):
                lengths = host.get("workload.length", wl.lengths.name)(wl.lengths.config)
            from vidur.engine.budget import check_workload_fits

            check_workload_fits(wl.num_requests, wl.duration, getattr(arrival, "mean_qps", None))
            with self._setting_up("workload", "workload.arrival", wl.arrival.name, ("workload.length", wl.lengths.name)):
                requests = build_requests(arrival, lengths, self.rng, wl.num_requests, wl.duration)
            #: requests whose lengths ``workload.lengths.max_tokens`` cut (0 for a given request table)
            self.clipped = int(getattr(lengths, "clipped", 0) or 0)
        else:
            self.clipped = 0
        if len(requests) == 0:
            raise VidurError("the workload produced no requests; raise workload.duration or set num_requests")
        self.table = requests
        from vidur.metrics.batch_summary import choose_batch_log

        #: "full" or "summary" (metrics.batch_log, auto decided on the request count) and why
        self.batch_log, self.batch_log_reason = choose_batch_log(
            sc.metrics.batch_log, len(requests), pp=pp, chrome_trace=sc.metrics.chrome_trace
        )

        sched_cls = host.get("replica_scheduler", sc.replica_scheduler.name)
        self.prefix_caching = caching_enabled(sched_cls, sc.replica_scheduler.config)
        tree_lists = None
        if self.prefix_caching and requests.content is not None:
            tree = requests.content.tree
            tree_lists = (tree.parent.tolist(), tree.start.tolist())
        #: what this run prices otherwise than the policy says (``serial_host``, ``cuda_graph_sizes``),
        #: by keyword; empty for a plain run
        self.engine_overrides: dict = {}
        if serial_host:
            self.engine_overrides["serial_host"] = True
        if cuda_graph_sizes is not None:
            self.engine_overrides["cuda_graph_sizes"] = tuple(sorted({int(b) for b in cuda_graph_sizes}))
        self.replica_states: list[ReplicaState] = []
        schedulers = []
        for i in range(cl.num_replicas):
            bs = sched_cls.kv_block_size or self.memory.block_size
            num_blocks = self.memory.num_blocks * self.memory.block_size // bs
            reserved = {k: v * self.memory.block_size // bs for k, v in self.memory.reservations.items()}
            kv = make_kv_manager(self.prefix_caching, num_blocks, bs, tree_lists)
            with self._setting_up("replica scheduler", "replica_scheduler", sc.replica_scheduler.name):
                sched = sched_cls(
                    sc.replica_scheduler.config, kv, i, pp, estimator=self.estimator, slos=sc.metrics.slos,
                )
            if reserved:  # set after construction: a plugin __init__ with its own signature keeps working
                sched._reservations = MappingProxyType(reserved)
            if serial_host and getattr(sched, "host_overlap", False):  # before ReplicaState reads it
                sched.host_overlap = False
            schedulers.append(sched)
            self.replica_states.append(ReplicaState(i, sched, self.estimator, self.model.num_layers, pp))
        check = getattr(schedulers[0], "check_memory_planner", None)
        wrong = check(sc.memory_planner.name, sc.memory_planner.config) if check is not None else None
        if wrong:
            raise VidurError(wrong)
        sizes = getattr(schedulers[0], "cuda_graph_sizes", None)
        if "cuda_graph_sizes" in self.engine_overrides:
            given = self.engine_overrides["cuda_graph_sizes"]
            if given or sizes:  # after the policies' own calls: the last one holds; the executor graphs decodes only
                self.estimator.use_cuda_graphs(given, decode_only=True)
        else:
            apply_policy_cuda_graphs(self.estimator, schedulers[0])
        if pp == 1 and sc.simulation.fast_forward:
            self._check_decode_pricing(getattr(schedulers[0], "config", None))
        self._check_requests_fit(schedulers[0])
        router_cls = host.get("global_scheduler", sc.global_scheduler.name)
        with self._setting_up("global scheduler", "global_scheduler", sc.global_scheduler.name):
            self.router = router_cls(sc.global_scheduler.config, schedulers, self.rng)

    @contextmanager
    def _setting_up(self, label: str, kind: str, name: str, also: tuple[str, str] | None = None):
        """Name the plugin(s) (and distribution) when building one of their objects fails."""
        try:
            yield
        except VidurError:
            raise
        except Exception as exc:
            who = []
            for k, n in [(kind, name)] + ([also] if also else []):
                entry = self.host.entry(k, n)
                who.append(f"{k.replace('workload.', '').replace('_', ' ')} {n!r} from plugin {entry.plugin!r} ({entry.distribution})")
            raise PluginError(
                f"{' / '.join(who)} failed while setting up the {label}: {type(exc).__name__}: {exc}"
            ) from exc

    def _check_plan(self, name: str) -> None:
        """A memory plan the engine can use: whole positive block counts, named non-negative
        reservations, and KV plus weights that fit in the device (one line naming the planner)."""
        from vidur.memory.base import MemoryPlan, physical_shortfall

        plan = self.memory

        def whole(v, low):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        if not isinstance(plan, MemoryPlan):
            wrong = f"plan() returned {type(plan).__name__}; return a vidur.memory.MemoryPlan"
        elif not (whole(plan.num_blocks, 1) and whole(plan.block_size, 1)):
            wrong = f"plan() returned num_blocks {plan.num_blocks!r}, block_size {plan.block_size!r}; both must be integers >= 1"
        elif not (isinstance(plan.reservations, Mapping)
                  and all(isinstance(k, str) and k and whole(v, 0) for k, v in plan.reservations.items())):
            wrong = f"plan() returned reservations {plan.reservations!r}; give a mapping of names to block counts >= 0"
        else:
            wrong = physical_shortfall(plan, self.device)
        if wrong is not None:
            entry = self.host.entry("memory_planner", name)
            raise PluginError(f"memory planner {name!r} from plugin {entry.plugin!r} ({entry.distribution}): {wrong}")

    def _check_decode_pricing(self, sched_config) -> None:
        """Fast-forward prices decode runs with the estimator's vectorised method, stepping with the
        scalar one: they must agree (checked once, on a sample) or the run stops naming the plugin."""
        from vidur.estimate.wrap import decode_pricing_mismatch

        name = self.estimator_name
        cap = getattr(sched_config, "max_batch_size", None)
        cap = int(min(cap, 64)) if isinstance(cap, (int, float)) and cap >= 1 else 64
        with self._setting_up("runtime estimator", "runtime_estimator", name):
            wrong = decode_pricing_mismatch(self.estimator, cap)
        if wrong is not None:
            entry = self.host.entry("runtime_estimator", name)
            raise PluginError(
                f"runtime estimator {name!r} from plugin {entry.plugin!r} ({entry.distribution}): {wrong} "
                "(fast-forward and stepping would price decode batches differently)"
            )

    def _check_requests_fit(self, sched) -> None:
        t = self.table
        worst = int(np.argmax(t.prompt + t.output))
        probe = Request(worst, 0.0, int(t.prompt[worst]), int(t.output[worst]))
        need = sched.kv.blocks_for(sched.reserved_tokens(probe))
        if need > sched.kv.num_blocks:
            cap = sched.kv.num_blocks * sched.kv.block_size
            raise VidurError(
                f"request {worst} needs {sched.reserved_tokens(probe)} tokens of KV cache but one replica holds "
                f"{cap}; clip lengths with workload.lengths.max_tokens or add GPUs (tensor/pipeline parallel)"
            )
        max_pos = self.model.max_position_embeddings
        longest = int((t.prompt + t.output).max())
        if longest > max_pos:
            raise VidurError(
                f"request {worst} has {longest} tokens but {self.model.name} supports {max_pos}; "
                f"set workload.lengths.max_tokens: {max_pos}"
            )

    def make_requests(self, rows: np.ndarray | None = None) -> list[Request]:
        """One :class:`Request` per table row (or per row of ``rows``, id = row), carrying its
        content when the workload has one (routing up front; a run's loop makes its own, at arrival,
        from :meth:`request_source`)."""
        return requests_for_rows(self.table, slice(None) if rows is None else rows)

    def request_source(self, rows: np.ndarray | None = None) -> TableRequests:
        """This run's requests for the event loop (one per run): made from the table a block ahead of
        their arrival, written into columns when they complete; closed-loop follow-ups come with it.
        ``rows``: only these table rows (ascending; a parallel worker's share), ids = rows."""
        return TableRequests(self.table, prefix_caching=self.prefix_caching, rows=rows)

    def run(self, *, step_mode: bool = False, progress: bool | None = None, executor: str = "process") -> SimulationResult:
        """Run the event loop to completion; ``step_mode`` disables fast-forward.

        Replicas run in several processes (``executor`` ``process``: forked here; ``ray``: tasks on
        this process's Ray session) when ``simulation.workers`` and the router allow it
        (:mod:`vidur.engine.parallel`: the same records); ``execution`` on the result says how it ran."""
        sc = self.scenario
        show = sc.simulation.progress if progress is None else progress
        how = parallel.plan(self, executor)
        if how.workers > 1:
            self.host.call_observer("vidur_simulation_start", sim=self)
            records = parallel.run_parallel(self, how.workers, step_mode=step_mode, show=show, executor=executor)
            result = SimulationResult(sc, records, self.estimator.describe(), self.provenance, how.note)
            self.host.call_observer("vidur_simulation_end", sim=self, result=result)
            return result
        source = self.request_source()
        bar = None
        on_complete = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=len(source), unit="req", delay=2.0, leave=False, mininterval=0.5)
            on_complete = bar.update
        loop = EventLoop(
            source,
            self.replica_states,
            self.router,
            fast_forward=sc.simulation.fast_forward and not step_mode,
            max_time=sc.simulation.max_time,
            record_spans=sc.metrics.chrome_trace,
            on_complete=on_complete,
            batch_log=self._batch_log(),
        )
        self.host.call_observer("vidur_simulation_start", sim=self)
        t0 = time.perf_counter()
        try:
            makespan = loop.run()
        except VidurError:
            raise
        except Exception as exc:  # a policy raised: name it (no cost on the normal path)
            blame = self._blame(exc)
            if blame is None:
                raise
            raise blame from exc
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t0
        records = self._records(loop, makespan, wall)
        result = SimulationResult(sc, records, self.estimator.describe(), self.provenance, how.note)
        self.host.call_observer("vidur_simulation_end", sim=self, result=result)
        return result

    def _batch_log(self) -> BatchLog:
        """The loop's batch log: every row, or folded into per-replica aggregates
        (summary mode; FLOPs and bytes priced per chunk with the model's cost functions)."""
        if self.batch_log == "full":
            return BatchLog()
        from vidur.metrics.batch_summary import BatchSummary
        from vidur.metrics.summary import model_cost_fns

        flops_fn, bytes_fn = model_cost_fns(self.model)
        info = self._replica_info(self.replica_states[0])  # replicas are alike: tp, pp, device
        return BatchLog(BatchSummary(lambda cols: (flops_fn(cols, info), bytes_fn(cols, info))))

    def _replica_info(self, r: ReplicaState) -> ReplicaInfo:
        cl = self.scenario.cluster
        return ReplicaInfo(
            replica=r.index,
            device=self.device.name,
            num_gpus=cl.tensor_parallel * cl.pipeline_parallel,
            tp=cl.tensor_parallel,
            pp=cl.pipeline_parallel,
            kv_blocks=r.scheduler.kv.num_blocks,
            block_size=r.scheduler.kv.block_size,
            peak_flops=self.device.peak_flops,
            memory_bandwidth=self.device.memory_bandwidth,
            prefix_cache=prefix_cache_stats(r.scheduler.kv),
        )

    def _blame(self, exc: BaseException) -> PluginError | None:
        """A PluginError naming the policy (and its plugin and distribution)
        whose method raised ``exc``: the innermost traceback frame whose
        ``self`` is this run's router, a replica scheduler or the estimator."""
        sc = self.scenario
        owners = {
            id(self.router): ("global scheduler", "global_scheduler", sc.global_scheduler.name),
            id(self.estimator): ("runtime estimator", "runtime_estimator", self.estimator_name),
        }
        for rep in self.replica_states:
            owners[id(rep.scheduler)] = ("replica scheduler", "replica_scheduler", sc.replica_scheduler.name)
        frames = []  # (owner, traceback entry), outermost first
        tb = exc.__traceback__
        while tb is not None:
            owner = owners.get(id(tb.tb_frame.f_locals.get("self")))
            if owner is not None:
                frames.append((owner, tb))
            tb = tb.tb_next
        if isinstance(exc, PolicyOutputError):  # a run-time check of a policy's output
            return self._policy_error(exc, frames)
        if not frames:
            return None
        (label, kind, name), inner = frames[-1]
        try:
            entry = self.host.entry(kind, name)
        except VidurError:
            return None

        def at(tb) -> str:
            code = tb.tb_frame.f_code
            return f"{code.co_name}() at {Path(code.co_filename).name}:{tb.tb_lineno}"

        # point at the policy's own code, not the base-class helper it called
        base_file = _base_files().get(kind)
        own = [t for o, t in frames if o[1] == kind and t.tb_frame.f_code.co_filename != base_file]
        where = at(own[-1]) if own else at(inner)
        if own and own[-1] is not inner:
            where += f" (via {at(inner)})"
        return PluginError(
            f"{label} {name!r} from plugin {entry.plugin!r} ({entry.distribution}) raised "
            f"{type(exc).__name__}: {exc} in {where}"
        )

    def _policy_error(self, exc: PolicyOutputError, frames: list) -> PluginError | None:
        """One line naming the policy whose output failed a run-time check."""
        sc = self.scenario
        label, name = {
            "replica_scheduler": ("replica scheduler", sc.replica_scheduler.name),
            "global_scheduler": ("global scheduler", sc.global_scheduler.name),
        }[exc.kind]
        try:
            entry = self.host.entry(exc.kind, name)
        except VidurError:
            return None
        where = ""
        own = [t for o, t in frames if o[1] == exc.kind and t.tb_frame.f_code.co_filename != _base_files()[exc.kind]]
        if own:
            code = own[-1].tb_frame.f_code
            where = f" in {code.co_name}() at {Path(code.co_filename).name}:{own[-1].tb_lineno}"
        return PluginError(f"{label} {name!r} from plugin {entry.plugin!r} ({entry.distribution}): {exc}{where}")

    def _records(self, loop: EventLoop, makespan: float, wall: float) -> RunRecords:
        """The run's records once ``loop`` (built on :meth:`request_source`) has stopped."""
        requests = loop.requests.columns(loop.next_id)
        assert tuple(requests)[: len(REQUEST_COLUMNS)] == REQUEST_COLUMNS
        itl_v, itl_c = loop.itl.to_arrays()  # first: its merge's peak is not stacked on the batch log's
        summary = None
        if loop.batches.summary is not None:
            summary = loop.batches.finish_summary()
            batches, spans = BatchRowsNotKept(), None
        else:
            batches, spans = loop.batches.to_columns()
        infos = [self._replica_info(r) for r in self.replica_states]
        return RunRecords(
            requests=requests,
            batches=batches,
            itl_values=itl_v,
            itl_counts=itl_c,
            replicas=infos,
            makespan=makespan,
            wall_seconds=wall,
            stage_spans=spans,
            batch_summary=summary,
        )


def simulate(scenario: Scenario, host: PluginHost | None = None, **run_kwargs: Any) -> SimulationResult:
    """Build and run ``scenario`` in one call."""
    return Simulation(scenario, host).run(**run_kwargs)
