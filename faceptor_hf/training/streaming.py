"""Streaming task datasets: rows read as training needs them, from parquet / arrow shards or a Hub dataset, instead
of a whole ``datasets.Dataset`` opened before step 1.

A task with ``streaming: true`` is a ``datasets.IterableDataset`` (``datasets.open_stream``) split across processes
with ``datasets.distributed.split_dataset_by_node``: by shard when the shard count is a multiple of the process
count (each process reads only its shards), else by example (every process reads every shard and keeps one row in
``world_size``). Each process's part is read in windows of ``shuffle_buffer_size`` rows, and each window is handed
out in an order drawn from (seed, task, process, epoch, window); when the part is exhausted the next epoch starts
(``set_epoch``: datasets reorders the shards). So the shuffle is buffered, not global: a row only mixes with the
rows read near it.

Exact resume: the state of a process's stream is the datasets ``state_dict()`` of its part at the start of the
current window, plus the epoch, the window number and how many rows of the window were handed out. The window is
re-read on resume (at most ``shuffle_buffer_size`` rows) and its order drawn again, so the rows, their order and
their augmentation (seeded by stream position, as in the map-style path) equal the uninterrupted run's. The state
travels with each batch (``stream_state``), so it is the state of the batches the loop consumed, not of those the
DataLoader prefetched.
"""

from __future__ import annotations

from itertools import islice

import numpy as np
import torch

from .config import STREAM_SPLITS
from .datasets import TaskDataError


def split_strategy(task_name: str, num_shards: int, world_size: int, requested: str = "auto") -> str:
    """How ``split_dataset_by_node`` splits a stream of ``num_shards`` shards over ``world_size`` processes:
    ``"shards"`` or ``"examples"`` (``requested="auto"``: shards when the count is a multiple of the processes, as
    datasets decides). Raises ``TaskDataError`` naming the task and key when ``shards`` is asked for and some process
    would get none."""
    if requested not in STREAM_SPLITS:
        raise TaskDataError(f"tasks.{task_name}.stream_split must be one of {', '.join(STREAM_SPLITS)}, got "
                            f"{requested!r}")
    if requested == "shards" and num_shards < world_size:
        raise TaskDataError(f"tasks.{task_name}.stream_split: shards needs at least one shard per process; the "
                            f"dataset has {num_shards} shard(s) for {world_size} processes (write more shards, e.g. "
                            "prepare-data --shard-size, or use stream_split: examples)")
    if requested == "auto":
        return "shards" if num_shards % world_size == 0 else "examples"
    return requested


def describe_split(strategy: str, num_shards: int, world_size: int) -> str:
    """The plan's words for a stream split."""
    if world_size == 1:
        return f"one process reads all {num_shards} shard(s)"
    if strategy == "shards":
        uneven = "" if num_shards % world_size == 0 else " (uneven: some processes read one shard more)"
        return f"by shard: each process reads {num_shards // world_size} of {num_shards} shard(s){uneven}"
    return (f"by example: every process reads all {num_shards} shard(s) and keeps 1 row in {world_size} "
            f"({num_shards} shard(s) is not a multiple of {world_size} processes)")


class ShuffledStream:
    """One process's endless stream of a task's rows: epochs of its part of ``dataset``, read in windows of
    ``buffer_size`` rows, each window in a seeded order. Iterating yields ``(row, state)``, ``state`` being what
    ``ShuffledStream(..., state=state)`` needs to continue right after that row.

    Args:
        dataset: the task's ``datasets.IterableDataset`` (all processes' rows).
        task_name: for error messages.
        seed: the run seed combined with the task (same on every process).
        buffer_size: rows per shuffle window.
        rank, world_size, strategy: this process, the process count and ``split_strategy``'s answer.
        state: where to start (None: the beginning of epoch 0).
    """

    def __init__(self, dataset, task_name: str, seed: int, buffer_size: int, rank: int = 0, world_size: int = 1,
                 strategy: str = "shards", state: dict | None = None):
        self.dataset, self.task_name, self.seed, self.buffer_size = dataset, task_name, seed, buffer_size
        self.rank, self.world_size, self.strategy = rank, world_size, strategy
        if state and state.get("buffer_size", buffer_size) != buffer_size:
            raise TaskDataError(f"tasks.{task_name}.shuffle_buffer_size is {buffer_size}, the checkpoint's stream "
                                f"was read in windows of {state['buffer_size']} rows; resume with "
                                f"shuffle_buffer_size: {state['buffer_size']} to continue exactly")
        self.state = dict(state) if state else {"epoch": 0, "window": 0, "source": None, "offset": 0}

    def _part(self, epoch: int, source: dict | None):
        from datasets.distributed import split_dataset_by_node

        # A new split per epoch: a loaded state_dict applies to the epoch it was saved in only.
        part = self.dataset if self.world_size == 1 else split_dataset_by_node(
            self.dataset, rank=self.rank, world_size=self.world_size, strategy=self.strategy)
        part.set_epoch(epoch)
        if source is not None:
            part.load_state_dict(source)
        return part

    def __iter__(self):
        epoch, window, source, offset = (self.state[key] for key in ("epoch", "window", "source", "offset"))
        while True:
            part = self._part(epoch, source)
            rows = iter(part)
            read_any = window > 0
            while True:
                block = list(islice(rows, self.buffer_size))
                if not block:
                    break
                read_any = True
                after = part.state_dict()
                order = np.random.default_rng([self.seed, self.rank, epoch, window]).permutation(len(block))
                for position in range(offset, len(block)):
                    if position + 1 < len(block):
                        state = {"epoch": epoch, "window": window, "source": source, "offset": position + 1}
                    else:
                        state = {"epoch": epoch, "window": window + 1, "source": after, "offset": 0}
                    state["buffer_size"] = self.buffer_size
                    yield block[order[position]], state
                window, source, offset = window + 1, after, 0
            if not read_any:
                raise TaskDataError(f"task {self.task_name!r}: process {self.rank} of {self.world_size} got no rows "
                                    f"from the stream in epoch {epoch} (split {self.strategy}); the dataset has "
                                    "fewer rows or shards than processes")
            epoch, window, source, offset = epoch + 1, 0, None, 0


