"""Decoders p_beta(x | z): the protocol and its registry, the text decoders and the conv image generator."""
from .base import DECODERS, Decoder, build_decoder, check_latent, register_decoder, rnn_backward_mode, split_log_prob
from .conv import ConvDecoder
from .lstm import LSTMDecoder
from .transformer import TransformerDecoder

__all__ = ["Decoder", "check_latent", "rnn_backward_mode", "split_log_prob", "LSTMDecoder", "TransformerDecoder",
           "ConvDecoder", "DECODERS", "build_decoder", "register_decoder"]
