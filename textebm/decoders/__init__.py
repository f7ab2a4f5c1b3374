"""Decoders p_beta(x | z): the protocol, the text decoders and the conv image generator."""
import inspect

from .base import Decoder, check_latent, rnn_backward_mode, split_log_prob
from .conv import ConvDecoder
from .lstm import LSTMDecoder
from .transformer import TransformerDecoder

DECODERS = {"lstm": LSTMDecoder, "transformer": TransformerDecoder, "conv": ConvDecoder}


def build_decoder(name: str, **kwargs):
    """Build a decoder by its recipe name."""
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


__all__ = ["Decoder", "check_latent", "rnn_backward_mode", "split_log_prob", "LSTMDecoder", "TransformerDecoder",
           "ConvDecoder", "DECODERS", "build_decoder"]
