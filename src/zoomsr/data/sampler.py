"""A training stream that is a pure function of (seed, sample position).

Sample ``p`` of the run is always the same image, crop, flip, degradation and per-sample seed,
whatever the number of devices, workers or restarts. DDP over N ranks consumes the same global
positions as one process with an N-times larger batch, and a run resumed at step k continues
with exactly the samples the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby positions over the seed space


def position_seed(seed: int, position: int) -> int:
    """A 62-bit seed for sample ``position`` of a run seeded with ``seed``."""
    return (seed * _MIX + position * 0xBF58476D1CE4E5B9 + 1) % (2**62)


class PositionalDataset(Dataset):
    """Indexes ``dataset`` by global sample position: an epoch-wise seeded permutation picks
    the item, and torch's RNG is seeded from the position while the item is made.

    Items get a ``"seed"`` entry (int) for the model's own per-sample randomness.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _index(self, position: int) -> int:
        n = len(self.dataset)
        epoch = position // n
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(position_seed(self.seed, -1 - epoch))
            self._perm = (epoch, torch.randperm(n, generator=g))
        return int(self._perm[1][position % n])

    def __getitem__(self, position: int) -> dict:
        sample_seed = position_seed(self.seed, position)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            item = self.dataset[self._index(position)]
        return item | {"seed": sample_seed}


class StepSampler(Sampler[int]):
    """Endless positions for one rank: batch ``b`` of rank ``r`` holds positions
    ``b*B*W + r*B ... + B - 1`` (B = per-rank batch size, W = world size), from ``start_batch``.
    """

    def __init__(
        self, batch_size: int, rank: int = 0, world_size: int = 1, start_batch: int = 0
    ) -> None:
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        b = self.start_batch
        while True:
            base = (b * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            b += 1
