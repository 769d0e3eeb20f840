"""Evaluation over several processes (``accelerate launch`` / ``torchrun``): which batches each process scores, and
how their results meet.

The rows are cut into the batches one process makes (batch k = rows [k*B, (k+1)*B)), and process p of W scores
batches p, p + W, p + 2W, ... So a batch holds the same rows as in one process (the model sees the same inputs in
the same shapes: per-row outputs are the same numbers), batch counts differ by at most one between processes (no
process waits for another longer than one batch), and nothing is padded: unlike a DataLoader prepared by
Accelerate, no row is repeated to even out the batches, so there is nothing for ``gather_for_metrics`` to drop.

At the end every process sends its share (the batch numbers it scored, its accumulator's state, its prediction
records) to the main process (``gather_object``), which puts the batches back in row order, merges the
accumulators (``TaskMetric.merge``), computes the metrics once and broadcasts them: every process returns the same
numbers. A failure on any process (a bad row, say) is broadcast the same way, so every process raises instead of
waiting in a collective for one that has stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os

from .batch import EvaluationBatch


def process_group(distributed: bool | None) -> tuple[int, int]:
    """(rank, world size) of an evaluation. ``False``: (0, 1), this process scores every row. ``None`` (automatic)
    or ``True``: the default ``torch.distributed`` group, created from the launcher's environment (Accelerate's
    ``PartialState``) when ``WORLD_SIZE`` says there are several processes and no group exists yet; (0, 1) when
    there is one process. ``True`` without several processes is a ``ValueError``."""
    if distributed is False:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from ..analysis import distributed_shard

        distributed_shard()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    if distributed:
        raise ValueError("distributed=True needs several processes (accelerate launch / torchrun); this is one")
    return 0, 1


def batch_shard(num_rows: int, batch_size: int, rank: int, world_size: int) -> tuple[list[int], list[list[int]]]:
    """(batch numbers, their row indices) that process ``rank`` of ``world_size`` scores: every world-th batch of
    the one-process run, starting at ``rank``."""
    numbers = list(range(rank, math.ceil(num_rows / batch_size), world_size))
    return numbers, [list(range(k * batch_size, min((k + 1) * batch_size, num_rows))) for k in numbers]


def batch_on_cpu(batch: EvaluationBatch) -> EvaluationBatch:
    """``batch`` with its model outputs on the CPU, to send to the main process (accumulators that cannot merge)."""
    return dataclasses.replace(
        batch, raw={column: value.cpu() for column, value in batch.raw.items()},
        normalized_points={column: None if value is None else value.cpu()
                           for column, value in batch.normalized_points.items()})


def can_merge(accumulator) -> bool:
    """Whether ``accumulator`` declares the state ``TaskMetric.merge`` combines."""
    return bool(getattr(accumulator, "batch_state", ()) or getattr(accumulator, "summed_state", ()))


@dataclasses.dataclass
class Share:
    """What one process sends to the main process: the batch numbers it scored, and per batch its prediction
    records (when kept); its accumulator's ``state()``, or, for an accumulator that cannot merge, its evaluated
    batches; or the failure that stopped it (its message and whether it is the user's mistake: a
    ``ValueError``/``KeyError`` naming a row, task or column)."""

    rank: int
    numbers: list[int]
    records: list[list[dict]]
    state: dict | None = None
    batches: list[EvaluationBatch] | None = None
    failure: str | None = None
    user_error: bool = True


def _message(error: BaseException) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def failure_of(error: BaseException, rank: int) -> Share:
    """The ``Share`` a process sends when ``error`` stopped its batches."""
    return Share(rank, [], [], failure=_message(error), user_error=isinstance(error, (KeyError, ValueError)))


def _combine(accumulator, shares: list[Share]) -> tuple[dict, list[list[dict]]]:
    """On the main process: the metrics over every share, and the records of every batch in batch order."""
    order = sorted(((number, share, position) for share in shares for position, number in enumerate(share.numbers)),
                   key=lambda item: item[0])
    if all(share.batches is None for share in shares):
        accumulator.merge([(share.numbers, share.state) for share in shares])
        records = [share.records[position] for _, share, position in order if share.records]
    else:
        records = [accumulator.update(share.batches[position]) for _, share, position in order]
    return accumulator.compute(), records


def gather_and_compute(accumulator, share: Share, rank: int, world_size: int,
                       local_error: BaseException | None = None) -> tuple[dict, list[list[dict]]]:
    """Every process calls this with its ``Share`` (and the error that stopped its batches, if one did); ->
    (the metrics, the same on every process; per batch the prediction records: every batch's in row order on the
    main process, this process's own elsewhere).

    Raises on every process when one failed: a process that failed raises its own error, the others a
    ``ValueError`` (a user's mistake) or ``RuntimeError`` with the first failing process's message."""
    import torch.distributed as dist

    gathered = [None] * world_size if rank == 0 else None
    dist.gather_object(share, gathered, dst=0)
    outcome, own_error = [None], None
    if rank == 0:
        failed = [item for item in gathered if item.failure is not None]
        if failed:
            outcome[0] = ("failed", failed[0].rank, failed[0].failure, failed[0].user_error)
        else:
            try:
                metrics, records = _combine(accumulator, gathered)
                outcome[0] = ("ok", metrics)
            except Exception as error:  # noqa: BLE001 - sent to every process, then raised here as it is
                own_error = error
                outcome[0] = ("failed", 0, _message(error), isinstance(error, (KeyError, ValueError)))
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0][0] == "failed":
        if own_error is not None or local_error is not None:
            raise own_error or local_error
        _, _, message, user_error = outcome[0]
        raise (ValueError if user_error else RuntimeError)(message)
    return outcome[0][1], (records if rank == 0 else share.records)


__all__ = ["Share", "batch_on_cpu", "batch_shard", "can_merge", "failure_of", "gather_and_compute",
           "process_group"]
