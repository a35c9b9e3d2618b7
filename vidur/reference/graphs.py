"""CUDA graphs for decode-only iterations of the reference executor, as vLLM captures them: one graph
per batch-size bucket, inputs padded to the bucket."""

from __future__ import annotations

import numpy as np

from vidur.reference.kv import PAGE


class CudaGraphs:
    """The graph capture and replay inputs of :class:`vidur.reference.executor.ReferenceExecutor`
    (a mixin: it reads the executor's pools, shapes and :meth:`_forward`)."""

    @property
    def graph_max_batch(self) -> int:
        """Largest decode batch that replays a CUDA graph (0: eager only)."""
        return max(self._graph_sizes) if self._graph_sizes else 0

    @property
    def graph_sizes(self) -> tuple[int, ...]:
        """The decode batch sizes captured as CUDA graphs, ascending (empty: eager only); a decode
        batch of up to the largest runs padded to the next one."""
        return tuple(self._graph_sizes)

    def _bucket(self, n: int) -> int:
        for b in self._graph_sizes:
            if b >= n:
                return b
        return -1

    def capture_graphs(self, max_batch: int) -> int:
        """Capture one CUDA graph per decode batch-size bucket up to ``max_batch``; return the largest.

        Decode-only iterations of up to that many sequences then replay a
        graph (inputs padded to the bucket). Needs a FlashAttention varlen
        kernel (``paged`` or ``flash``); on any capture failure the executor
        stays eager and returns 0.
        """
        if self.kernel not in ("paged", "flash") or max_batch < 1:
            return 0
        cands = [1, 2, 4] + list(range(8, max_batch + 8, 8))  # vLLM's buckets
        sizes = [c for c in cands if c < max_batch] + [min(c for c in cands if c >= max_batch)]
        width = -(-self.max_pos // PAGE) if self.kernel == "paged" else 0
        if self._pad_slot is None:  # where padded rows write (and read) their dummy KV
            if self.kernel == "paged":
                if not self.free_pages:
                    return 0
                self._pad_page = self.free_pages.pop(0)  # the highest page id
                self._pad_slot = self._pad_page * PAGE
            else:
                self._pad_slot = self.ranges.alloc(1)
                if self._pad_slot < 0:
                    self._pad_slot = None
                    return 0
        graphs: dict[int, dict] = {}
        try:
            for b in sorted(sizes, reverse=True):  # largest first: the others reuse its memory
                graphs[b] = self._capture_one(self._graph_buffers(b, width))
        except Exception as exc:  # noqa: BLE001 - stay eager when capture is not possible
            self.graph_error = f"{type(exc).__name__}: {exc}"[:300]
            self._graphs, self._graph_sizes = {}, []
            if self.device_type == "cuda":
                self.torch.cuda.synchronize(self.device)
            return 0
        self._graphs = graphs
        self._graph_sizes = sorted(graphs)
        return max(graphs)

    def _graph_buffers(self, b: int, width: int) -> dict:
        """Static input buffers of the decode graph for ``b`` sequences, and the forward inputs viewing them."""
        torch, dev = self.torch, self.device
        i64 = torch.zeros(3 * b, device=dev, dtype=torch.int64)
        i32 = torch.zeros(2 * (b + 1) + b + b * width, device=dev, dtype=torch.int32)
        ids, pos, slots = i64[:b], i64[b : 2 * b], i64[2 * b :]
        cu_q, cu_k = i32[: b + 1], i32[b + 1 : 2 * b + 2]
        used = i32[2 * b + 2 : 3 * b + 2]
        table = i32[3 * b + 2 :].view(b, width) if width else None
        g = {"b": b, "width": width, "i64": i64, "i32": i32}
        g["inputs"] = {
            "ids": ids, "pos": pos, "slots": slots, "n": b, "last": None,
            "calls": [(0, b, cu_q, cu_k, used, table, 1, self.max_pos, False)],
        }
        self._fill_graph_inputs(g, [])
        return g

    def _capture_one(self, g: dict) -> dict:
        """Capture ``g``'s forward pass into a CUDA graph (after two warm-up runs on a side stream)."""
        torch, dev = self.torch, self.device
        inp = g["inputs"]
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        pool = self._graph_pool
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):
                self._forward(inp)
        torch.cuda.current_stream(dev).wait_stream(stream)
        torch.cuda.synchronize(dev)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
            tokens = self._forward(inp)
        graph.replay()
        torch.cuda.synchronize(dev)
        g["graph"] = graph
        g["tokens"] = tokens
        return g

    def _fill_graph_inputs(self, g: dict, entries) -> None:
        """Write an iteration's inputs (padded to the bucket with 1-token dummies) into the static buffers."""
        b, width = g["b"], g["width"]
        n = len(entries)
        i64 = np.zeros(3 * b, dtype=np.int64)
        i32 = np.zeros(2 * (b + 1) + b + b * width, dtype=np.int64)
        used = np.ones(b, dtype=np.int64)
        slots = np.full(b, self._pad_slot, dtype=np.int64)
        starts = np.full(b, self._pad_slot, dtype=np.int64)  # contiguous ranges: first slot of each row
        table = np.full((b, width), self._pad_page if width else 0, dtype=np.int64)
        if n:
            ids, pos, _q, kvlens, sl, tab = self._host_arrays(entries)
            i64[:n] = ids
            i64[b : b + n] = pos
            slots[:n] = sl
            used[:n] = kvlens
            if width:
                table[:n, : tab.shape[1]] = tab
            else:
                starts[:n] = [s.base for _, s, _, _ in entries]
        i64[2 * b :] = slots
        i32[: b + 1] = np.arange(b + 1)
        if width:
            i32[b + 2 : 2 * b + 2] = np.cumsum(used)
            i32[3 * b + 2 :] = table.ravel()
        else:
            i32[b + 1 : 2 * b + 1] = starts
        i32[2 * b + 2 : 3 * b + 2] = used
        torch = self.torch
        g["i64"].copy_(torch.from_numpy(i64))
        g["i32"].copy_(torch.from_numpy(i32.astype(np.int32)))
