"""ChainConfig: a chain's settings live in one object, built once from a recipe, and every one of them is used.

Known answers: a clamp bounds |z| exactly; a recipe's chain is the chain sampling runs (the same z under the same
noise as running that chain by hand); every chain key of the recipe schema changes the chain it names.
"""
import dataclasses

import pytest
import torch

from textebm.config import Recipe, SamplingConfig, apply_overrides
from textebm.model import recipe_chains
from textebm.sampling import (MALA, POSTERIOR_CHAIN, PRIOR_CHAIN, SGHMC, ChainConfig, Langevin, Schedule,
                              get_sampler, run_chain)


def std_normal(z):
    return -0.5 * z.pow(2).sum(-1)


def test_a_clamp_given_to_the_chain_bounds_every_coordinate_whoever_runs_it():
    z0 = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    chain = ChainConfig(Langevin(), 10, 0.5, z_clamp=0.01)
    out = chain.run(std_normal, z0, generator=torch.Generator().manual_seed(1))
    assert out.z.abs().max() <= 0.01
    free = ChainConfig(Langevin(), 10, 0.5).run(std_normal, z0, generator=torch.Generator().manual_seed(1))
    assert free.z.abs().max() > 1.0  # N(0, I) chains: the clamp did the bounding
    # a sampler holds only its own update: the runner's settings cannot be given to it (and silently dropped)
    for cls in (Langevin, MALA, SGHMC):
        with pytest.raises(TypeError):
            cls(z_clamp=0.01)
    with pytest.raises(ValueError, match="belong to the chain"):
        get_sampler("langevin", z_clamp=0.01)


def test_a_recipe_that_gives_a_sampler_a_chain_setting_is_refused():
    r = apply_overrides(Recipe(), ["prior.sampler_args={z_clamp: 0.1}"])
    with pytest.raises(ValueError, match="prior.sampler_args.*z_clamp.*belong to the chain"):
        recipe_chains(r)


def test_the_paper_chains_are_the_defaults_without_a_recipe():
    prior, posterior = recipe_chains(None)
    assert (prior.n_steps, prior.step_size, posterior.n_steps, posterior.step_size) == (60, 0.4, 20, 0.1)
    assert prior is PRIOR_CHAIN and posterior is POSTERIOR_CHAIN
    r_prior, r_post = recipe_chains(Recipe())  # the recipe schema's defaults are the same chains
    assert (r_prior.n_steps, r_prior.step_size.start, r_post.n_steps, r_post.step_size.start) == (60, 0.4, 20, 0.1)


def test_replace_keeps_what_is_none_and_scaled_scales_every_step():
    c = ChainConfig(Langevin(), 10, Schedule("linear", 0.8, 0.05))
    assert c.replace(n_steps=None, step_size=None) is c
    assert c.replace(n_steps=3).n_steps == 3
    assert c.scaled(0.5).step_size == Schedule("linear", 0.4, 0.025)
    assert ChainConfig(Langevin(), 2, [0.2, 0.4]).scaled(0.5).step_size == [0.1, 0.2]


def test_a_chain_is_run_through_the_runner_with_every_setting():
    z0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    chain = ChainConfig(SGHMC(friction=0.3), 7, Schedule("linear", 0.2, 0.05), noise_scale=0.5, z_clamp=2.0)
    a = chain.run(std_normal, z0, generator=torch.Generator().manual_seed(1))
    b = run_chain(SGHMC(friction=0.3), std_normal, z0, 7, Schedule("linear", 0.2, 0.05), noise_scale=0.5,
                  z_clamp=2.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.z, b.z)


