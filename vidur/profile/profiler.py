"""The profiler: measure every operator of one decoder layer per TP shard.

On a GPU each operator of :mod:`vidur.reference.layers` is timed on its own
(CUDA-graph replays over rotated weight copies, :mod:`vidur.profile.timing`)
and a layer's host launch time is measured on the reference executor's
eager layer; on a CPU every row comes from the reference executor's own
iterations, timed operator by operator (:mod:`vidur.profile.cpu`).

:func:`profile_model` writes ``<out>/metadata.json`` and ``<out>/tp<t>.csv``
(see :mod:`vidur.store.profiles`). Rows are appended and flushed as they
are measured and the metadata is rewritten atomically after every
operator, so an interrupted run is resumed by running the same command
again: points already in the CSV are skipped. A shard is marked complete
only when all its points are in.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import attrs

from vidur.errors import VidurError
from vidur.store import profiles as store
from vidur.model.spec import ModelSpec
from vidur.profile.grids import FULL, CPU, Grid
from vidur.reference.device import torch_device

EDGE_MAX_SEQS = 2048  # final norm / LM head / sampling run per sequence, not per token
LAUNCH_CONTEXT = 256  # cached context of the decodes whose layer launch time is measured (GPU)
LAUNCH_MAX_SEQS = 512
#: repeats of host-side timings (input preparation, sampling): host times spread by up to 40 % between
#: calls on the H200 machine, and 31 calls of at most a few ms each cost well under a second per shard
HOST_REPEATS = 31


def _torch():
    try:
        import torch
    except ImportError:
        raise VidurError("profiling needs PyTorch: pip install 'vidur-sim[profile]'") from None
    return torch


def device_sku(torch_device) -> str:
    """Short SKU name of a device: ``h100``, ``a100`` ... or ``cpu``."""
    torch = _torch()
    if torch_device.type != "cuda":
        return "cpu"
    from vidur.hardware.catalog import sku_of_gpu_name

    full = torch.cuda.get_device_name(torch_device)
    return sku_of_gpu_name(full) or "".join(ch if ch.isalnum() else "_" for ch in full.lower()).strip("_")


def device_info(torch_device) -> dict[str, Any]:
    """Provenance of the measuring machine."""
    torch = _torch()
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch_device.type == "cuda":
        p = torch.cuda.get_device_properties(torch_device)
        info.update(
            {
                "name": torch.cuda.get_device_name(torch_device),
                "memory_bytes": int(p.total_memory),
                "sm_count": int(p.multi_processor_count),
                "compute_capability": f"{p.major}.{p.minor}",
                "l2_cache_bytes": int(getattr(p, "L2_cache_size", 0)),
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "driver": _driver_version(),
            }
        )
    else:
        info.update({"name": info["cpu"], "memory_bytes": _host_memory(), "cpu_count": os.cpu_count()})
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _key(op: str, n: float, b: float, c: float) -> tuple:
    return (op, int(n), int(b), int(c))


class _Plan:
    """Points of one shard, grouped by operator (in measurement order)."""

    def __init__(self):
        self.groups: list[tuple[str, list[tuple[int, int, int]]]] = []

    def add(self, op: str, pts: Iterable[tuple[int, int, int]]) -> None:
        self.groups.append((op, list(pts)))

    def total(self, done: set) -> int:
        return sum(1 for op, pts in self.groups for p in pts if _key(op, *p) not in done)


def build_plan(model: ModelSpec, grid: Grid, gpu: bool, ops: set[str] | None = None) -> _Plan:
    """Every (op, num_tokens, batch, context) point to measure for one shard."""
    plan = _Plan()
    toks = grid.tokens()
    want = (lambda op: ops is None or op in ops)
    layer_ops = list(store.model_layer_ops(model))
    for op in layer_ops + ["embed"]:
        if want(op):
            plan.add(op, [(n, 0, 0) for n in toks])
    edge = [n for n in toks if n <= EDGE_MAX_SEQS]
    for op in ("final_norm", "lm_head", "sample"):
        if want(op):
            plan.add(op, [(n, 0, 0) for n in edge])
    max_pos = model.max_position_embeddings
    if want("attn_prefill"):
        plan.add("attn_prefill", [(q, b, c) for b, q, c in grid.prefill_points(max_pos)])
    if want("attn_decode"):
        plan.add("attn_decode", [(b, b, c) for b, c in grid.decode_points(max_pos)])
    if want("cpu_prepare"):
        plan.add("cpu_prepare", [(b, b, 0) for b in grid.cpu_batches])
    if want("cpu_sample"):
        plan.add("cpu_sample", [(b, b, 0) for b in grid.cpu_batches])
    if gpu:
        if want("cpu_launch_layer"):
            plan.add("cpu_launch_layer", [(n, n, 0) for n in (1, 64, 512) if n <= grid.max_tokens])
        if want("cpu_graph_replay"):
            plan.add("cpu_graph_replay", [(1, 1, 0)])
    return plan


class Profiler:
    """Measures one model on one device; see :func:`profile_model`."""

    def __init__(
        self,
        model: ModelSpec,
        device: str = "cpu",
        *,
        grid: Grid | None = None,
        dtype: str | None = None,
        repeats: int | None = None,
        progress: bool = True,
        threads: int | None = None,
    ):
        self.torch = torch = _torch()
        if threads:
            torch.set_num_threads(int(threads))
        self.model = model
        self.dev = torch_device(device)
        self.gpu = self.dev.type == "cuda"
        self.grid = grid or (FULL if self.gpu else CPU)
        dtype = dtype or ("bfloat16" if self.gpu else "float32")
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise VidurError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
        self.dtype_name = dtype
        self.dtype = getattr(torch, dtype)
        self.progress = progress
        if self.gpu:
            from vidur.profile.timing import CudaGraphTimer

            torch.cuda.set_device(self.dev)
            self.timer = CudaGraphTimer(self.dev, repeats=repeats or 5)
            self.method = self.timer.method
            props = torch.cuda.get_device_properties(self.dev)
            self.l2 = int(getattr(props, "L2_cache_size", 50 << 20)) or (50 << 20)
        else:
            from vidur.profile.cpu import METHOD

            self.timer = None
            self.repeats = repeats or 6
            self.method = METHOD.format(repeats=self.repeats)
            self.l2 = 0
        self.cache: dict[tuple, tuple] = {}  # (signature, n, b, c) -> stats row, shared across shards
        self._launch_ex = None  # the executor timing GPU launch costs (one shard at a time)
        self.launch_method: str | None = None

    # -- helpers -------------------------------------------------------------
    def _sync(self) -> None:
        if self.gpu:
            self.torch.cuda.synchronize(self.dev)

    def _copies(self, nbytes: int) -> int:
        if not self.gpu or nbytes < (1 << 20):
            return 1
        return max(1, min(8, math.ceil(3 * self.l2 / nbytes)))

    def _free(self) -> None:
        if self.gpu:
            self.torch.cuda.empty_cache()

    # -- measurement of one operator group ---------------------------------
    def _measure_group(self, layer, op: str, pts: list[tuple[int, int, int]], emit: Callable[[tuple], None]) -> None:
        from vidur.profile.timing import host_time

        torch = self.torch
        if not self.gpu:  # every CPU row comes from the executor's own iterations (CpuProber.measure)
            for p in pts:
                row = layer.row(op, *p)
                if row is not None:
                    emit((op,) + p + row)
            return
        if op in store.LAYER_TOKEN_OPS or op in store.EDGE_OPS:
            sig = layer.signature(op)
            todo = [p for p in pts if (sig,) + p not in self.cache]
            for p in pts:
                if (sig,) + p in self.cache:
                    emit((op,) + p + self.cache[(sig,) + p])
            if not todo:
                return
            max_n = max(p[0] for p in todo)
            bind = layer.token_op(op, max_n, self._copies(layer.op_bytes(op)))
            for p in todo:
                row = self.timer.measure(bind(p[0])).row()
                self.cache[(sig,) + p] = row
                emit((op,) + p + row)
            del bind
        elif op in ("attn_prefill", "attn_decode"):
            s = layer.shape
            for n, b, c in pts:
                if op == "attn_prefill":
                    q_lens, ctxs, causal = [n] * b, [c] * b, True
                else:
                    q_lens, ctxs, causal = [1] * b, [c] * b, False
                sig = ("attn", layer.attention_backend, s.q_heads, s.kv_heads, s.head_dim, op, n, b, c)
                if sig not in self.cache:
                    kv_bytes = sum(q + x for q, x in zip(q_lens, ctxs)) * s.kv_heads * s.head_dim * 2 * self.dtype.itemsize
                    k = self._copies(kv_bytes) if kv_bytes < 3 * self.l2 else 1
                    fns = [layer.attention.build(q_lens, ctxs, causal) for _ in range(k)]
                    self.cache[sig] = self.timer.measure(fns).row()
                    del fns
                emit((op, n, b, c) + self.cache[sig])
        elif op == "cpu_prepare":
            for n, b, c in pts:
                emit((op, n, b, c) + host_time(self._prepare_fn(b), repeats=HOST_REPEATS, sync=self._sync).row())
        elif op == "cpu_sample":
            logits = torch.randn(max(p[1] for p in pts), layer.shape.vocab, device=self.dev, dtype=self.dtype)
            for n, b, c in pts:
                fn = lambda b=b: torch.argmax(logits[:b], dim=-1).tolist()  # noqa: E731
                emit((op, n, b, c) + host_time(fn, repeats=HOST_REPEATS, sync=self._sync).row())
        elif op == "cpu_launch_layer":
            for n, b, c in pts:
                emit((op, n, b, c) + self._launch_cost(layer, b).row())
            self._launch_ex = None
        elif op == "cpu_graph_replay":
            for n, b, c in pts:
                emit((op, n, b, c) + self._graph_replay_cost(layer).row())
        else:
            raise VidurError(f"cannot measure operator {op!r}")

    def _prepare_fn(self, n: int, ctx: int = 1024, page: int = 16) -> Callable[[], object]:
        """What an engine does on the host each decode iteration for ``n`` sequences."""
        torch, dev = self.torch, self.dev
        pages = ctx // page + 1
        tables = [[(i * pages + j) for j in range(pages)] for i in range(n)]
        ids = [7] * n
        lens = [ctx + 1] * n

        def prep():
            positions = [x - 1 for x in lens]
            slots = [t[-1] * page + (p % page) for t, p in zip(tables, positions)]
            width = max(len(t) for t in tables)
            bt = [t + [0] * (width - len(t)) for t in tables]
            out = [
                torch.tensor(ids, dtype=torch.long),
                torch.tensor(positions, dtype=torch.long),
                torch.tensor(slots, dtype=torch.long),
                torch.tensor(lens, dtype=torch.int32),
                torch.tensor(bt, dtype=torch.int32),
            ]
            if self.gpu:
                out = [t.pin_memory().to(dev, non_blocking=True) for t in out]
            return out

        return prep

    def _layer_inputs(self, layer, n: int, ctx: int = 256):
        torch, s = self.torch, layer.shape
        w = layer.make_weights()
        x = torch.randn(n, s.hidden, device=self.dev, dtype=self.dtype)
        slots_total = n * (ctx + 1)
        kc = torch.zeros(slots_total, s.kv_heads, s.head_dim, device=self.dev, dtype=self.dtype)
        vc = torch.zeros_like(kc)
        slots = torch.arange(n, device=self.dev) * (ctx + 1) + ctx
        pos = torch.full((n,), ctx, device=self.dev, dtype=torch.long)
        att = layer.attention.build([1] * n, [ctx] * n, False)
        out_shape = (n, s.q_heads, s.head_dim)

        def attn(q, k_cache, v_cache):
            o = att()
            return o if hasattr(o, "shape") and tuple(o.shape) == out_shape else q

        return lambda: layer.forward(x, w, [1] * n, [ctx] * n, kc, vc, slots, pos, attn)

    def _launch_cost(self, layer, n: int):
        """Host time to issue one layer's kernels in eager mode, measured on the reference executor.

        The executor (built with two layers of this shard) runs an eager
        decode iteration of ``n`` sequences and its :class:`~vidur.reference.layers.OpClock`
        charges the host time of each layer's operators, attention included;
        the GPU never stalls the host within a pass. Where the executor cannot
        build the model (not a Llama-family decoder) the profiler's
        :meth:`LayerShard.forward` (the same layer code) runs back to back instead.
        """
        try:
            stats = self._launch_cost_executor(layer.shape.tp, n)
            self.launch_method = "reference executor, eager decode iteration, host time of each layer"
            return stats
        except Exception as exc:  # noqa: BLE001 - fall back to the shared layer run on its own
            self.launch_method = f"LayerShard.forward back to back (executor unavailable: {type(exc).__name__}: {exc})"[:300]
            self._launch_ex = None
            self._free()
        return self._launch_cost_layer(layer, n)

    def _launch_executor(self, tp: int):
        ex = self._launch_ex
        if ex is None or ex.tp != tp:
            from vidur.reference.executor import ReferenceExecutor

            self._launch_ex = None
            ctx, most = LAUNCH_CONTEXT, LAUNCH_MAX_SEQS
            ex = ReferenceExecutor(
                self.model,
                "cuda" if self.gpu else "cpu",
                max_kv_tokens=most * (ctx + 1),
                reserved_tokens=most * (ctx + 1),
                max_batch_tokens=most,
                max_seq_tokens=ctx + 2,
                max_requests=most,
                tp=tp,
                layers=2,
                dtype=self.dtype,
                llama_only=False,
            )
            self._launch_ex = ex
        return ex

    def _launch_cost_executor(self, tp: int, n: int):
        """Host time per layer of the executor's eager forward pass over ``n`` decodes (ms)."""
        from vidur.reference.layers import LAYER_STEPS
        from vidur.profile.timing import Stats

        ex = self._launch_executor(tp)
        runs = ex.time_iteration([LAUNCH_CONTEXT] * min(n, LAUNCH_MAX_SEQS), repeats=7, warmup=2)
        return Stats([sum(r.get(op, 0.0) for op in LAYER_STEPS) * 1e3 for r in runs])

    def _launch_cost_layer(self, layer, n: int):
        """Host time to issue one layer's kernels (:meth:`LayerShard.forward`, back to back, no sync inside)."""
        from vidur.profile.timing import Stats

        fwd = self._layer_inputs(layer, n)
        fwd()
        self._sync()
        samples = []
        reps = 8
        for _ in range(7):
            self._sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                fwd()
            samples.append((time.perf_counter() - t0) / reps * 1e3)
            self._sync()
        return Stats(samples)

    def _graph_replay_cost(self, layer):
        """Host time of replaying a captured one-layer decode step."""
        from vidur.profile.timing import Stats

        torch = self.torch
        fwd = self._layer_inputs(layer, 1)
        side = torch.cuda.Stream(self.dev)  # warm up on a side stream before capture (as torch advises)
        side.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(side):
            fwd()
            fwd()
        torch.cuda.current_stream(self.dev).wait_stream(side)
        self._sync()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fwd()
        g.replay()
        samples = []
        for _ in range(9):
            self._sync()
            t0 = time.perf_counter()
            g.replay()
            samples.append((time.perf_counter() - t0) * 1e3)
        self._sync()
        return Stats(samples)

    # -- one shard -------------------------------------------------------------------
    def run_shard(
        self,
        out: Path,
        tp: int,
        meta: dict,
        ops: set[str] | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Measure shard ``tp`` into ``out``; returns True when complete."""
        f = out / store.shard_file(tp)
        rows = store.read_partial_rows(f)
        done = {_key(r[0], r[1], r[2], r[3]) for r in rows}
        plan = build_plan(self.model, self.grid, self.gpu, ops)
        info = meta["shards"].setdefault(str(tp), {"file": f.name, "rows": 0, "complete": False})
        info.update({"file": f.name, "rows": len(rows), "complete": False})
        info.setdefault("started", _now())
        t_start = time.time()
        if self.gpu:
            from vidur.reference.layers import LayerShard

            layer = LayerShard(self.model, tp, self.dev, self.dtype)
            info["attention_backend"] = layer.attention.select_backend()
            if layer.attention.errors:
                info["attention_passed_over"] = dict(layer.attention.errors)
        else:
            from vidur.profile.cpu import CpuProber

            layer = CpuProber(self.model, tp, self.grid, self.dtype, self.repeats)
            info["attention_backend"] = layer.attention_backend
            info["executor"] = layer.describe()
        if self.model.is_moe:  # how the experts ran (vidur.reference.layers.experts_kernel); the CPU loops
            info["experts_kernel"] = getattr(layer, "experts_kernel", None) or "loop"
        store.write_metadata(out, meta)

        bar = None
        total = plan.total(done)
        if not self.gpu and total:  # CPU: run every probe first, then write the rows
            keys = [k for op, pts in plan.groups for p in pts if _key(op, *p) not in done for k in layer.probe_keys(op, *p)]
            todo = len(set(keys)) * layer.rounds
            probe_bar = _progress(todo, f"{self.model.short_name} tp{tp} probes") if self.progress else None
            try:
                layer.measure(keys, deadline, probe_bar.update if probe_bar is not None else None)
            finally:
                if probe_bar is not None:
                    probe_bar.close()
            info["executor"] = layer.describe()
        elif self.progress and total:
            bar = _progress(total, f"{self.model.short_name} tp{tp}")
        count = len(rows)
        complete = True
        try:
            for op, pts in plan.groups:
                todo = [p for p in pts if _key(op, *p) not in done]
                if not todo:
                    continue
                if self.gpu and deadline is not None and time.time() > deadline:
                    complete = False
                    break
                buf: list[tuple] = []

                def emit(row: tuple) -> None:
                    buf.append(row)
                    if bar is not None:
                        bar.update(1)

                try:
                    self._measure_group(layer, op, todo, emit)
                except VidurError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep what was measured, report the rest
                    info.setdefault("errors", []).append(f"{op}: {type(exc).__name__}: {str(exc)[:200]}")
                    if self.gpu and "out of memory" in str(exc).lower():
                        self._free()
                finally:
                    if buf:
                        store.write_shard_rows(f, buf)
                        count += len(buf)
                        done.update(_key(r[0], r[1], r[2], r[3]) for r in buf)
                    info["rows"] = count
                    store.write_metadata(out, meta)
                self._free()
        finally:
            if bar is not None:
                bar.close()
        missing = plan.total(done)
        mlp_core = "experts" if self.model.is_moe else "down_proj"
        for core in ("qkv_proj", "o_proj", mlp_core, "attn_prefill", "attn_decode"):
            if (ops is None or core in ops) and not any(k[0] == core for k in done):
                complete = False
        if missing and not info.get("errors"):
            complete = False
        info["missing_points"] = missing
        info["complete"] = complete
        info["rows"] = count
        info["ops"] = sorted({k[0] for k in done})  # what the shard measured (store.pricing_gap reads it)
        if complete:
            info["finished"] = _now()
        if self.gpu:
            info["graph_capture_fallbacks"] = getattr(self.timer, "graph_failures", 0)
            if getattr(self, "launch_method", None):
                info["launch_method"] = self.launch_method
        del layer
        self._launch_ex = None
        info["seconds"] = round(info.get("seconds", 0.0) + time.time() - t_start, 1)
        store.write_metadata(out, meta)
        return complete


class _PlainProgress:
    """Progress lines on stderr when tqdm is not installed (bare GPU machines)."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.t0, self.last = total, desc, 0, time.time(), 0.0

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.time()
        if now - self.last > 10 or self.n == self.total:
            self.last = now
            print(f"{self.desc}: {self.n}/{self.total} points, {now - self.t0:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="pt", leave=True, file=sys.stderr)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def profile_model(
    model: ModelSpec,
    device: str = "cpu",
    tps: Iterable[int] = (1,),
    *,
    out: str | Path | None = None,
    root: str | Path | None = None,
    device_name: str | None = None,
    grid: Grid | None = None,
    dtype: str | None = None,
    repeats: int | None = None,
    ops: Iterable[str] | None = None,
    progress: bool = True,
    force: bool = False,
    time_budget_s: float | None = None,
    command: str | None = None,
    threads: int | None = None,
) -> Path:
    """Profile ``model`` on ``device`` for each tensor-parallel degree in ``tps``; return the profile dir.

    ``out`` is the profile directory (default ``<root>/<device name>/<model id>``,
    ``root`` defaulting to ``./profiles``). Complete shards are kept unless
    ``force``; incomplete ones resume. ``time_budget_s`` stops cleanly
    (resumable) when exceeded. ``threads`` sets torch's CPU threads (CPU
    profiles default to 1: steadier timings on shared machines; the count is
    recorded in the metadata).
    """
    from vidur.model.catalog import check_parallelism

    tps = sorted({int(t) for t in tps})
    if not tps:
        raise VidurError("give at least one tensor-parallel degree (--tp 1,2,4,8)")
    for t in tps:
        check_parallelism(model, t, 1)
    opset = None if ops is None else set(ops)
    if opset is not None:
        unknown = opset - store.KNOWN_OPS
        if unknown:
            raise VidurError(f"unknown operator(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(store.KNOWN_OPS))}")
    if threads is None and str(device).lower() == "cpu":
        threads = 1
    prof = Profiler(model, device, grid=grid, dtype=dtype, repeats=repeats, progress=progress, threads=threads)
    name = device_name or device_sku(prof.dev)
    outdir = Path(out) if out else Path(root or store.user_profiles_dir()) / name / model.name
    outdir.mkdir(parents=True, exist_ok=True)
    meta = _open_metadata(outdir, model, name, prof, command, fresh=force and set(_shard_tps(outdir)) <= set(tps))
    deadline = time.time() + time_budget_s if time_budget_s is not None else None
    for t in tps:
        info = meta["shards"].get(str(t))
        if info and info.get("complete") and not force:
            continue
        if force:
            (outdir / store.shard_file(t)).unlink(missing_ok=True)
            meta["shards"].pop(str(t), None)
        prof.run_shard(outdir, t, meta, opset, deadline)
    meta["updated"] = _now()
    shard_tps = sorted(int(t) for t in meta["shards"])
    meta["seconds"] = round(sum(s.get("seconds", 0.0) for s in meta["shards"].values()), 1)
    meta["regenerate"] = (
        f"vidur profile --model {model.name} --device {'cuda' if prof.gpu else 'cpu'} "
        f"--tp {','.join(map(str, shard_tps))} --force --out <this directory>  ("
        f"{meta['seconds']:.0f} s of measurement here)"
    )
    store.write_metadata(outdir, meta)
    return outdir


def _cpu_layers(model: ModelSpec, prof: Profiler) -> int:
    from vidur.profile.cpu import profile_layers

    return profile_layers(model, 1, prof.dtype.itemsize)


def _shard_tps(outdir: Path) -> list[int]:
    if not (outdir / store.METADATA).is_file():
        return []
    return [int(t) for t in store.read_metadata(outdir).get("shards", {})]


def _open_metadata(
    outdir: Path, model: ModelSpec, name: str, prof: Profiler, command: str | None, fresh: bool = False
) -> dict:
    """The profile's metadata: read back (resuming or adding shards) unless ``fresh`` (every shard is
    re-measured: ``--force``), when it starts over with this run's method, grid and machine."""
    spec = attrs.asdict(model)
    if (outdir / store.METADATA).is_file():
        meta = store.read_metadata(outdir)
        old = meta.get("model_spec", {})
        diff = [k for k in store.SHAPE_FIELDS if k in old and old[k] != spec.get(k)]
        if meta.get("model") != model.name or diff:
            raise VidurError(
                f"{outdir} holds a profile of {meta.get('model')}, not {model.name}; choose another --out"
            )
        if meta.get("dtype") != prof.dtype_name:
            raise VidurError(f"{outdir} was profiled in {meta.get('dtype')}, not {prof.dtype_name}; choose another --out")
        if not fresh:
            meta.setdefault("commands", []).append(command or " ".join(sys.argv))
            return meta
    return {
        "format": store.FORMAT,
        "model": model.name,
        "model_spec": spec,
        "device": name,
        "device_info": device_info(prof.dev),
        "dtype": prof.dtype_name,
        "method": prof.method,
        "layers_profiled": 1 if prof.gpu else _cpu_layers(model, prof),
        "grid": attrs.asdict(prof.grid),
        "created": _now(),
        "command": command or " ".join(sys.argv),
        "regenerate": f"vidur profile --model {model.name} --device {'cuda' if prof.gpu else 'cpu'} --tp <degrees>",
        "shards": {},
    }
