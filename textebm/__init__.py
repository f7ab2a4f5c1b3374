"""textebm: generative models with a latent-space energy-based prior, p(x, z) = p_alpha(z) p_beta(x | z).

The main pieces (imported lazily so that ``textebm --help`` stays fast):
    LatentEBMPrior   textebm.prior      the prior exp(f_alpha(z)) N(z; 0, sigma0^2 I) / Z(alpha)
    langevin         textebm.sampling   short-run Langevin over any log-density
    LatentEBMModel   textebm.model      prior + decoder
"""
__version__ = "0.1.0"

_LAZY = {
    "LatentEBMPrior": ("textebm.prior", "LatentEBMPrior"),
    "LatentEBMModel": ("textebm.model", "LatentEBMModel"),
    "langevin": ("textebm.sampling", "langevin"),
    "Langevin": ("textebm.sampling", "Langevin"),
    "LSTMDecoder": ("textebm.decoders", "LSTMDecoder"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'textebm' has no attribute {name!r}")


__all__ = list(_LAZY)
