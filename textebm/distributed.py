"""Data-parallel training under ``torchrun``: ``torch.nn.parallel.DistributedDataParallel`` and what it leaves out.

Each rank samples z+ and z- for its own shard of the batches; ``DistributedDataParallel`` (DDP) averages the
gradients of the training loss across ranks during the backward pass, overlapping communication with it, so every
rank takes the same optimizer step. Rank 0 alone evaluates, logs and writes checkpoints.

Three things sit outside DDP's loss and are synchronized here: an amortized prior sampler's generator, which its
own optimizer trains after the step (its gradients are averaged with :meth:`Distributed.average`); per-example
posterior chains, whose new states every rank gathers (:meth:`Distributed.gather_rows`) so the stores stay identical
on all ranks and the one rank 0 checkpoints is complete; and a final check that the parameters agree.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence, Tuple

import torch


class Distributed:
    """torchrun's WORLD_SIZE / RANK / LOCAL_RANK; with one process every method is a no-op."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on GPUs, gloo on CPUs); each rank takes its own GPU."""
        if not self.enabled:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def wrap(self, module: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False):
        """``module`` in DistributedDataParallel (which broadcasts rank 0's parameters and buffers first)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def broadcast(self, modules: Iterable[torch.nn.Module]) -> None:
        """Copy rank 0's parameters and buffers of modules DDP does not own (e.g. an amortizer's generator)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, 0)

    def average(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over ranks (one flattened all-reduce)."""
        tensors = [t for t in tensors if t is not None]
        if not self.enabled or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        i = 0
        for t in tensors:
            t.copy_(flat[i:i + t.numel()].view_as(t))
            i += t.numel()

    def gather_rows(self, index: torch.Tensor, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Every rank's (index, z) rows concatenated (ranks may hold different numbers of rows)."""
        if not self.enabled:
            return index, z
        import torch.distributed as dist

        n = torch.tensor([z.shape[0]], device=z.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        most = int(max(int(s) for s in sizes))
        pad_i = torch.zeros(most, dtype=index.dtype, device=z.device)
        pad_z = torch.zeros(most, z.shape[1], dtype=z.dtype, device=z.device)
        pad_i[:z.shape[0]], pad_z[:z.shape[0]] = index.to(z.device), z
        all_i = [torch.empty_like(pad_i) for _ in range(self.world_size)]
        all_z = [torch.empty_like(pad_z) for _ in range(self.world_size)]
        dist.all_gather(all_i, pad_i)
        dist.all_gather(all_z, pad_z)
        keep = [int(s) for s in sizes]
        return (torch.cat([a[:k] for a, k in zip(all_i, keep)]), torch.cat([a[:k] for a, k in zip(all_z, keep)]))

    def max_difference(self, modules: Iterable[torch.nn.Module]) -> float:
        """Largest difference of any parameter from rank 0's copy (0.0 when alone)."""
        if not self.enabled:
            return 0.0
        import torch.distributed as dist

        flat = torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        diff = (flat - ref).abs().max()
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return float(diff)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()
