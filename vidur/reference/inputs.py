"""Host-side inputs of one reference-executor iteration: token ids, positions, KV slots, and the
int32 metadata of the attention calls, copied to the device once per dtype."""

from __future__ import annotations

import numpy as np

from vidur.reference.kv import PAGE


class IterationInputs:
    """Input preparation of :class:`vidur.reference.executor.ReferenceExecutor` (a mixin: it reads
    the executor's KV layout, kernel and device)."""

    def _host_arrays(self, entries):
        """ids, positions, query and KV lengths, KV slots of an iteration (numpy, host side)."""
        n_e = len(entries)
        qlens = np.fromiter((q for _, _, q, _ in entries), dtype=np.int64, count=n_e)
        ctxs = np.fromiter((c for _, _, _, c in entries), dtype=np.int64, count=n_e)
        kvlens = ctxs + qlens
        ids: list[int] = []
        for r, s, q, ctx in entries:
            ids.extend(s.tokens[ctx : ctx + q])
        total = int(qlens.sum())
        starts = np.repeat(np.cumsum(qlens) - qlens, qlens)
        pos = np.arange(total, dtype=np.int64) - starts + np.repeat(ctxs, qlens)
        if self.attention == "paged":
            width = max(len(s.pages) for _, s, _, _ in entries)
            table = np.zeros((n_e, width), dtype=np.int64)
            for i, (_, s, _, _) in enumerate(entries):
                table[i, : len(s.pages)] = s.pages
            rows = np.repeat(np.arange(n_e), qlens)
            slots = table[rows, pos // PAGE] * PAGE + pos % PAGE
        else:
            table = None
            bases = np.fromiter((s.base for _, s, _, _ in entries), dtype=np.int64, count=n_e)
            slots = pos + np.repeat(bases, qlens)
        return np.asarray(ids, dtype=np.int64), pos, qlens, kvlens, slots, table

    def _prepare(self, entries, nd: int) -> dict:
        """Host-side input preparation and one host-to-device copy per dtype."""
        torch = self.torch
        ids, pos, qlens, kvlens, slots, table = self._host_arrays(entries)
        n, n_e = len(ids), len(entries)
        cu = np.zeros(n_e + 1, dtype=np.int64)
        np.cumsum(qlens, out=cu[1:])
        flat = torch.from_numpy(np.concatenate([ids, pos, slots, cu[1:] - 1])).to(self.device)
        inp = {"ids": flat[:n], "pos": flat[n : 2 * n], "slots": flat[2 * n : 3 * n], "n": n}
        inp["last"] = None if n == n_e else flat[3 * n :]
        if self.kernel == "sdpa":
            inp["entries"] = entries
            return inp
        if table is not None:  # paged: KV of sequence i is pages table[i], cu_k the packed offsets
            kv_off = np.zeros(n_e + 1, dtype=np.int64)
            np.cumsum(kvlens, out=kv_off[1:])
        else:  # contiguous ranges: cu_k holds each sequence's first slot (its length is in seqused_k)
            kv_off = np.zeros(n_e + 1, dtype=np.int64)
            kv_off[:n_e] = [s.base for _, s, _, _ in entries]
        # int32 metadata, one group for the decodes and one for the prefill chunks
        groups = [(a, b) for a, b in ((0, nd), (nd, n_e)) if b > a]
        meta_parts, specs = [], []
        for a, b in groups:
            t0 = int(cu[a])
            k_part = kv_off[a : b + 1] - (kv_off[a] if table is not None else 0)
            if table is None:
                k_part = k_part.copy()
                k_part[-1] = 0
            parts = [cu[a : b + 1] - t0, k_part, kvlens[a:b]]
            if table is not None:
                parts.append(table[a:b].ravel())
            specs.append((a, b, t0, int(cu[b]), [len(x) for x in parts], int(qlens[a:b].max()), int(kvlens[a:b].max())))
            meta_parts += parts
        meta = torch.from_numpy(np.concatenate(meta_parts).astype(np.int32)).to(self.device)
        at = 0
        calls = []
        for a, b, t0, t1, sizes, max_q, max_k in specs:
            views = []
            for sz in sizes:
                views.append(meta[at : at + sz])
                at += sz
            tab = views[3].view(b - a, -1) if table is not None else None
            calls.append((t0, t1, views[0], views[1], views[2], tab, max_q, max_k, max_q > 1))
        inp["calls"] = calls
        return inp
