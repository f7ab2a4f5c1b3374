"""textebm: generative models with a latent-space energy-based prior, p(x, z) = p_alpha(z) p_beta(x | z).

The public API (imported lazily, so that ``textebm --help`` stays fast; the README has the table):
    LatentEBMPrior, GaussianPrior    textebm.prior      the prior exp(f_alpha(z)) N(z; 0, sigma0^2 I) / Z(alpha)
    Energy                           textebm.energy     the base class of every energy model (yours too)
    ChainConfig, PRIOR_CHAIN,        textebm.sampling   a chain's settings as one object; the paper's chains
    POSTERIOR_CHAIN
    Langevin, MALA, SGHMC, SVGD,     textebm.sampling   samplers over any log-density, and the one loop they run in
    run_chain, langevin
    LatentEBMModel                   textebm.model      prior + decoder (+ an amortized posterior)
    LSTMDecoder, register_decoder    textebm.decoders   a decoder, and how yours is found by name
    load_recipe, train               textebm.config, textebm.train
"""
__version__ = "0.1.0"

_LAZY = {
    "LatentEBMPrior": ("textebm.prior", "LatentEBMPrior"),
    "GaussianPrior": ("textebm.prior", "GaussianPrior"),
    "Energy": ("textebm.energy", "Energy"),
    "ChainConfig": ("textebm.sampling", "ChainConfig"),
    "PRIOR_CHAIN": ("textebm.sampling", "PRIOR_CHAIN"),
    "POSTERIOR_CHAIN": ("textebm.sampling", "POSTERIOR_CHAIN"),
    "Langevin": ("textebm.sampling", "Langevin"),
    "MALA": ("textebm.sampling", "MALA"),
    "SGHMC": ("textebm.sampling", "SGHMC"),
    "SVGD": ("textebm.sampling", "SVGD"),
    "run_chain": ("textebm.sampling", "run_chain"),
    "langevin": ("textebm.sampling", "langevin"),
    "LatentEBMModel": ("textebm.model", "LatentEBMModel"),
    "LSTMDecoder": ("textebm.decoders", "LSTMDecoder"),
    "register_decoder": ("textebm.decoders", "register_decoder"),
    "load_recipe": ("textebm.config", "load_recipe"),
    "train": ("textebm.train", "train"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'textebm' has no attribute {name!r}")


__all__ = list(_LAZY)
