"""Seeded batches of an image split, resumable (the training stream of image runs)."""
from __future__ import annotations

import math
from typing import Iterator, List

import numpy as np
import torch

from ..batching import Batch
from .imageset import ImageDataError, ImageSet, _rng


# ---- batching ----------------------------------------------------------------------
class ImageBatcher:
    """Seeded mini-batches of an image tensor ``(N, C, H, W)``; resumable and shardable.

    Epoch ``e`` uses the permutation ``default_rng([seed, e]).permutation(N)`` (identity when ``shuffle`` is
    off). With ``world_size`` W > 1 the permutation is first cut into W equal shards, rank ``r`` taking
    positions ``r, r + W, ...`` (``N // W`` each with ``drop_last``; otherwise padded by wrapping around, as
    ``DistributedSampler`` does); each shard is then cut into batches of ``batch_size`` (a short last batch is
    dropped when ``drop_last``). ``next()`` is the endless, resumable training stream: ``state_dict()`` holds
    (epoch, batch index, seed) and a loaded state gives the same next batch. ``__iter__`` is one full pass over
    the current epoch's batches that leaves the stream alone (for evaluation).
    """

    def __init__(self, images, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        if isinstance(images, ImageSet):
            images = images.train
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ImageDataError(f"ImageBatcher needs a (N, C, H, W) tensor (or an ImageSet), got "
                                 f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        if batch_size < 1:
            raise ImageDataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ImageDataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.images, self.batch_size, self.shuffle, self.seed = images, int(batch_size), shuffle, int(seed)
        self.drop_last, self.rank, self.world_size = drop_last, int(rank), int(world_size)
        self.epoch, self.index = 0, 0
        self._cached = None
        if len(self) == 0:
            raise ImageDataError(f"{len(images)} images give no batch of {batch_size} per rank "
                                 f"(world_size={world_size}, drop_last={drop_last}); use a smaller batch size")

    def _plan(self, epoch: int) -> List[np.ndarray]:
        n, W, B = len(self.images), self.world_size, self.batch_size
        order = _rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        if W > 1:
            per = n // W if self.drop_last else math.ceil(n / W)
            if per * W > n:
                order = np.concatenate([order, order[: per * W - n]])
            order = order[self.rank: per * W: W]
        stop = (len(order) // B) * B if self.drop_last else len(order)
        return [order[i:i + B] for i in range(0, stop, B)]

    def _epoch_plan(self) -> List[np.ndarray]:
        if self._cached is None or self._cached[0] != (self.epoch, self.seed):
            self._cached = ((self.epoch, self.seed), self._plan(self.epoch))
        return self._cached[1]

    def __len__(self) -> int:
        """Batches per epoch (for this rank)."""
        n, W, B = len(self.images), self.world_size, self.batch_size
        per = n if W == 1 else (n // W if self.drop_last else math.ceil(n / W))
        return per // B if self.drop_last else math.ceil(per / B)

    def next(self) -> torch.Tensor:
        """The next batch ``(B, C, H, W)``, starting a new epoch when one ends (endless stream)."""
        return self.next_batch().x

    def next_batch(self) -> Batch:
        """The next batch with its images' indices, starting a new epoch when one ends (endless stream)."""
        if self.index >= len(self):
            self.epoch, self.index = self.epoch + 1, 0
        b = torch.from_numpy(self._epoch_plan()[self.index]).long()
        self.index += 1
        return Batch(self.images[b], b)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """One full pass (this rank's batches) over the current epoch's plan; the stream state is untouched.

        Like ``BucketBatcher.__iter__``: safe to break out of (evaluation), and repeated passes are identical
        until :meth:`next` moves the stream to another epoch.
        """
        for b in self._epoch_plan():
            yield self.images[torch.from_numpy(b)]

    def state_dict(self) -> dict:
        """``{"epoch", "index", "seed"}``: where the stream stands."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state`` (from :meth:`state_dict`)."""
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
