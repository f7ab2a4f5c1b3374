"""Length-bucketed batches of token ids; padding never reaches the likelihood (decoders mask ``pad_id``)."""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import torch


class Batch(NamedTuple):
    """A training batch and the training-split indices of its examples (for per-example chains)."""

    x: torch.Tensor
    index: torch.Tensor


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """(B, max_len) LongTensor, right-padded with ``pad_id``."""
    if len(seqs) == 0:
        raise ValueError("cannot pad an empty batch")
    T = max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


class BucketBatcher:
    """Yields padded batches of sentences of similar length, in a seeded random order.

    Sentences are sorted by length within chunks of ``bucket_factor * batch_size`` randomly ordered sentences,
    cut into batches, and the batches shuffled: little padding, still random. The position in the epoch
    (``epoch``, ``index``) is state that a resumed run restores.
    """

    def __init__(self, encoded: List[List[int]], batch_size: int, pad_id: int, seed: int = 0,
                 shuffle: bool = True, bucket_factor: int = 50, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        if len(encoded) == 0:
            raise ValueError("no sentences to batch")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = encoded
        self.lengths = np.array([len(s) for s in encoded])
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed
        self.shuffle, self.bucket_factor, self.drop_last = shuffle, bucket_factor, drop_last
        self.epoch, self.index = 0, 0
        self._batches: Optional[List[np.ndarray]] = None
        # data-parallel sharding: every rank computes the same plan and takes batches rank, rank + W, ...
        self.rank, self.world_size = rank, world_size

    def _plan(self) -> List[np.ndarray]:
        n = len(self.data)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(n)
        chunk = self.batch_size * self.bucket_factor
        batches = []
        for i in range(0, n, chunk):
            part = perm[i:i + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[j:j + self.batch_size] for j in range(0, len(part), self.batch_size)]
        if self.drop_last and len(batches) > 1:
            batches = [b for b in batches if len(b) == self.batch_size] or batches
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return len(self._plan()) if self._batches is None else len(self._batches)

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        return pad_batch([self.data[i] for i in idx], self.pad_id)

    def next(self) -> torch.Tensor:
        """The next batch, starting a new epoch when one ends (infinite stream)."""
        return self.next_batch().x

    def next_batch(self) -> Batch:
        """The next batch with its examples' indices, starting a new epoch when one ends (infinite stream)."""
        if self._batches is None:
            self._batches = self._plan()
        W = self.world_size
        if self.index + W > len(self._batches):  # every rank needs a batch of this round
            self.epoch += 1
            self.index = 0
            self._batches = self._plan()
            if W > len(self._batches):
                raise ValueError(f"{len(self._batches)} batches per epoch cannot feed {W} ranks; "
                                 f"use a smaller batch size or fewer processes")
        b = self._batches[self.index + self.rank]
        self.index += W
        return Batch(self.batch(b), torch.as_tensor(b, dtype=torch.long))

    def __iter__(self):
        """One pass over the data in the current plan (used for evaluation)."""
        for b in self._plan():
            yield self.batch(b)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
        self._batches = self._plan()