# ---- every chain key of a recipe reaches its chain ----------------------------------------------------------
#: a non-default value for each chain key of the recipe schema, and what it must change
CHAIN_KEYS = {
    "prior_steps": ("prior", "12"),
    "prior_step_size": ("prior", "0.3"),
    "prior_step_size_end": ("prior", "0.05", "sampling.prior_schedule=linear"),
    "prior_schedule": ("prior", "cosine", "sampling.prior_step_size_end=0.05"),
    "prior_noise": ("prior", "0.5"),
    "posterior_steps": ("posterior", "12"),
    "posterior_step_size": ("posterior", "0.3"),
    "posterior_step_size_end": ("posterior", "0.05", "sampling.posterior_schedule=linear"),
    "posterior_schedule": ("posterior", "geometric", "sampling.posterior_step_size_end=0.05"),
    "posterior_noise": ("posterior", "0.5"),
    "posterior_sampler": ("posterior", "sghmc"),
    "posterior_sampler_args": ("posterior", "{noise: false}"),
    "noise": ("both", "false"),
    "z_clamp": ("both", "0.05"),
}
#: chain keys whose effect is not on the numbers of a CPU chain: the ChainConfig field they must set
CHAIN_FIELDS = {
    "check_every": ("5", "check_every", 5),
    "capture": ("none", "capture", False),
    "prior_persistent": ("64", "start", "persistent"),
    "prior_start": ("posterior", "start", "posterior"),
    "prior_start_fraction": ("0.5", "start_fraction", 0.5),
    "posterior_warm_start": ("true", "start", "example"),
    "prior_reinit": None,  # the persistent store's restart rate (the trainer's PersistentChains), not the chain's
    "prior_replay": None,  # the size of the trainer's store of posterior samples (CodeReplay), not the chain's
}
#: sampling keys of the training loop or the model, not of a chain (posterior_start: the model resolves it,
#: tests/test_encoders.py; code_refine: the model's encode, tests/test_latent_tools.py)
LOOP_KEYS = {"on_nan", "compile", "capture_bucket", "posterior_start", "code_refine"}


def _run_both(recipe):
    prior, post = recipe_chains(recipe)
    z0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    return [c.run(std_normal, z0, generator=torch.Generator().manual_seed(1)).z for c in (prior, post)]


def test_every_sampling_key_of_the_recipe_schema_reaches_the_chain_it_names():
    keys = {f.name for f in dataclasses.fields(SamplingConfig)}
    assert keys == set(CHAIN_KEYS) | set(CHAIN_FIELDS) | LOOP_KEYS, "classify the new sampling key here"
    base = _run_both(Recipe())
    for key, (which, value, *extra) in CHAIN_KEYS.items():
        r = apply_overrides(Recipe(), [f"sampling.{key}={value}", *extra])
        got = _run_both(r)
        changed = [not torch.equal(a, b) for a, b in zip(base, got)]
        want = {"prior": [True, False], "posterior": [False, True], "both": [True, True]}[which]
        assert changed == want, (key, changed)
    for key, spec in CHAIN_FIELDS.items():
        if spec is None:
            continue
        value, field, expected = spec
        r = apply_overrides(Recipe(), [f"sampling.{key}={value}"])
        prior, post = recipe_chains(r)
        assert expected in (getattr(prior, field), getattr(post, field)), key
    # and the prior's sampler and its arguments, which live in the prior section
    for override in ("prior.sampler=sghmc", "prior.sampler_args={noise: false}"):
        got = _run_both(apply_overrides(Recipe(), [override]))
        assert not torch.equal(got[0], base[0]) and torch.equal(got[1], base[1]), override


def test_the_model_samples_with_its_recipes_chains(tmp_path):
    """generate, sample_prior and sample_posterior run the recipe's chains, not the paper's literals: the same z
    under the same generator as running the recipe's chain by hand."""
    from textebm.data import WordVocab
    from textebm.model import build_model

    r = apply_overrides(Recipe(), ["model.latent_dim=3", "model.embed_dim=8", "model.hidden_dim=8",
                                   "prior.hidden=8", "sampling.prior_steps=7", "sampling.prior_step_size=0.9",
                                   "sampling.prior_noise=0.3", "prior.sampler=sghmc",
                                   "sampling.posterior_steps=4", "sampling.posterior_step_size=0.2"])
    vocab = WordVocab.build(["a b c"])
    model = build_model(r, vocab).eval()
    prior_chain, post_chain = recipe_chains(r)
    z0 = model.prior.sample_reference(5, generator=torch.Generator().manual_seed(2))
    by_hand = prior_chain.run(model.prior.log_prob_unnormalized, z0, generator=torch.Generator().manual_seed(3)).z
    got = model.sample_prior(5, z0=z0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, by_hand)
    paper = model.sample_prior(5, PRIOR_CHAIN, z0=z0, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(got, paper)
    # generate draws z by the same chain (then decodes): the same z as sample_prior under the same seed
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    ids = model.generate(5, generator=g1, decode=False, greedy=True, max_len=3)
    z = model.sample_prior(5, generator=g2)
    assert ids == model.decoder.generate(z, greedy=True, max_len=3)
    x = torch.tensor([[vocab.bos_id, len(vocab) - 1, len(vocab) - 2, vocab.eos_id]] * 5)
    post = model.sample_posterior(x, z0=z0, generator=torch.Generator().manual_seed(5))
    want = post_chain.run(model.posterior_log_prob(x), z0, generator=torch.Generator().manual_seed(5)).z
    torch.testing.assert_close(post, want)
