"""Whole chains as CUDA graphs: one capture per chain shape, then one replay per call.

A K-step chain is hundreds of small kernels per step (an LSTM step alone is about 15); at batch 32 a GPU spends
most of a Langevin step waiting for the host to launch them. Captured as a CUDA graph (``torch.cuda.graphs``),
the whole chain, its preparation of the batch included, is one launch. What that needs, and what the rest of the
package provides:

* no host synchronization inside the chain (:mod:`.runner` reads its flags once, after the replay);
* static shapes: the density is rebuilt inside the graph from *static input tensors* (a :class:`Density`: a
  function ``make(*inputs)`` and the tensors that change between calls, such as the batch); each call copies its
  inputs into the graph's own tensors. Batches are padded to a few lengths (``sampling.capture_bucket``) and the
  decoder selects every position (``prepare(x, static=True)``), so a run captures a handful of graphs;
* no random-number generation inside the graph: the chain's noise is drawn before the replay, from the caller's
  generator, into the graph's noise tensors (the same draws an eager chain makes, :func:`.runner.draw_noise`);
* parameters updated in place (optimizers do) and never re-allocated: a graph is keyed on their storage, so a
  moved model is captured again.

A graph is reused for a call with the same key (density, sampler, step sizes, shapes, dtypes, autocast state);
anything else is captured anew (a few hundred ms). Where capture is not possible (CPU tensors, snapshots or
intermediate checks asked for, noise too large for one block) the chain runs eagerly, with the same result.
Failure to capture (an op that is not capturable) is reported once and the key runs eagerly from then on.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from .base import gradient_target
from .runner import (NOISE_BLOCK_ELEMENTS, ChainOutput, ChainPlan, Density, chain_steps, draw_noise, noise_block,
                     noise_buffers)


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    inputs: Tuple[torch.Tensor, ...]
    z0: torch.Tensor
    noise: list
    out: ChainOutput


@dataclass
class ChainGraphs:
    """A cache of captured chains (see the module docstring). ``enabled=False`` makes every call eager."""

    enabled: bool = True
    warmup: int = 2
    graphs: Dict[tuple, _Graph] = field(default_factory=dict)
    failed: set = field(default_factory=set)
    captures: int = 0
    replays: int = 0

    def usable(self, z0: torch.Tensor, plan: ChainPlan, sampler) -> bool:
        """Whether this chain can run as a graph here (CUDA, no snapshots or intermediate reads, one noise block)."""
        return (self.enabled and z0.is_cuda and not plan.snapshot_every and not plan.check_every
                and noise_block(sampler, z0, plan.n_steps) >= plan.n_steps and plan.n_steps > 0)

    def key(self, sampler, density: Density, z0: torch.Tensor, plan: ChainPlan) -> tuple:
        params = tuple(p.data_ptr() for m in density.modules for p in m.parameters())
        shapes = tuple((tuple(t.shape), t.dtype, str(t.device)) for t in density.inputs)
        auto = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        return (density.key, repr(sampler), plan.n_steps, tuple(plan.step_sizes), tuple(plan.noise_scales),
                plan.trace, plan.z_clamp, shapes, tuple(z0.shape), z0.dtype, str(z0.device), auto, params)

    def run(self, sampler, density: Density, z0: torch.Tensor, plan: ChainPlan,
            generator: Optional[torch.Generator] = None) -> ChainOutput:
        """The chain's output, from a replay of its graph (captured on first use) or, where that is not possible,
        from an eager run of the same steps on the same noise."""
        if not self.usable(z0, plan, sampler):
            return _eager(sampler, density, z0, plan, generator)
        key = self.key(sampler, density, z0, plan)
        if key in self.failed:
            return _eager(sampler, density, z0, plan, generator)
        entry = self.graphs.get(key)
        if entry is None:
            try:
                entry = self._capture(sampler, density, z0, plan)
            except Exception as e:  # an op that cannot be captured: say so once, then run this chain eagerly
                self.failed.add(key)
                warnings.warn(f"could not capture the {plan.name} chain as a CUDA graph ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}); running it eagerly")
                torch.cuda.synchronize()
                return _eager(sampler, density, z0, plan, generator)
            self.graphs[key] = entry
        for dst, src in zip(entry.inputs, density.inputs):
            dst.copy_(src, non_blocking=True)
        entry.z0.copy_(z0, non_blocking=True)
        draw_noise(sampler, z0, plan.n_steps, generator, out=entry.noise)  # this call's draws, in place
        entry.graph.replay()
        self.replays += 1
        o = entry.out  # the graph's own tensors: copied, since the next replay overwrites them
        return ChainOutput(o.z.clone(), o.bad.clone(), None if o.trace is None else o.trace.clone(), None,
                           {k: v.clone() if torch.is_tensor(v) else v for k, v in o.read.items()},
                           {k: v.clone() if torch.is_tensor(v) else v for k, v in o.keep.items()})

    def _capture(self, sampler, density: Density, z0: torch.Tensor, plan: ChainPlan) -> _Graph:
        inputs = tuple(t.detach().clone() for t in density.inputs)
        start = z0.detach().clone()
        noise = noise_buffers(sampler, z0, plan.n_steps)  # filled before each replay; capture draws nothing
        static = Density(density.make, inputs, density.key, density.modules)

        def body():
            log_prob = static.log_prob()
            return chain_steps(sampler, gradient_target(log_prob), start, plan, noise=noise, final_log_prob=log_prob)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuBLAS / cuDNN handles and workspaces exist before capture
            for _ in range(self.warmup):
                body()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = body()
        self.captures += 1
        print(f"captured the {plan.name} chain as a CUDA graph ({plan.n_steps} steps, z {tuple(z0.shape)}, inputs "
              f"{[tuple(t.shape) for t in inputs]})", file=sys.stderr, flush=True)
        return _Graph(graph, inputs, start, noise, out)


def _eager(sampler, density: Density, z0, plan: ChainPlan, generator) -> ChainOutput:
    log_prob = density.log_prob()
    return chain_steps(sampler, gradient_target(log_prob), z0, plan, generator=generator, final_log_prob=log_prob)


def static_body(sampler, density: Density, z0: torch.Tensor, plan: ChainPlan, noise: list) -> ChainOutput:
    """Exactly what a captured graph runs, run eagerly (for tests on machines without a GPU): the density rebuilt
    from copies of its inputs, the chain on the given noise."""
    inputs = tuple(t.detach().clone() for t in density.inputs)
    log_prob = Density(density.make, inputs).log_prob()
    return chain_steps(sampler, gradient_target(log_prob), z0.detach().clone(), plan, noise=noise,
                       final_log_prob=log_prob)


__all__ = ["Density", "ChainGraphs", "static_body", "NOISE_BLOCK_ELEMENTS"]