class StreamedRows(torch.utils.data.Dataset):
    """Streamed rows -> examples, in the DataLoader's workers; an item is ``(stream position, row, state or
    None)``, and the example of an item with a state carries it as ``stream_state``."""

    def __init__(self, builder, seed: int, task_index: int):
        self.builder, self.seed, self.task_index = builder, seed, task_index

    def __getitem__(self, item):
        position, row, state = item
        generator = np.random.default_rng([self.seed, self.task_index, position])
        example = self.builder(row, generator, index=None)
        if state is not None:
            example["stream_state"] = state
        return example


class StreamedBatchSampler(torch.utils.data.Sampler):
    """Groups a ``ShuffledStream`` into lists of ``batch_size`` items ``(position, row, state)``: position
    ``local * world_size + rank`` for this process's ``local``-th sample (from ``start``), as the map-style
    ``TaskStream`` numbers them; the batch's last item carries the stream state after the batch."""

    def __init__(self, stream: ShuffledStream, batch_size: int, start: int = 0):
        self.stream, self.batch_size, self.start = stream, batch_size, start

    def __iter__(self):
        items, local = iter(self.stream), self.start
        rank, world_size = self.stream.rank, self.stream.world_size
        while True:
            batch = []
            for _ in range(self.batch_size):
                row, state = next(items)
                batch.append((local * world_size + rank, row, None))
                local += 1
            batch[-1] = (*batch[-1][:2], state)
            yield batch


def collate_streamed(examples: list[dict]) -> dict:
    """``collate_examples`` plus the ``stream_state`` of the batch's last example."""
    from .examples import collate_examples

    state = examples[-1].pop("stream_state")
    for example in examples:
        example.pop("stream_state", None)
    return {**collate_examples(examples), "stream_state": state}


def stream_loader(dataset, builder, *, task_name: str, task_index: int, batch_size: int, seed: int, rank: int,
                  world_size: int, strategy: str, buffer_size: int, start: int, state: dict | None,
                  num_workers: int) -> torch.utils.data.DataLoader:
    """Endless DataLoader of one streamed task's batches (``pixel_values`` (B, 3, S, S), ``target`` and the
    ``stream_state`` after the batch) for process ``rank``; the stream is read in this process, rows are decoded
    and augmented in the ``num_workers`` workers."""
    stream = ShuffledStream(dataset, task_name, seed * 1000 + task_index, buffer_size, rank=rank,
                            world_size=world_size, strategy=strategy, state=state)
    return torch.utils.data.DataLoader(
        StreamedRows(builder, seed, task_index), batch_sampler=StreamedBatchSampler(stream, batch_size, start),
        collate_fn=collate_streamed, num_workers=num_workers, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available())


def gather_stream_states(accelerator, states: dict) -> dict:
    """``{task: state}`` of this process -> ``{task: [state of process 0, 1, ...]}`` on every process (the
    checkpoint keeps them all; each process resumes from its own)."""
    from accelerate.utils import gather_object

    if accelerator.num_processes == 1:
        return {name: [state] for name, state in states.items()}
    gathered = gather_object([states])
    return {name: [per_process[name] for per_process in gathered] for name in states}


__all__ = ["STREAM_SPLITS", "ShuffledStream", "StreamedBatchSampler", "StreamedRows", "collate_streamed",
           "describe_split", "gather_stream_states", "split_strategy", "stream_loader"]
