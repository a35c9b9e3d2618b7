"""Raw records a simulation produces; the metrics package turns them into reports.

Everything is columnar numpy (no Python object per token or per batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import numpy as np

from vidur.errors import VidurError

if TYPE_CHECKING:
    from vidur.metrics.batch_summary import BatchSummary

REQUEST_COLUMNS = (
    "request_id",  # int64, 0..n-1 in arrival order
    "replica",  # int64, replica that served it
    "arrival",  # float64 s
    "prompt_tokens",  # int64
    "output_tokens",  # int64
    "first_scheduled",  # float64 s, first time it entered a batch
    "first_token",  # float64 s, end of the iteration that produced output token 1
    "completion",  # float64 s, end of the iteration that produced the last token
    "preemptions",  # int64, times it was preempted (recompute)
    "recomputed_tokens",  # int64, prefill tokens processed again after preemption
)
# optional request columns, present when they apply: "cached_tokens" (int64,
# prompt tokens found in the prefix cache at first admission; runs with prefix
# caching) and "session" (int64; session workloads)

BATCH_COLUMNS = (
    "replica",  # int64
    "start",  # float64 s, when the iteration was formed (stage 0 start)
    "end",  # float64 s, when its last stage finished
    "num_seqs",  # int64 requests in the batch
    "num_prefill",  # int64 requests with a prefill chunk
    "prefill_tokens",  # int64 Σ chunk lengths
    "prefill_work",  # float64 Σ q·(ctx+(q+1)/2)
    "num_decode",  # int64 decoding requests
    "decode_kv",  # int64 Σ (ctx+1) over decodes
    "kv_blocks_used",  # int64 blocks allocated on the replica after forming the batch
    "prefill_kv",  # int64 Σ (ctx + q) over prefill chunks: KV entries they attend to
)


@attrs.define
class ReplicaInfo:
    """Static facts about one replica needed by reports."""

    replica: int
    device: str
    num_gpus: int  # tp * pp
    tp: int
    pp: int
    kv_blocks: int  # capacity
    block_size: int
    peak_flops: float  # per GPU
    memory_bandwidth: float  # per GPU, bytes/s
    #: prefix-cache counters (hit_tokens, query_tokens, evicted_blocks,
    #: recompute_hit_tokens), None when the replica does not cache prefixes
    prefix_cache: dict | None = None


class BatchRowsNotKept(Mapping):
    """``RunRecords.batches`` of a run with ``metrics.batch_log: summary``: the rows
    were folded into ``RunRecords.batch_summary`` and dropped, so any read of a
    batch column is refused in one line (never an empty, silently wrong table)."""

    MESSAGE = (
        "this run kept no per-batch rows (metrics.batch_log: summary, the default above "
        "100,000 requests); rerun with -s metrics.batch_log full"
    )

    def __getitem__(self, key):
        raise VidurError(self.MESSAGE)

    def __iter__(self):
        raise VidurError(self.MESSAGE)

    def __len__(self):
        raise VidurError(self.MESSAGE)

    def __repr__(self) -> str:
        return "BatchRowsNotKept()"


@attrs.define
class RunRecords:
    """Everything a run measured.

    ``requests`` and ``batches`` map the column names above to equal-length
    numpy arrays. ``itl_values``/``itl_counts`` are inter-token latencies as
    weighted samples: value ``itl_values[i]`` seconds occurred
    ``itl_counts[i]`` times. ``stage_spans`` (optional, PP/chrome trace) maps
    to arrays ``replica, stage, start, end, batch`` (batch = row in batches).

    With ``metrics.batch_log: summary`` the rows are not kept: ``batches`` is
    :class:`BatchRowsNotKept` and ``batch_summary`` holds the per-replica
    aggregates (:class:`vidur.metrics.batch_summary.BatchSummary`).
    """

    requests: dict[str, np.ndarray]
    batches: dict[str, np.ndarray]
    itl_values: np.ndarray
    itl_counts: np.ndarray
    replicas: list[ReplicaInfo]
    makespan: float  # time of the last event
    wall_seconds: float = 0.0
    stage_spans: dict[str, np.ndarray] | None = None
    batch_summary: "BatchSummary | None" = None

    @property
    def num_batches(self) -> int:
        """Batches the run formed (either log mode)."""
        if self.batch_summary is not None:
            return self.batch_summary.num_batches
        return len(self.batches["start"]) if "start" in self.batches else 0
