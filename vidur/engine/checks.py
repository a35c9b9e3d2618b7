"""Run-time checks of what policies hand the engine (slow paths only).

The event loop tests each batch and route with a comparison or two and
calls these functions only when a test fails; they raise a
:class:`~vidur.errors.PolicyOutputError` with one line saying what was
wrong, which the simulation turns into an error naming the plugin and its
distribution.
"""

from __future__ import annotations

import numbers

from vidur.entities.batch import Batch
from vidur.errors import PolicyOutputError


def _where(now: float, replica: int) -> str:
    return f"at t={now:.6g} s on replica {replica}"


def check_batch(batch, max_batch_size: float, replica: int, now: float) -> None:
    """Raise if ``batch`` (just returned by ``schedule()``) cannot run."""
    if not isinstance(batch, Batch):
        where = _where(now, replica)
        raise PolicyOutputError(
            "replica_scheduler", f"schedule() returned {type(batch).__name__} {where}; return a Batch or None"
        )
    s = batch.shape
    if s.num_tokens == 0 or not batch:
        where = _where(now, replica)
        raise PolicyOutputError(
            "replica_scheduler", f"schedule() returned an empty Batch {where}; return None when there is nothing to run"
        )
    n = s.num_prefill + s.num_decode
    if n > max_batch_size:
        where = _where(now, replica)
        raise PolicyOutputError(
            "replica_scheduler",
            f"schedule() returned a batch of {n} requests {where}, over max_batch_size {max_batch_size:g}",
        )
    ids = [r.id for r in batch.prefills]
    if len(set(ids)) < len(ids):
        where = _where(now, replica)
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PolicyOutputError(
            "replica_scheduler", f"schedule() put request {dup} into one batch twice {where}"
        )


def duplicate_decode(req, now: float) -> PolicyOutputError:
    """A request decoded twice in one batch (found when the batch ends)."""
    return PolicyOutputError(
        "replica_scheduler", f"schedule() put request {req.id} into one batch twice (two decode tokens) "
        f"in the batch ending at t={now:.6g} s"
    )


def route_index(i, num_replicas: int, req) -> int:
    """The replica index ``route()`` returned, checked (a numpy integer in range is accepted)."""
    if isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i < num_replicas:
        return int(i)
    raise PolicyOutputError(
        "global_scheduler", f"route() returned {i!r} for request {req.id}; return a replica index, "
        f"an int in range({num_replicas})"
    )


def stalled(replicas) -> None:
    """Raise if any replica still holds requests after the last event (the policy stalled)."""
    for rep in replicas:
        book = rep.book
        if book.waiting or book.running:
            raise PolicyOutputError(
                "replica_scheduler",
                f"stalled: replica {rep.index} holds {len(book.waiting)} waiting and {len(book.running)} running "
                "requests, but schedule() returned None with no batch in flight and nothing left to wait for",
            )
