"""The fast sampling path computes the same thing as the straightforward reference in bench/reference.py."""
import copy
import sys

import pytest
import torch

from textebm.train import Trainer

from conftest import ROOT, tiny_recipe

sys.path.insert(0, str(ROOT / "bench"))
from reference import (reference_sample_posterior, reference_sample_prior,  # noqa: E402
                       reference_train_step)


@pytest.fixture()
def trainer(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "train.grad_clip=null", "model.hidden_dim=48", "model.latent_dim=6",
                    "sampling.posterior_steps=12", "sampling.prior_steps=30")
    return Trainer(r, tmp_path / "run", device="cpu", progress=False)


def test_posterior_and_prior_samples_match_the_reference_with_the_same_noise(trainer):
    x = trainer.data.next().x
    m = trainer.model.eval()
    s = trainer.recipe.sampling
    z0 = m.prior.sample_reference(x.shape[0], generator=torch.Generator().manual_seed(0))
    fast = m.sample_posterior(x, z0=z0, generator=torch.Generator().manual_seed(1))  # the recipe's chain
    ref = reference_sample_posterior(m.prior, m.decoder, x, z0, s.posterior_steps, s.posterior_step_size,
                                     torch.Generator().manual_seed(1))
    assert (fast - z0).abs().max() > 0.1  # the chains moved
    assert torch.allclose(fast, ref, atol=1e-4), (fast - ref).abs().max()
    fast_p = m.prior.sample(x.shape[0], m.prior_chain, z0=z0, generator=torch.Generator().manual_seed(2))
    ref_p = reference_sample_prior(m.prior, z0, s.prior_steps, s.prior_step_size, torch.Generator().manual_seed(2))
    assert torch.allclose(fast_p, ref_p, atol=1e-4), (fast_p - ref_p).abs().max()


def test_one_training_iteration_matches_the_reference(trainer):
    x = trainer.data.next().x
    s = trainer.recipe.sampling
    ref_model = copy.deepcopy(trainer.model)
    opt_dec = torch.optim.Adam(ref_model.decoder.parameters(), **{k: v for k, v in trainer.opt_dec.defaults.items()
                                                                  if k in ("lr", "betas", "weight_decay")})
    opt_prior = torch.optim.Adam(ref_model.prior.parameters(), **{k: v for k, v in trainer.opt_prior.defaults.items()
                                                                  if k in ("lr", "betas")})
    trainer.gen.manual_seed(7)
    trainer.train_step(x)
    reference_train_step(ref_model, opt_dec, opt_prior, x, s.prior_steps, s.prior_step_size, s.posterior_steps,
                         s.posterior_step_size, torch.Generator().manual_seed(7))
    for (k, a), (_, b) in zip(trainer.model.state_dict().items(), ref_model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), k


def test_sampling_freezes_parameters_and_restores_them(trainer):
    """While z is sampled no parameter requires grad (so fused kernels skip weight gradients); afterwards every
    flag is back as it was, also after an error inside the sampler, and no .grad was written."""
    from textebm.sampling import frozen

    m = trainer.model
    m.decoder.embed.weight.requires_grad_(False)  # a parameter frozen on purpose stays frozen
    before = {n: p.requires_grad for n, p in m.named_parameters()}
    seen = []

    from textebm.sampling import ChainConfig, Langevin

    class Spy(Langevin):
        def step(self, *args, **kwargs):
            seen.append(any(p.requires_grad for p in m.parameters()))
            return super().step(*args, **kwargs)

    m.sample_posterior(trainer.data.next().x, ChainConfig(Spy(), 2, 0.1))
    assert seen == [False, False]
    assert {n: p.requires_grad for n, p in m.named_parameters()} == before
    assert all(p.grad is None for p in m.parameters())
    with pytest.raises(RuntimeError):
        with frozen(m):
            raise RuntimeError("inside")
    assert {n: p.requires_grad for n, p in m.named_parameters()} == before


@pytest.mark.slow
def test_compiled_sampling_gives_the_same_chain(trainer):
    """sampling.compile: torch.compile of the posterior log-density draws the same z under the same noise.
    (Slow: compiling takes tens of seconds on CPU; needs a C++ compiler for inductor.)"""
    from textebm.sampling import POSTERIOR_CHAIN

    CHAIN_8 = POSTERIOR_CHAIN.replace(n_steps=8)
    x = trainer.data.next().x
    m = trainer.model.eval()
    z0 = m.prior.sample_reference(x.shape[0], generator=torch.Generator().manual_seed(0))
    eager = m.sample_posterior(x, CHAIN_8, z0=z0, generator=torch.Generator().manual_seed(1))
    m.compile_sampling("default")
    try:
        compiled = m.sample_posterior(x, CHAIN_8, z0=z0, generator=torch.Generator().manual_seed(1))
        again = m.sample_posterior(trainer.data.next().x, CHAIN_8.replace(n_steps=2), z0=z0)  # a new batch works
    finally:
        m.compile_sampling(None)
    assert (eager - z0).abs().max() > 0.05
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(again).all()
