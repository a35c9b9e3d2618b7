"""Re-price the iterations of a saved validation run with another estimator (no GPU needed).

``vidur validate --out DIR`` keeps every measured iteration in
``DIR/iterations.csv``: the batch's aggregates and its measured and
predicted times. :func:`rescore` prices the same batches again, e.g. with a
profile fitted after a change to the fitting code, so that the change is
checked against the real measurements on any machine.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape
from vidur.validate.compare import iteration_errors, iteration_kind

REQUIRED = (
    "num_prefill", "prefill_tokens", "prefill_work", "num_decode", "decode_kv",
    "measured_ms", "measured_forward_ms", "predicted_ms", "predicted_forward_ms",
)


def predict_iteration(est, shape: BatchShape, overlap: bool = False) -> tuple[float, float]:
    """(iteration seconds with host overhead, forward seconds): what ``vidur validate`` predicts for a batch.

    The host overhead adds to the forward pass (the reference executor runs them one after the
    other); ``overlap``: the iteration takes their max instead (an executor that overlaps them)."""
    fwd = est.forward_time(shape)
    if overlap:
        cpu = est.cpu_overhead(shape.num_seqs)
        return (fwd if fwd > cpu else cpu), fwd
    if shape.num_prefill:
        return fwd + est.cpu_overhead(shape.num_seqs), fwd
    return float(est.decode_iteration_times(shape.num_decode, np.array([float(shape.decode_kv)]))[0]), fwd


def read_iterations_csv(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of a validation run's ``iterations.csv`` as float arrays (one clear error when malformed)."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise VidurError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not rows:
        raise VidurError(f"{p} has no iterations; pass the iterations.csv that `vidur validate --out DIR` wrote")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise VidurError(f"{p} lacks column {missing[0]!r}; pass the iterations.csv that `vidur validate --out DIR` wrote")
    cols = [c for c in rows[0] if c not in ("kind",)]
    out: dict[str, np.ndarray] = {}
    for c in cols:
        try:
            out[c] = np.array([float(r[c]) for r in rows])
        except (TypeError, ValueError):
            bad = next(i for i, r in enumerate(rows) if not _is_float(r[c]))
            raise VidurError(f"{p} line {bad + 2}: column {c!r} is not a number ({rows[bad][c]!r})") from None
    return out


def _is_float(x) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def batch_shapes(it: dict[str, np.ndarray]) -> list[BatchShape]:
    """The batches of a run. Runs saved before ``prefill_kv``/``prefill_sq`` were recorded get them
    from the other aggregates as if every chunk of an iteration were equal (exact for one chunk)."""
    n = len(it["num_prefill"])
    shapes = []
    for i in range(n):
        npf = int(it["num_prefill"][i])
        tok = int(it["prefill_tokens"][i])
        work = float(it["prefill_work"][i])
        if "prefill_kv" in it:
            kv, sq = int(it["prefill_kv"][i]), int(it["prefill_sq"][i])
        elif npf:
            q = tok / npf
            ctx = work / tok - (q + 1) / 2
            kv, sq = int(round(npf * (ctx + q))), int(round(npf * q * q))
        else:
            kv = sq = 0
        shapes.append(BatchShape(npf, tok, work, kv, sq, int(it["num_decode"][i]), int(it["decode_kv"][i])))
    return shapes


def rescore(it: dict[str, np.ndarray], est) -> dict:
    """Per-iteration errors of the run's own predictions (``before``) and of ``est``'s (``after``)."""
    shapes = batch_shapes(it)
    pred = np.empty(len(shapes))
    fwd = np.empty(len(shapes))
    for i, s in enumerate(shapes):
        pred[i], fwd[i] = predict_iteration(est, s)
    kinds = iteration_kind(it["num_prefill"], it["num_decode"])
    measured, measured_fwd = it["measured_ms"] / 1e3, it["measured_forward_ms"] / 1e3
    return {
        "before": iteration_errors(it["predicted_ms"] / 1e3, measured, kinds),
        "after": iteration_errors(pred, measured, kinds),
        "forward_before": iteration_errors(it["predicted_forward_ms"] / 1e3, measured_fwd, kinds),
        "forward_after": iteration_errors(fwd, measured_fwd, kinds),
        "predicted_ms": pred * 1e3,
    }


def format_rescore(res: dict) -> str:
    """A table: median and bias of |predicted - measured| / measured per batch kind, before and after."""
    lines = [f"{'batches':<13}{'count':>6}  {'median before':>13}  {'after':>7}  {'bias before':>11}  {'after':>7}"]
    for kind, b in res["before"].items():
        a = res["after"][kind]
        if not b["count"]:
            continue
        lines.append(
            f"{kind:<13}{b['count']:>6}  {b['median'] * 100:>12.1f}%  {a['median'] * 100:>6.1f}%"
            f"  {b['bias'] * 100:>+10.1f}%  {a['bias'] * 100:>+6.1f}%"
        )
    fb, fa = res["forward_before"].get("all"), res["forward_after"].get("all")
    if fb and fa:
        lines.append(f"forward pass only: median {fb['median'] * 100:.1f}% -> {fa['median'] * 100:.1f}%")
    return "\n".join(lines)
