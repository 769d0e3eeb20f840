"""The batches of one task for the training loop: dataset rows -> examples, drawn from the task's sample stream.

Every example is built with a generator seeded by its stream position, so a resumed run (whose streams restart at
the positions saved in its checkpoint) builds exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch

from .sampling import TaskStream


class TaskRows(torch.utils.data.Dataset):
    """Dataset rows -> examples; indexed by ``(stream position, row)`` so augmentation is seeded by position."""

    def __init__(self, rows, builder, seed: int, task_index: int):
        self.rows, self.builder, self.seed, self.task_index = rows, builder, seed, task_index

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, item):
        position, index = item
        generator = np.random.default_rng([self.seed, self.task_index, position])
        return self.builder(self.rows[index], generator, index=index)


class StreamBatchSampler(torch.utils.data.Sampler):
    """Groups a ``TaskStream`` into lists of ``batch_size`` items (a batch sampler over an infinite stream)."""

    def __init__(self, stream: TaskStream, batch_size: int):
        self.stream, self.batch_size = stream, batch_size

    def __iter__(self):
        items = iter(self.stream)
        while True:
            yield [next(items) for _ in range(self.batch_size)]


def task_loader(rows, builder, *, task_index: int, batch_size: int, seed: int, rank: int, world_size: int,
                start: int, num_workers: int) -> torch.utils.data.DataLoader:
    """Endless DataLoader of one task's batches (``collate_examples``: ``pixel_values`` (B, 3, S, S) and
    ``target``) for process ``rank`` of ``world_size``, starting at its ``start``-th sample."""
    from .examples import collate_examples

    stream = TaskStream(len(rows), seed=seed * 1000 + task_index, rank=rank, world_size=world_size, start=start)
    # Own generator: building loaders must not draw from the global RNG, which a resume restores.
    return torch.utils.data.DataLoader(
        TaskRows(rows, builder, seed, task_index), batch_sampler=StreamBatchSampler(stream, batch_size),
        collate_fn=collate_examples, num_workers=num_workers, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available())


def integer_range(rows, column: str) -> tuple[int | None, int | None]:
    """(min, max) of an integer label column read from the Arrow table without decoding any image; (None, None)
    for other columns (their values are checked row by row by the example builder)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in rows.column_names:
        return None, None
    values = rows.select_columns([column]).with_format("arrow")[:][column]
    if not pa.types.is_integer(values.type) or len(values) == 0:
        return None, None
    extremes = pc.min_max(values).as_py()
    return extremes["min"], extremes["max"]


__all__ = ["StreamBatchSampler", "TaskRows", "integer_range", "task_loader"]
