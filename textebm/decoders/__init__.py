"""Decoders p_beta(x | z): the protocol and the built-in text decoders."""
from .base import Decoder, check_latent, prepared_log_prob
from .lstm import LSTMDecoder

DECODERS = {"lstm": LSTMDecoder}


def build_decoder(name: str, **kwargs):
    """Build a decoder by its recipe name."""
    try:
        cls = DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {sorted(DECODERS)}") from None
    return cls(**kwargs)


__all__ = ["Decoder", "check_latent", "prepared_log_prob", "LSTMDecoder", "DECODERS", "build_decoder"]
