"""The chain runner: the one loop around every sampler.

    z_0 = z0 (or a warm start), then for k = 0 .. K-1:  z_{k+1}, state = sampler.step(z_k, state, target, s_k,
    noise_k, c_k), with s_k and c_k from the step-size and noise-scale schedules (:mod:`.schedules`).

The runner owns what every chain needs, so that a fix lands once: argument checks, the noise (drawn ahead of the
chain from the caller's generator, in a few large draws instead of one per step), divergence checks, traces,
snapshots, clamping, warm starts, and the split into a capturable part and a final read.

No host synchronization inside the chain: divergence flags and the trace are written into device tensors at every
step, and everything is read back in one transfer when the chain ends (``check_every=N`` adds a read every N steps,
to stop a diverging chain early). So a chain of K steps costs one synchronization whatever K is, which lets a GPU
run ahead and lets :mod:`.capture` record the whole chain as one CUDA graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from .base import LogDensity, Samples, SamplerDivergedError, Target, check_z, gradient_target
from .schedules import ScheduleLike, first_value, resolve

#: noise is drawn for as many steps at once as fit in this many elements (a few large draws, bounded memory)
NOISE_BLOCK_ELEMENTS = 1 << 22


def draw_noise(sampler, z: torch.Tensor, n_steps: int, generator: Optional[torch.Generator] = None,
               start: int = 0, count: Optional[int] = None,
               out: Optional[List[torch.Tensor]] = None) -> List[torch.Tensor]:
    """The random draws of steps [start, start + count): one tensor (count, *shape) per entry of the sampler's
    ``noise_spec``. The draws depend only on the generator's state and the shapes, not on how they are blocked:
    every block is drawn in the same order from the same generator. ``out`` (from :func:`noise_buffers`)
    receives the draws in place, the same numbers without new tensors."""
    count = n_steps - start if count is None else count
    spec = sampler.noise_spec(z)
    bufs = out if out is not None else noise_buffers(sampler, z, count, zero=False)
    if len(bufs) != len(spec):
        raise ValueError(f"draw_noise: {len(bufs)} buffers for {len(spec)} kinds of noise")
    for (kind, _), buf in zip(spec, bufs):
        if kind == "normal":
            torch.randn(buf.shape, generator=generator, out=buf)
        elif kind == "uniform":
            torch.rand(buf.shape, generator=generator, out=buf)
        else:
            raise ValueError(f"unknown noise kind {kind!r} in {type(sampler).__name__}.noise_spec")
    return bufs


def noise_buffers(sampler, z: torch.Tensor, count: int, zero: bool = True) -> List[torch.Tensor]:
    """Tensors of the shapes :func:`draw_noise` fills for ``count`` steps, zeroed unless ``zero=False`` (nothing
    is drawn)."""
    new = torch.zeros if zero else torch.empty
    return [new((count, *shape), device=z.device, dtype=z.dtype) for _, shape in sampler.noise_spec(z)]


def noise_block(sampler, z: torch.Tensor, n_steps: int) -> int:
    """How many steps' noise is drawn at once (all of them unless that exceeds NOISE_BLOCK_ELEMENTS)."""
    per_step = sum(math.prod(shape) for _, shape in sampler.noise_spec(z))
    if per_step == 0:
        return max(1, n_steps)
    return max(1, min(n_steps, NOISE_BLOCK_ELEMENTS // per_step))


@dataclass
class Density:
    """A log-density of tensors that change from call to call: ``make(*inputs)`` returns ``log_prob(z)``.

    What a captured chain (:mod:`.capture`) needs to rebuild the density inside its graph from its own copies of
    the inputs. ``key`` names ``make`` across calls (equal keys: the same function of the inputs); ``modules``
    are the modules whose parameters the density reads (a graph reads their storage, so it is re-captured if the
    storage moves).
    """

    make: Callable[..., LogDensity]
    inputs: Tuple[torch.Tensor, ...] = ()
    key: tuple = ()
    modules: tuple = ()

    def log_prob(self) -> LogDensity:
        return self.make(*self.inputs)


@dataclass
class ChainPlan:
    """Everything about a chain that is fixed before it starts (host-side values only)."""

    n_steps: int
    step_sizes: List[float]
    noise_scales: List[float]
    trace: bool = False
    snapshot_every: int = 0
    z_clamp: Optional[float] = None
    check_every: int = 0
    name: str = "chain"

    @classmethod
    def build(cls, sampler, n_steps: int, step_size: ScheduleLike, noise_scale: ScheduleLike = 1.0,
              trace: bool = False, snapshot_every: int = 0, z_clamp: Optional[float] = None, check_every: int = 0,
              name: Optional[str] = None) -> "ChainPlan":
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
        if snapshot_every < 0 or check_every < 0:
            raise ValueError("snapshot_every and check_every must be >= 0")
        if z_clamp is not None and not (z_clamp > 0 and math.isfinite(z_clamp)):
            raise ValueError(f"z_clamp must be a positive finite number or None, got {z_clamp}")
        sizes = resolve(step_size, n_steps, "step_size") if n_steps else [first_value(step_size)]
        scales = resolve(noise_scale, n_steps, "noise_scale", positive=False) if n_steps else [1.0]
        return cls(n_steps, sizes, scales, bool(trace), int(snapshot_every), z_clamp, int(check_every),
                   name or getattr(sampler, "name", type(sampler).__name__.lower()))


@dataclass
class ChainOutput:
    """What the capturable part of a chain leaves on the device; :func:`finish_chain` reads it once."""

    z: torch.Tensor
    bad: torch.Tensor            # (K + 1,) bool: the log-density at step k (k < K) or the final z (k = K) not finite
    trace: Optional[torch.Tensor]
    snapshots: Optional[list]
    read: dict                   # sampler numbers to read at the end
    keep: dict                   # sampler tensors handed back as they are


def chain_steps(sampler, target: Target, z0: torch.Tensor, plan: ChainPlan, noise: Optional[list] = None,
                generator: Optional[torch.Generator] = None, final_log_prob: Optional[LogDensity] = None
                ) -> ChainOutput:
    """The chain itself, without any host synchronization (unless ``plan.check_every``): capturable.

    ``noise`` may hold the whole chain's draws (from :func:`draw_noise`); otherwise they are drawn here in blocks
    from ``generator``. ``final_log_prob`` evaluates the last trace value (needed only with ``plan.trace``).
    """
    K = plan.n_steps
    z = z0.detach().clone()
    bad = torch.zeros(K + 1, dtype=torch.bool, device=z.device)
    trace = torch.empty(K + 1, dtype=torch.float32, device=z.device) if plan.trace else None
    snaps = [(0, z.clone())] if plan.snapshot_every else None
    state = sampler.init(z, target)
    block = noise_block(sampler, z, K) if noise is None else max(1, K)
    draws, base = noise, 0
    for k in range(K):
        if noise is None and k % block == 0:
            draws, base = draw_noise(sampler, z, K, generator, start=k, count=min(block, K - k)), k
        z, state, lp = sampler.step(z, state, target, plan.step_sizes[k], tuple(d[k - base] for d in draws),
                                    plan.noise_scales[k])
        torch.logical_not(torch.isfinite(lp).all(), out=bad[k])
        if trace is not None:
            trace[k] = lp.mean()
        if plan.z_clamp is not None:
            z = z.clamp(-plan.z_clamp, plan.z_clamp)
        if snaps is not None and (k + 1) % plan.snapshot_every == 0:
            snaps.append((k + 1, z.clone()))
        if plan.check_every and (k + 1) % plan.check_every == 0 and k + 1 < K and bool(bad[:k + 1].any()):
            _raise(plan, bad[:k + 1].float().argmax().item())
    torch.logical_not(torch.isfinite(z).all(), out=bad[K])
    if trace is not None:
        with torch.no_grad():
            trace[K] = (final_log_prob(z).float().mean() if final_log_prob is not None else
                        target(z)[0].mean())
    if snaps is not None and snaps[-1][0] != K:
        snaps.append((K, z.clone()))
    read, keep = sampler.finish(z, state)
    return ChainOutput(z.detach(), bad, trace, snaps, read, keep)


def _raise(plan: ChainPlan, step: int) -> None:
    K = plan.n_steps
    what = "the state z" if step >= K else "the log-density"
    size = plan.step_sizes[min(step, len(plan.step_sizes) - 1)]
    raise SamplerDivergedError(plan.name, int(step), what, size)


def finish_chain(out: ChainOutput, plan: ChainPlan) -> Samples:
    """Read the chain's flags, trace and numbers back in one transfer; raise if it diverged."""
    K = plan.n_steps
    parts = [torch.where(out.bad.any(), out.bad.float().argmax(), torch.tensor(-1.0, device=out.bad.device))
             .reshape(1).double()]
    if out.trace is not None:
        parts.append(out.trace.double())
    names = list(out.read)
    parts += [torch.as_tensor(out.read[n], device=out.bad.device).double().reshape(-1) for n in names]
    values = torch.cat(parts).tolist()
    first_bad = int(values[0])
    if first_bad >= 0:
        _raise(plan, first_bad)
    i = 1
    trace = None
    if out.trace is not None:
        trace, i = values[i:i + K + 1], i + K + 1
    stats = {}
    for n in names:
        size = torch.as_tensor(out.read[n]).numel()
        v = values[i:i + size]
        stats[n] = v[0] if torch.as_tensor(out.read[n]).dim() == 0 else v
        i += size
    stats.update(out.keep)
    return Samples(z=out.z, trace=trace, snapshots=out.snapshots, stats=stats)


def run_chain(sampler, log_prob: Optional[LogDensity], z0: torch.Tensor, n_steps: int, step_size: ScheduleLike, *,
              noise_scale: ScheduleLike = 1.0, target: Optional[Target] = None,
              generator: Optional[torch.Generator] = None, trace: bool = False, snapshot_every: int = 0,
              z_clamp: Optional[float] = None, check_every: int = 0, noise: Optional[list] = None,
              warm_start=None, index: Optional[torch.Tensor] = None, graphs=None,
              name: Optional[str] = None) -> Samples:
    """Run ``sampler`` for ``n_steps`` steps on ``log_prob`` from ``z0`` and return :class:`Samples`.

    Args:
        sampler: a :class:`~textebm.sampling.base.Sampler` (Langevin, MALA, SGHMC, SVGD, or your own).
        log_prob: z -> (batch,) log-density (its gradient comes from autograd), or a :class:`Density` (needed for
            ``graphs``). Or give ``target`` instead.
        z0: (batch, dim) start (not modified). With ``warm_start`` it is the fresh start for rows seen first.
        step_size, noise_scale: a number, one value per step, a :class:`~textebm.sampling.schedules.Schedule` or a
            function of the step (see :mod:`.schedules`); noise_scale multiplies the injected noise (1 = the
            sampler's own dynamics, 0 = none).
        target: z -> (log pi(z), a gradient field); for chains whose update field is not one density's gradient
            (the blocked moves of an amortized sampler).
        generator: torch.Generator for the noise (same generator state -> same chain).
        trace: record the batch-mean log-density at every step (K + 1 values; one extra evaluation at the end).
        snapshot_every: keep a copy of z every this many steps (0 = none; the start and the end are included).
        z_clamp: clamp every coordinate of z to [-z_clamp, z_clamp] after each step.
        check_every: also stop as soon as a divergence is seen, reading the flags every this many steps (each
            read is a host synchronization; 0 = only at the end).
        noise: the chain's random draws, from :func:`draw_noise` (default: drawn here from ``generator``).
        warm_start, index: a chain store (:class:`~textebm.sampling.persistent.ExampleChains` or
            :class:`~textebm.sampling.persistent.PersistentChains`): the chain starts from the stored states of
            ``index`` (rows never seen start at ``z0``) and the final states are stored back.
        graphs: a :class:`~textebm.sampling.capture.ChainGraphs`: run the chain as a captured CUDA graph where that
            is possible (``log_prob`` must then be a :class:`Density`); the same chain on the same noise.

    Returns:
        :class:`Samples` with the final z (detached) and the trace / snapshots / sampler stats asked for. No
        parameter of the model behind ``log_prob`` accumulates a gradient. A log-density or a state that stops
        being finite raises :class:`~textebm.sampling.base.SamplerDivergedError` naming the step.
    """
    check_z(z0, "z0")
    if (log_prob is None) == (target is None):
        raise ValueError("give exactly one of log_prob and target")
    plan = ChainPlan.build(sampler, n_steps, step_size, noise_scale, trace, snapshot_every, z_clamp, check_every,
                           name)
    handle = None
    if warm_start is not None:
        z0, handle = warm_start.begin(z0, index, generator)
    if graphs is not None and isinstance(log_prob, Density) and target is None and noise is None:
        out = graphs.run(sampler, log_prob, z0, plan, generator)
    else:
        lp = log_prob.log_prob() if isinstance(log_prob, Density) else log_prob
        tgt = target if target is not None else gradient_target(lp)
        out = chain_steps(sampler, tgt, z0, plan, noise, generator, final_log_prob=lp)
    samples = finish_chain(out, plan)
    if warm_start is not None:
        warm_start.end(handle, samples.z)
        samples.stats.update(warm_start.stats(handle))
    return samples
