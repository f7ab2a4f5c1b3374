"""Decoders are found by their registered name and declare their modality."""
import pytest
import torch
from torch import nn

from textebm.data import WordVocab
from textebm.decoders import DECODERS, ConvDecoder, LSTMDecoder, build_decoder, register_decoder
from textebm.model import LatentEBMModel
from textebm.prior import LatentEBMPrior


def test_a_registered_decoder_is_built_by_name_and_reloaded(tmp_path):
    @register_decoder("test_bag", modality="text")
    class BagOfWords(nn.Module):
        def __init__(self, vocab_size: int, latent_dim: int):
            super().__init__()
            self.latent_dim, self.config = latent_dim, dict(vocab_size=vocab_size, latent_dim=latent_dim)
            self.out = nn.Linear(latent_dim, vocab_size)

        def log_prob(self, x, z):
            return self.out(z).log_softmax(-1).gather(1, x).sum(1)

        def generate(self, z, **kw):
            return self.out(z).argmax(-1, keepdim=True).tolist()

    try:
        dec = build_decoder("test_bag", vocab_size=6, latent_dim=3)
        assert isinstance(dec, BagOfWords) and dec.modality == "text"
        model = LatentEBMModel(LatentEBMPrior(3, hidden=8), dec, WordVocab(["<pad>", "<unk>", "<s>", "</s>", "a", "b"]))
        assert not model.is_image
        model.save_pretrained(tmp_path / "m")
        again = LatentEBMModel.from_pretrained(tmp_path / "m")
        assert isinstance(again.decoder, BagOfWords)
        torch.testing.assert_close(again.decoder.out.weight, dec.out.weight)
        with pytest.raises(ValueError, match="taken by BagOfWords"):
            register_decoder("test_bag")(type("Other", (nn.Module,), {}))
        with pytest.raises(ValueError, match="unknown argument"):
            build_decoder("test_bag", vocab_size=6, latent_dim=3, depth=2)
    finally:
        DECODERS.pop("test_bag", None)


def test_modality_is_declared_not_guessed():
    assert LSTMDecoder.modality == "text" and ConvDecoder.modality == "image"
    assert DECODERS["lstm"] is LSTMDecoder and DECODERS["conv"] is ConvDecoder
    with pytest.raises(ValueError, match="modality"):
        register_decoder("x", modality="audio")
