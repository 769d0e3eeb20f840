"""Infinite per-task sampling that gives every process distinct samples and resumes exactly.

The sample stream of a task is the concatenation of shuffled epochs, epoch e being a permutation of 0..N-1 drawn
from ``seed`` and ``e``; process r of W takes stream positions r, r + W, r + 2W, ... So at any moment the processes
hold distinct samples of the same epoch window, small datasets simply repeat (as the official tiled sampler does),
and the state of a process is one number: how many samples it has consumed.
"""

from __future__ import annotations

import numpy as np
import torch


class TaskStream(torch.utils.data.Sampler):
    """Yields ``(position, index)`` pairs for one process, starting at its ``start``-th sample.

    ``position`` is the global stream position (unique per sample draw; it seeds the sample's augmentation, so a
    resumed run augments exactly as an uninterrupted one), ``index`` the dataset row.
    """

    def __init__(self, num_rows: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if num_rows < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_rows, self.seed, self.rank, self.world_size, self.start = num_rows, seed, rank, world_size, start
        self._epoch, self._order = None, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            self._epoch = epoch
        return self._order

    def index_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_rows)
        return int(self._permutation(epoch)[offset])

    def __iter__(self):
        local = self.start
        while True:
            position = local * self.world_size + self.rank
            yield position, self.index_at(position)
            local += 1


def choose_tasks(names: list[str], weights: list[float], step: int, seed: int) -> list[str]:
    """Probability sampling: the tasks drawn for optimizer ``step`` (each task independently with probability
    weight / max weight, at least the most likely one), identical on every process and after a resume."""
    rng = np.random.default_rng([seed, 7919, step])
    top = max(weights)
    chosen = [name for name, weight in zip(names, weights) if rng.random() < weight / top]
    return chosen or [names[int(np.argmax(weights))]]


__all__ = ["TaskStream", "choose_tasks"]
