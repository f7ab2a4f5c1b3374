"""Warm starts: chains that continue from call to call.

Two stores, both used through :func:`textebm.sampling.run_chain` (``warm_start=store``) and both saved in
checkpoints (``state_dict`` / ``load_state_dict``, tensors only):

:class:`PersistentChains`, a replay buffer of prior (or any) chains (Tieleman 2008; Du & Mordatch 2019). A buffer
B of N states; each call

    I  = a random batch of buffer rows (without replacement)
    z0 = B[I], except that each row is replaced, with probability ``reinit``, by the caller's fresh start
    z  = the chain from z0;  B[I] <- z

Chains continue across calls (persistent contrastive divergence), while re-initialized rows keep fresh exploration
going and stop the buffer from collapsing onto the modes found early (Du & Mordatch 2019, Sec. 3.1: 5%).

:class:`ExampleChains`, one chain per training example (alternating back-propagation, Han, Lu, Zhu, Wu 2017): the
posterior chain of example i starts from its last posterior sample z+_i (from the caller's fresh start the first
time the example is seen) and its final state is stored back, so inference accumulates over epochs instead of
starting from the prior at every visit.

Neither reads anything back to the host: rows are picked and replaced with device-side ``where``/indexing.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .base import LogDensity, Samples, check_z

InitFn = Callable[[int, Optional[torch.Generator]], torch.Tensor]


class PersistentChains:
    """A replay buffer of ``n_chains`` states (see the module docstring), usable as a ``warm_start`` store or,
    around a chain, on its own: ``PersistentChains(ChainConfig(Langevin(), 60, 0.4), 10_000).sample(lp, z0)``.

    Args:
        chain: optional :class:`~textebm.sampling.chain.ChainConfig` that :meth:`sample` runs.
        n_chains: buffer size N.
        reinit: probability that a drawn row restarts fresh (0 = pure persistent chains).
        init: callable (n, generator) -> (n, dim) fresh starts (the buffer's first states, and re-initialized
            rows); default: sigma0 * N(0, I) for :meth:`sample`, the caller's z0 rows for ``run_chain``.
        sigma0: standard deviation of the default fresh starts.
        dim: state dimension; when None, taken from the first start seen.
    """

    name = "persistent"

    def __init__(self, chain=None, n_chains: int = 10_000, reinit: float = 0.05, init: Optional[InitFn] = None,
                 sigma0: float = 1.0, dim: Optional[int] = None):
        if chain is not None and not callable(getattr(chain, "run", None)):
            raise TypeError(f"chain must be a ChainConfig (with a .run(log_prob, z0, ...) method); got "
                            f"{type(chain).__name__}")
        if n_chains < 1:
            raise ValueError(f"n_chains must be >= 1, got {n_chains}")
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"reinit must be in [0, 1], got {reinit}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        self.chain = chain
        self.n_chains = int(n_chains)
        self.reinit = float(reinit)
        self.sigma0 = float(sigma0)
        self.dim = dim
        self._init = init
        self.buffer: Optional[torch.Tensor] = None
        self.n_calls = 0

    def to(self, device) -> "PersistentChains":
        """Move the buffer (e.g. restored from a checkpoint on the CPU) to ``device``."""
        if self.buffer is not None:
            self.buffer = self.buffer.to(device)
        return self

    def fresh(self, n: int, generator=None, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """n fresh starts: ``init(n, generator)``, or sigma0 * N(0, I)."""
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

    def _ensure_buffer(self, like: torch.Tensor, generator) -> None:
        if self.buffer is None:
            self.dim = like.shape[1] if self.dim is None else self.dim
            self.buffer = self.fresh(self.n_chains, generator, like).detach().clone()
        elif like.shape[1] != self.buffer.shape[1]:
            raise ValueError(f"z0 has dim {like.shape[1]}; the buffer holds dim {self.buffer.shape[1]}")

    # ---- the warm-start protocol of run_chain -------------------------------------------------------------
    def begin(self, z0: torch.Tensor, index=None, generator: Optional[torch.Generator] = None):
        """(start, handle): random buffer rows, each replaced by the row of ``z0`` with probability ``reinit``."""
        check_z(z0, "z0")
        n = z0.shape[0]
        if not 1 <= n <= self.n_chains:
            raise ValueError(f"batch size must be in [1, n_chains={self.n_chains}], got {n}")
        self._ensure_buffer(z0, generator)
        dev = self.buffer.device
        idx = torch.randperm(self.n_chains, generator=generator, device=dev)[:n]
        fresh = torch.rand(n, generator=generator, device=dev) < self.reinit
        new = self.fresh(n, generator, self.buffer) if self._init is not None else z0.to(self.buffer)
        start = torch.where(fresh[:, None], new, self.buffer[idx])
        return start, (idx, fresh)

    def end(self, handle, z: torch.Tensor) -> None:
        idx, _ = handle
        self.buffer[idx] = z.detach().to(self.buffer)
        self.n_calls += 1

    def stats(self, handle) -> dict:
        idx, fresh = handle
        return {"n_reinit": fresh.sum(), "indices": idx}

    def sample(self, log_prob: LogDensity, z0: Optional[torch.Tensor] = None, *, batch_size: Optional[int] = None,
               generator=None, **kwargs) -> Samples:
        """Run the wrapped chain from buffer rows and write the final states back:
        ``z0`` only gives the batch size, device and dtype (or pass ``batch_size``); re-initialized rows start from
        :meth:`fresh`. ``stats`` gains ``n_reinit`` and ``indices``."""
        if self.chain is None:
            raise ValueError("this PersistentChains has no chain; pass it to run_chain(warm_start=...) instead")
        if z0 is not None:
            check_z(z0, "z0")
            if self.dim is None:
                self.dim = z0.shape[1]
            n, like = z0.shape[0], z0
        elif batch_size is not None:
            n, like = int(batch_size), self.buffer
        else:
            raise ValueError("give z0 (for its batch size) or batch_size")
        return self.chain.run(log_prob, self.fresh(n, generator, like), warm_start=self, generator=generator,
                              **kwargs)

    # ---- saving ---------------------------------------------------------------------------------------------
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
            self.buffer = buf.clone() if self.buffer is None else buf.to(self.buffer).clone()
        else:
            self.buffer = None
        self.n_calls = int(state.get("n_calls", 0))


class ExampleChains:
    """One stored chain state per example: ``index`` (a LongTensor of example ids) selects the rows.

    A row that was never written starts from the caller's ``z0`` row; afterwards from its last final state.
    Store and flags live on the device of the first start seen (move with :meth:`to`).
    """

    name = "per-example"

    def __init__(self, n_examples: int, dim: int):
        if n_examples < 1 or dim < 1:
            raise ValueError(f"n_examples and dim must be >= 1, got {n_examples}, {dim}")
        self.n_examples, self.dim = int(n_examples), int(dim)
        self.z: Optional[torch.Tensor] = None
        self.seen: Optional[torch.Tensor] = None

    def to(self, device) -> "ExampleChains":
        if self.z is not None:
            self.z, self.seen = self.z.to(device), self.seen.to(device)
        return self

    def _ensure(self, like: torch.Tensor) -> None:
        if self.z is None:
            self.z = torch.zeros(self.n_examples, self.dim, dtype=like.dtype, device=like.device)
            self.seen = torch.zeros(self.n_examples, dtype=torch.bool, device=like.device)

    def _index(self, index) -> torch.Tensor:
        if index is None:
            raise ValueError("per-example warm starts need the examples' indices (index=...)")
        index = torch.as_tensor(index, dtype=torch.long)
        if index.device.type == "cpu" and index.numel() and (int(index.min()) < 0 or
                                                             int(index.max()) >= self.n_examples):
            raise ValueError(f"example indices must be in [0, {self.n_examples}); got "
                             f"[{int(index.min())}, {int(index.max())}]")
        return index.to(self.z.device, non_blocking=True)

    def begin(self, z0: torch.Tensor, index=None, generator=None):
        check_z(z0, "z0")
        if z0.shape[1] != self.dim:
            raise ValueError(f"z0 has dim {z0.shape[1]}; the store holds dim {self.dim}")
        self._ensure(z0)
        idx = self._index(index)
        if idx.shape[0] != z0.shape[0]:
            raise ValueError(f"{idx.shape[0]} indices for {z0.shape[0]} starts")
        start = torch.where(self.seen[idx][:, None], self.z[idx], z0.to(self.z))
        return start, idx

    def end(self, idx, z: torch.Tensor) -> None:
        self.z[idx] = z.detach().to(self.z)
        self.seen[idx] = True

    def stats(self, idx) -> dict:
        return {}

    def store(self, index, z: torch.Tensor) -> None:
        """Write states for ``index`` (e.g. the rows other data-parallel ranks sampled)."""
        self._ensure(z)
        self.end(self._index(index), z)

    def state_dict(self) -> dict:
        return {"z": self.z, "seen": self.seen, "n_examples": self.n_examples, "dim": self.dim}

    def load_state_dict(self, state: dict) -> None:
        if int(state["n_examples"]) != self.n_examples or int(state["dim"]) != self.dim:
            raise ValueError(f"the stored chains are for {state['n_examples']} examples of dim {state['dim']}; "
                             f"this store has {self.n_examples} of dim {self.dim}")
        self.z = None if state["z"] is None else state["z"].clone()
        self.seen = None if state["seen"] is None else state["seen"].clone()


class CodeReplay:
    """Prior chains started from recent posterior samples: a ring buffer of the last ``capacity`` z+ of the
    training batches (:meth:`add`), used as a ``warm_start`` store of a prior chain.

    Each call starts a row from a random buffered z+ with probability ``fraction`` and from the caller's fresh
    start (N(0, sigma0^2 I)) otherwise; the chain's final states are not stored back (the buffer holds posterior
    samples only). A chain that starts where the codes of real sentences are tracks them however far from the
    origin they sit; the fresh rows keep the prior learning where its chain from N(0, sigma0^2 I) goes, which is
    where generation starts. (DAMC, Yu et al. 2023, starts half its prior chains from an amortized sampler.)
    Rows are picked on the device without reading anything back to the host.
    """

    name = "posterior replay"

    def __init__(self, capacity: int, fraction: float = 0.5):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.capacity, self.fraction = int(capacity), float(fraction)
        self.buffer: Optional[torch.Tensor] = None
        self.filled = 0
        self.head = 0

    def to(self, device) -> "CodeReplay":
        if self.buffer is not None:
            self.buffer = self.buffer.to(device)
        return self

    def add(self, z: torch.Tensor) -> None:
        """Store the rows of z (the newest replace the oldest)."""
        check_z(z, "z")
        z = z.detach()
        if self.buffer is None:
            self.buffer = torch.zeros(self.capacity, z.shape[1], dtype=z.dtype, device=z.device)
        n = min(z.shape[0], self.capacity)
        rows = (self.head + torch.arange(n, device=self.buffer.device)) % self.capacity
        self.buffer[rows] = z[-n:].to(self.buffer)
        self.head = (self.head + n) % self.capacity
        self.filled = min(self.capacity, self.filled + n)

    def begin(self, z0: torch.Tensor, index=None, generator: Optional[torch.Generator] = None):
        check_z(z0, "z0")
        if self.filled == 0:  # nothing stored yet: every chain starts fresh
            return z0, None
        n, dev = z0.shape[0], self.buffer.device
        pick = torch.randint(self.filled, (n,), generator=generator, device=dev)
        replay = torch.rand(n, generator=generator, device=dev) < self.fraction
        start = torch.where(replay[:, None], self.buffer[pick], z0.to(self.buffer))
        return start, replay

    def end(self, handle, z: torch.Tensor) -> None:
        """Prior states are not stored: the buffer holds posterior samples only."""

    def stats(self, handle) -> dict:
        return {} if handle is None else {"n_replayed": handle.sum()}

    def state_dict(self) -> dict:
        return {"buffer": None if self.buffer is None else self.buffer.clone(), "filled": self.filled,
                "head": self.head, "capacity": self.capacity}

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the stored replay buffer holds {state['capacity']} codes; this one {self.capacity}")
        buf = state.get("buffer")
        self.buffer = None if buf is None else buf.clone()
        self.filled, self.head = int(state["filled"]), int(state["head"])
