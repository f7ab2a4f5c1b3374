"""Refitting the prior alone on the frozen aggregate posterior of a trained model (a two-stage fit in the sense of
Dai and Wipf 2019, "Diagnosing and Enhancing VAE Models": once the decoder is trained, fit the prior to the codes
it reads).

    codes = one posterior sample z+ of each of N training sentences (the model's posterior chain, as training draws
            them), computed once: the decoder is not involved afterwards, so each update is cheap
    repeat: z- ~ p_alpha by the prior chain; minimize the prior's learning rule on (z+ batch, z-)   (fit_ebm)

The refit needs a prior chain that reaches the codes: with the paper's chain at temperature 1 a sharpening f runs
away from a chain of 60 steps from N(0, I) (docs/latent.md); the recipe's prior chain, its noise scale and the
learning rule's regularizers (e.g. a gradient penalty) are what keep it stable, and the energy guard of training
(``train.max_f_gap``) stops a refit that runs away.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..console import log
from ..objectives import build_objective
from ..objectives.data_ebm import fit_ebm
from .step import TrainingDivergedError


def fit_prior(model, sentence_ids: List[List[int]], steps: int = 2000, lr: Optional[float] = None,
              batch_size: int = 256, chain=None, seed: int = 0, log_every: int = 0) -> List[dict]:
    """Refit ``model.prior`` in place on the codes of ``sentence_ids`` (module docstring) with the recipe's learning
    rule (``prior.objective`` and ``prior.objective_args``) and Adam at ``lr`` (default ``train.lr_prior``) with
    ``train.betas_prior``; z- by ``chain`` (default: the model's prior chain). Stops with a
    :class:`~textebm.train.step.TrainingDivergedError` when f(z+) - f(z-) leaves ``train.max_f_gap``. Returns the
    history of :func:`~textebm.objectives.data_ebm.fit_ebm`."""
    from ..eval.prior_fit import aggregate_posterior

    r = model.recipe
    if model.prior.fixed:
        raise ValueError("the model's prior is fixed (a Gaussian prior): there is nothing to refit")
    gen = torch.Generator().manual_seed(seed)
    codes = aggregate_posterior(model, sentence_ids, generator=torch.Generator(device=model.device).manual_seed(seed))
    objective = build_objective(r.prior.objective, None, **r.prior.objective_args) if r is not None \
        else build_objective("mle")
    max_gap = r.train.max_f_gap if r is not None else None

    def guard(step: int, stats: dict) -> None:
        gap = stats.get("f_gap")
        if gap is not None and max_gap is not None and abs(float(gap)) > max_gap:
            raise TrainingDivergedError(f"the prior's energy diverged at refit step {step}: f(z+) - f(z-) = "
                                        f"{float(gap):.4g} nats exceeds train.max_f_gap = {max_gap:g}; lower --lr "
                                        f"or run the prior chain at a lower noise scale")
        if log_every and step % log_every == 0:
            log(f"refit step {step}: f(z+) - f(z-) = {float(gap):.3f}" if gap is not None else f"refit step {step}")

    model.eval()
    return fit_ebm(model.prior, codes.to(model.device), objective, chain=chain or model.prior_chain, steps=steps,
                   lr=lr if lr is not None else (r.train.lr_prior if r is not None else 1e-4),
                   batch_size=min(batch_size, codes.shape[0]), generator=gen,
                   betas=tuple(r.train.betas_prior) if r is not None else (0.5, 0.999), callback=guard)
