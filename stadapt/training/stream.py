"""The order in which training sees clips: one endless stream, reproducible from any position.

The stream is the concatenation of per-epoch permutations (epoch e shuffled by a generator seeded
with (seed, e)); it yields `(epoch, index)` so the dataset draws that epoch's augmentation without
any hand-over to DataLoader workers. A run that resumes at optimizer step s starts the stream at
s * batch_size and sees exactly the clips the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ClipStream(torch.utils.data.Sampler):
    """Endless `(epoch, index)` pairs over a data set of `size` items, starting at `start`."""

    def __init__(self, size: int, *, seed: int, start: int = 0) -> None:
        if size < 1:
            raise ValueError("the data set is empty")
        self.size, self.seed, self.start = size, seed, start

    def permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.size)
        while True:
            order = self.permutation(epoch)
            for index in order[offset:]:
                yield epoch, index
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only asks when it needs a length
        raise TypeError("ClipStream is endless")
