"""Persistent chains: a replay buffer of sampler states (Du & Mordatch 2019; Tieleman 2008).

A buffer B of N states. Each call:

    I  = a random batch of buffer indices (without replacement)
    z0 = B[I], except that each row is replaced, with probability ``reinit``, by a fresh draw from ``init``
         (default N(0, sigma0^2 I))
    z  = sampler.sample(log_prob, z0)
    B[I] <- z

Chains continue across calls (persistent contrastive divergence), while re-initialized rows keep fresh
exploration going and stop the buffer from collapsing onto the modes found early (Du & Mordatch 2019,
"Implicit Generation and Generalization in Energy-Based Models", Sec. 3.1: 5% re-initialization).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .base import LogDensity, Samples, check_z

InitFn = Callable[[int, Optional[torch.Generator]], torch.Tensor]


class PersistentChains:
    """A buffer of ``n_chains`` states around any sampler object (``Langevin``, ``SGHMC``, ``MALA``, ``SVGD``).

    Usable wherever a sampler is: ``sample(log_prob, z0)`` takes its batch size, device and dtype from
    ``z0`` and ignores its values (the start comes from the buffer); or pass ``batch_size`` and no ``z0``.

    Args:
        sampler: any object with ``sample(log_prob, z0, *, n_steps, step_size, trace, snapshot_every,
            generator) -> Samples``.
        n_chains: buffer size N.
        reinit: probability that a drawn row restarts from ``init`` (0 = pure persistent chains).
        init: callable (n, generator) -> (n, dim) fresh starts; default sigma0 * N(0, I) of dimension ``dim``.
        sigma0: standard deviation of the default init.
        dim: state dimension; when None, taken from the first ``z0`` seen.

    ``state_dict()`` / ``load_state_dict()`` save and restore the buffer (e.g. inside a checkpoint).
    """

    name = "persistent"

    def __init__(self, sampler, n_chains: int = 10_000, reinit: float = 0.05, init: Optional[InitFn] = None,
                 sigma0: float = 1.0, dim: Optional[int] = None):
        if not hasattr(sampler, "sample"):
            raise TypeError(f"sampler must have a .sample(log_prob, z0, ...) method; got {type(sampler).__name__}")
        if n_chains < 1:
            raise ValueError(f"n_chains must be >= 1, got {n_chains}")
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"reinit must be in [0, 1], got {reinit}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        self.sampler = sampler
        self.n_chains = int(n_chains)
        self.reinit = float(reinit)
        self.sigma0 = float(sigma0)
        self.dim = dim
        self._init = init
        self.buffer: Optional[torch.Tensor] = None
        self.n_calls = 0

    def init(self, n: int, generator: Optional[torch.Generator] = None, like: Optional[torch.Tensor] = None):
        """n fresh starts from ``init`` (default N(0, sigma0^2 I))."""
        if self._init is not None:
            z = self._init(n, generator)
            check_z(z, "init(n, generator)")
            if z.shape[0] != n:
                raise ValueError(f"init({n}, generator) returned {z.shape[0]} rows")
            return z.to(like) if like is not None else z
        if self.dim is None:
            raise ValueError("PersistentChains needs dim (or a z0, or an init function) before the first draw")
        kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
        return self.sigma0 * torch.randn(n, self.dim, generator=generator, **kw)

    def _ensure_buffer(self, like: Optional[torch.Tensor], generator):
        if self.buffer is None:
            if self.dim is None and like is not None:
                self.dim = like.shape[1]
            self.buffer = self.init(self.n_chains, generator, like).detach().clone()
            self.dim = self.buffer.shape[1]

    def sample(self, log_prob: LogDensity, z0: Optional[torch.Tensor] = None, *, batch_size: Optional[int] = None,
               n_steps=None, step_size=None, trace=False, snapshot_every=0, generator=None) -> Samples:
        """Draw a batch of buffer states, re-initialize a fraction, run the sampler, write back.

        Returns the sampler's :class:`Samples` with ``stats['n_reinit']`` (rows restarted this call) and
        ``stats['indices']`` (the buffer rows used).
        """
        if z0 is not None:
            check_z(z0, "z0")
            if self.dim is not None and z0.shape[1] != self.dim:
                raise ValueError(f"z0 has dim {z0.shape[1]}; the buffer holds dim {self.dim}")
            n = z0.shape[0]
        elif batch_size is not None:
            n = int(batch_size)
        else:
            raise ValueError("give z0 (for its batch size) or batch_size")
        if not 1 <= n <= self.n_chains:
            raise ValueError(f"batch size must be in [1, n_chains={self.n_chains}], got {n}")
        self._ensure_buffer(z0, generator)
        dev = self.buffer.device
        idx = torch.randperm(self.n_chains, generator=generator, device=dev)[:n]
        start = self.buffer[idx].clone()
        mask = torch.rand(n, generator=generator, device=dev) < self.reinit
        n_re = int(mask.sum())
        if n_re:
            start[mask] = self.init(n_re, generator, start)
        out = self.sampler.sample(log_prob, start, n_steps=n_steps, step_size=step_size, trace=trace,
                                  snapshot_every=snapshot_every, generator=generator)
        self.buffer[idx] = out.z.detach().to(self.buffer)
        self.n_calls += 1
        out.stats = dict(out.stats)
        out.stats.update({"n_reinit": n_re, "indices": idx})
        return out

    # ---- saving ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"buffer": None if self.buffer is None else self.buffer.clone(), "n_calls": self.n_calls,
                "reinit": self.reinit, "n_chains": self.n_chains}

    def load_state_dict(self, state: dict) -> None:
        buf = state.get("buffer")
        if buf is not None:
            check_z(buf, "state['buffer']")
            if buf.shape[0] != self.n_chains:
                raise ValueError(f"state['buffer'] holds {buf.shape[0]} chains; this object has n_chains="
                                 f"{self.n_chains}")
            if self.dim is not None and buf.shape[1] != self.dim:
                raise ValueError(f"state['buffer'] has dim {buf.shape[1]}; expected {self.dim}")
            self.dim = buf.shape[1]
            self.buffer = buf.clone()
        else:
            self.buffer = None
        self.n_calls = int(state.get("n_calls", 0))
