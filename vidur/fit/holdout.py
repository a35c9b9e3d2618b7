"""Held-out accuracy of a fitted profile: what `vidur fit` reports.

- :func:`holdout_mape`: fit on 80 % of each operator's points (a sweep's end
  points always kept), error on the other 20 %;
- :func:`row_holdout_mape`: leave one attention row out (a prefill chunk
  length or a decode batch size) and predict it from the rows around it:
  the error between profiled rows, which the point hold-out never tests.
"""

from __future__ import annotations

import numpy as np

from vidur.fit.curves import MS, FittedShard, fit_shard
from vidur.store.profiles import CPU_OPS, Profile


def _holdout_mask(cols: dict[str, np.ndarray], op: str, frac: float, rng: np.random.Generator) -> np.ndarray:
    """True = training row. Never holds out the first/last point of a sweep (they bound the grid)."""
    n = len(cols["op"])
    keep = np.ones(n, dtype=bool)
    if n < 3:
        return keep
    if op == "attn_prefill":
        groups = list(zip(cols["batch"], cols["num_tokens"]))
        axis = cols["context"]
    elif op == "attn_decode":
        groups = list(cols["batch"])
        axis = cols["context"]
    elif op in CPU_OPS:
        groups = [0] * n
        axis = cols["batch"]
    else:
        groups = [0] * n
        axis = cols["num_tokens"]
    groups_arr = np.array([hash(g) for g in groups])
    candidates = []
    for g in np.unique(groups_arr):
        idx = np.nonzero(groups_arr == g)[0]
        if len(idx) < 3:
            continue
        lo, hi = axis[idx].min(), axis[idx].max()
        candidates.extend(i for i in idx if lo < axis[i] < hi)
    k = int(round(frac * n))
    if candidates and k:
        out = rng.choice(np.array(candidates), size=min(k, len(candidates)), replace=False)
        keep[out] = False
    return keep


def predict_rows(fs: FittedShard, op: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Predicted seconds for measurement rows of ``op``."""
    if op in fs.token:
        return fs.token[op].eval_array(np.maximum(cols["num_tokens"], 1))
    if op in fs.cpu:
        return fs.cpu[op].eval_array(np.maximum(cols["batch"], 1))
    out = np.empty(len(cols["op"]))
    for i in range(len(out)):
        q, b, c = cols["num_tokens"][i], cols["batch"][i], cols["context"][i]
        if op == "attn_prefill":
            out[i] = max(b, 1) * fs.prefill_time(q, c) * fs.prefill_batch_factor(b, q)
        else:
            out[i] = fs.decode_time(b, c)
    return out


def holdout_mape(
    profile: Profile, frac: float = 0.2, seed: int = 0, backend: str = "numpy"
) -> dict[int, dict[str, dict[str, float]]]:
    """Fit on (1 − frac) of each operator's points, report error on the rest.

    Returns ``{tp: {op: {"mape": %, "max_ape": %, "n_test": k}}}``.
    """
    rng = np.random.default_rng(seed)
    out: dict[int, dict[str, dict[str, float]]] = {}
    for t, data in sorted(profile.shards.items()):
        masks = {op: _holdout_mask(data.select(op), op, frac, rng) for op in data.ops()}
        fs = fit_shard(data, masks, backend)
        res = {}
        for op in data.ops():
            cols = data.select(op)
            test = ~masks[op]
            if not test.any():
                continue
            sub = {k: v[test] for k, v in cols.items()}
            pred = predict_rows(fs, op, sub)
            meas = sub["median_ms"] * MS
            ape = np.abs(pred - meas) / meas * 100
            res[op] = {"mape": float(ape.mean()), "max_ape": float(ape.max()), "n_test": int(test.sum())}
        out[t] = res
    return out


def row_holdout_mape(profile: Profile, backend: str = "numpy") -> dict[int, dict[str, dict[str, float]]]:
    """Leave one row out: every interior prefill chunk length (single chunks from 2 tokens, rows swept
    over at least 3 contexts) and decode batch size in turn is removed and predicted from the rows around it.

    The point hold-out (:func:`holdout_mape`) keeps every row, so it never
    tests what most queries need: a chunk length or batch size between the
    profiled ones. Returns ``{tp: {op: {"mape", "max_ape", "n_test", "rows"}}}``.
    """
    out: dict[int, dict[str, dict[str, float]]] = {}
    for t, data in sorted(profile.shards.items()):
        res = {}
        for op, key in (("attn_prefill", "num_tokens"), ("attn_decode", "batch")):
            cols = data.select(op)
            if not len(cols["op"]):
                continue
            single = cols["batch"] <= 1 if op == "attn_prefill" else np.ones(len(cols["op"]), dtype=bool)
            keys, counts = np.unique(cols[key][single], return_counts=True)
            # rows swept over the context (>= 3 points); prefill from 2 tokens (one token runs another kernel)
            rows = keys[(counts >= 3) & ((keys >= 2) if op == "attn_prefill" else True)]
            apes = []
            for r in rows[1:-1]:
                test = single & (cols[key] == r)
                fs = fit_shard(data, {op: ~test}, backend)
                sub = {k: v[test] for k, v in cols.items()}
                meas = sub["median_ms"] * MS
                apes.append(np.abs(predict_rows(fs, op, sub) - meas) / meas * 100)
            if apes:
                a = np.concatenate(apes)
                res[op] = {"mape": float(a.mean()), "max_ape": float(a.max()), "n_test": int(len(a)), "rows": len(rows) - 2}
        out[t] = res
    return out
