"""The decoder protocol: anything with a log-likelihood log p_beta(x | z).

A decoder used with :class:`textebm.model.LatentEBMModel` provides

    log_prob(x, z) -> (batch,)   the SUM of log-likelihood terms of each example (tokens or pixels), never
                                 a per-token mean: the posterior p(z|x) depends on the sum.
    generate(z, ...)             examples decoded from latent codes.
    latent_dim                   the size of z it expects.
    config                       a JSON-able dict of constructor arguments: ``LatentEBMModel.from_pretrained``
                                 rebuilds the decoder as ``build_decoder(name, **config)``, then loads weights.
    modality                     ``"text"`` (token ids, a tokenizer) or ``"image"`` (tensors; ``mean(z)``).

Decoders are found by name: :func:`register_decoder` (a class decorator) puts a class in :data:`DECODERS` with its
recipe name (``model.decoder``) and its modality, for the built-in decoders and yours alike.

and, optionally, two hooks that let posterior samplers reuse per-batch work across Langevin steps:

    prepare(x) -> ctx            everything about x that does not depend on z (embeddings, masks, targets).
    log_prob_prepared(ctx, z)    the same value as log_prob(x, z), from the prepared context.

:func:`split_log_prob` returns the pair (function, context) that uses the hooks when present.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Dict, Protocol, Tuple, runtime_checkable

import torch


#: recipe name -> decoder class (filled by :func:`register_decoder`)
DECODERS: Dict[str, type] = {}
MODALITIES = ("text", "image")


def register_decoder(name: str, modality: str = "text"):
    """Class decorator: ``@register_decoder("lstm", modality="text")`` makes the class buildable by its recipe name
    (``model.decoder: lstm``, :func:`build_decoder`) and loadable from a saved model, and sets ``cls.modality``.
    A name already taken by another class is a ValueError."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")

    def register(cls):
        if DECODERS.get(name, cls) is not cls:
            raise ValueError(f"decoder name {name!r} is taken by {DECODERS[name].__name__}")
        cls.modality, cls.registry_name = modality, name
        DECODERS[name] = cls
        return cls
    return register


def build_decoder(name: str, **kwargs):
    """Build a decoder by its registered name; unknown names or constructor arguments are one-line errors."""
    try:
        cls = DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {sorted(DECODERS)}") from None
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        valid = [k for k in params if k != "self"]
        bad = sorted(set(kwargs) - set(valid))
        if bad:
            raise ValueError(f"unknown argument(s) {bad} for decoder {name!r}; valid ones are {valid}")
    return cls(**kwargs)


@runtime_checkable
class Decoder(Protocol):
    latent_dim: int

    def log_prob(self, x: Any, z: torch.Tensor) -> torch.Tensor: ...

    def generate(self, z: torch.Tensor, **kwargs) -> Any: ...


def split_log_prob(decoder, x, static: bool = False) -> Tuple[Callable[[Any, torch.Tensor], torch.Tensor], Any]:
    """(fn, ctx) with fn(ctx, z) = log p_beta(x | z): ``(log_prob_prepared, prepare(x))`` when the decoder has the
    hooks, else ``(log_prob, x)``. ``fn`` does not change from batch to batch, so it can be compiled once. With
    ``static`` the context's shapes depend only on x's shape (for captured chains), when ``prepare`` supports it."""
    if hasattr(decoder, "prepare") and hasattr(decoder, "log_prob_prepared"):
        if static and "static" in inspect.signature(decoder.prepare).parameters:
            return decoder.log_prob_prepared, decoder.prepare(x, static=True)
        return decoder.log_prob_prepared, decoder.prepare(x)
    return decoder.log_prob, x


@contextlib.contextmanager
def rnn_backward_mode(module: torch.nn.Module, always: bool = False):
    """While gradients are enabled (or ``always``: around a chain, which enables them itself), run every recurrent
    layer (``nn.RNNBase``) of ``module`` in training mode.

    cuDNN computes an RNN's backward only from a forward made in training mode ("cudnn RNN backward can only be
    called in training mode"), and a posterior chain differentiates through the decoder in eval mode. An RNN in
    training mode computes the same function as in eval mode once its inter-layer dropout is 0 (a one-layer RNN has
    none), so that is set too for the duration; the decoder's own dropout modules keep their eval meaning.
    """
    switched = []
    if always or torch.is_grad_enabled():
        for m in module.modules():
            if isinstance(m, torch.nn.RNNBase) and not m.training:
                switched.append((m, m.dropout))
                m.dropout = 0.0
                m.train()
    try:
        yield
    finally:
        for m, p in switched:
            m.eval()
            m.dropout = p


def check_latent(z: torch.Tensor, latent_dim: int, batch: int | None = None, who: str = "decoder") -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != latent_dim:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{who} expects z of shape (batch, {latent_dim}); got {shape}")
    if batch is not None and z.shape[0] != batch:
        raise ValueError(f"{who}: z has {z.shape[0]} rows but x has {batch} examples")


def check_tokens(x: torch.Tensor) -> None:
    """x must be a (batch, length >= 2) integer tensor of token ids: <s>, then the sentence, right-padded with <pad>."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
        raise ValueError("x must be an integer tensor of token ids, shape (batch, length) "
                         "starting with <s> and right-padded with <pad>")
    if x.shape[1] < 2:
        raise ValueError(f"x must hold at least <s> and one token per row; got length {x.shape[1]}")
