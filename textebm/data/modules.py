"""Data modules: what the training loop needs from a modality, behind one small interface.

    data = build_data(recipe, rank, world_size, run_dir=None)     # TextData or ImageData (run_dir: resuming)
    data.next() -> Batch(x, index)        the endless training stream (resumable: state_dict / load_state_dict)
    data.validation(max_batches)          an iterator of validation batches x (a fixed, seeded subset)
    data.n_train                          training examples (the size of per-example chain stores)
    data.units(x)                         what a per-unit NLL divides by: real target tokens, or pixel values
    data.bucket(x, m)                     x padded to one of a few shapes (for captured chains)
    data.recon_sums(model, x, z)          sums for the validation metrics at posterior samples z (tensors)
    data.summarize(sums)                  those sums as the validation metrics of ``metrics.jsonl``
    data.save(run_dir), data.finish(...)  what a run directory keeps (the tokenizer; image grids)
    data.stats, data.tokenizer, data.kind
    data.latent_diagnostics               whether the latent diagnostics apply (greedy decoding of tokens)

so the loop reads the same for text and images.
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, Optional

import torch

from .batching import Batch, BucketBatcher
from ..console import log as _log


class DataModule:
    """What both modalities share: the training stream (``batcher``), the validation batches (``_valid``), and the
    stream's state for checkpoints."""

    batcher = None
    _valid = None
    latent_diagnostics = False

    def next(self) -> Batch:
        return self.batcher.next_batch()

    def validation(self, max_batches: Optional[int] = None) -> Iterator[torch.Tensor]:
        for i, x in enumerate(self._valid):
            if max_batches is not None and i >= max_batches:
                return
            yield x

    def state_dict(self) -> dict:
        return self.batcher.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batcher.load_state_dict(state)


class TextData(DataModule):
    """A text corpus: tokenizer (built from the training split, or the run's own when resuming), length-bucketed
    batches of token ids, validation by reconstruction NLL per sentence and per token."""

    kind = "text"
    unit = "token"
    latent_diagnostics = True

    def __init__(self, recipe, rank: int = 0, world_size: int = 1, run_dir=None):
        from .registry import load_corpus
        from .tokenizers import build_tokenizer, encode_sentences, load_tokenizer

        r, d = recipe, recipe.data
        corpus = load_corpus(d.corpus, data_dir=d.data_dir, **d.options)
        prep = (lambda xs: [s.lower() for s in xs]) if d.lowercase else list
        train, valid = prep(corpus.train), prep(corpus.valid)
        self.tokenizer = load_tokenizer(run_dir) if run_dir is not None else build_tokenizer(r, train)
        self.train_ids, tstats = encode_sentences(train, self.tokenizer, d.max_len, d.length_policy)
        self.valid_ids, vstats = encode_sentences(valid, self.tokenizer, d.max_len, d.length_policy)
        if not self.train_ids:
            raise ValueError(f"corpus {d.corpus!r}: no training sentences left after length handling")
        if not self.valid_ids:
            raise ValueError(f"corpus {d.corpus!r}: no validation sentences left after length handling")
        bs = r.train.batch_size
        if len(self.train_ids) < bs:
            where = f"{d.corpus!r} from {d.data_dir}" if d.data_dir else repr(d.corpus)
            _log(f"warning: corpus {where} has {len(self.train_ids)} training sentence(s), fewer than one "
                 f"batch (train.batch_size={bs}); every batch repeats them and the model will overfit")
        self.stats = {"corpus": corpus.name, "train_sentences": len(self.train_ids),
                      "valid_sentences": len(self.valid_ids), "vocab_size": len(self.tokenizer),
                      "train_truncated": tstats["truncated"], "train_dropped": tstats["dropped"],
                      "valid_truncated": vstats["truncated"], "valid_dropped": vstats["dropped"], **corpus.stats}
        if getattr(self.tokenizer, "note", None):  # a pretrained model's tokenizer: the special tokens it lacked
            self.stats["tokenizer_note"] = self.tokenizer.note
        pad = self.tokenizer.pad_id
        self.batcher = BucketBatcher(self.train_ids, bs, pad, seed=r.seed, rank=rank, world_size=world_size)
        # a fixed random order of length buckets: eval_batches then scores a random subset, not the shortest
        self._valid = BucketBatcher(self.valid_ids, bs, pad, seed=12345, shuffle=True)

    @property
    def n_train(self) -> int:
        return len(self.train_ids)


    def bucket(self, x: torch.Tensor, multiple: int) -> torch.Tensor:
        """x right-padded to a length that is a multiple of ``multiple`` (padding is masked: the same density), so
        that captured chains see a few shapes."""
        T = x.shape[1]
        extra = -T % multiple
        if not extra:
            return x
        return torch.cat([x, x.new_full((x.shape[0], extra), self.tokenizer.pad_id)], 1)

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """Real target tokens of a batch (</s> included, <s> and padding not), as a device tensor."""
        return (x[:, 1:] != self.tokenizer.pad_id).sum()

    @torch.no_grad()
    def recon_sums(self, model, x: torch.Tensor, z: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"nll": -model.decoder.log_prob(x, z).double().sum(), "units": self.units(x).double(),
                "examples": torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)}

    @staticmethod
    def summarize(sums: Dict[str, float]) -> Dict[str, float]:
        n, u = sums["examples"], max(1.0, sums["units"])
        return {"valid_recon_nll": sums["nll"] / n, "valid_recon_nll_token": sums["nll"] / u,
                "valid_recon_ppl": math.exp(min(50.0, sums["nll"] / u))}

    def save(self, run_dir) -> None:
        self.tokenizer.save(run_dir)

    def ngram_judges(self, workdir, order: int = 5) -> list:
        """[a judge of sentences by their forward perplexity under an ``order``-gram model of the training split]
        (:func:`textebm.eval.prior_fit.ngram_judge`), the model written into ``workdir``; [] with a note when
        kenlm is not installed."""
        import importlib.util

        from ..eval import ngram
        from ..eval.prior_fit import ngram_judge

        if importlib.util.find_spec("kenlm") is None:
            _log("prior fit: kenlm is not installed (pip install 'textebm[text]'), so decodes are not judged")
            return []
        text = [" ".join(self.tokenizer.decode(ids).split()) for ids in self.train_ids]
        res = ngram.train(order, text, workdir / "train.arpa")
        return [ngram_judge(res.path)]

    def finish(self, model, run_dir, generator) -> None:
        """Nothing more for text runs (samples come from ``textebm sample``)."""


class ImageData(DataModule):
    """An image set scaled to [-1, 1]: seeded batches, validation by reconstruction NLL and MSE per pixel value,
    and PNG grids (samples, reconstructions, long prior chains) when a run ends."""

    kind = "image"
    unit = "dim"
    tokenizer = None

    def __init__(self, recipe, rank: int = 0, world_size: int = 1, run_dir=None):
        from .images import ImageBatcher, held_out_class_split, load_images

        r, d = recipe, recipe.data
        images = load_images(d.corpus, d.image_size, d.channels, data_dir=d.data_dir, limit=d.limit, seed=r.seed,
                             **d.options)
        if d.held_out_class is not None:
            images = held_out_class_split(images, d.held_out_class)
        self.images = images
        bs = r.train.batch_size
        if len(images.train) < bs * world_size:
            raise ValueError(f"image set {d.corpus!r}: {len(images.train)} training images, fewer than one batch "
                             f"of train.batch_size={bs} per process; lower train.batch_size")
        self.stats = {"images": images.name, "train_images": len(images.train), "valid_images": len(images.valid),
                      "test_images": len(images.test), "image_shape": list(images.train.shape[1:]), **images.stats}
        self.batcher = ImageBatcher(images.train, bs, seed=r.seed, rank=rank, world_size=world_size)
        self._valid = ImageBatcher(images.valid, bs, shuffle=False, drop_last=False)
        self.recipe = recipe

    @property
    def n_train(self) -> int:
        return len(self.images.train)


    def bucket(self, x: torch.Tensor, multiple: int) -> torch.Tensor:
        """Images have one shape already."""
        return x

    def units(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.numel(), device=x.device)

    @torch.no_grad()
    def recon_sums(self, model, x: torch.Tensor, z: torch.Tensor) -> Dict[str, torch.Tensor]:
        mean = model.decoder.mean(z)
        return {"nll": -model.decoder.log_prob_given_mean(x, mean).double().sum(),
                "sq": (x - mean).double().pow(2).sum(),
                "units": torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device),
                "examples": torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)}

    @staticmethod
    def summarize(sums: Dict[str, float]) -> Dict[str, float]:
        n, u = sums["examples"], max(1.0, sums["units"])
        return {"valid_recon_nll": sums["nll"] / n, "valid_recon_nll_dim": sums["nll"] / u,
                "valid_mse": sums["sq"] / u}

    def save(self, run_dir) -> None:
        """Image runs keep no tokenizer."""

    def finish(self, model, run_dir, generator) -> None:
        """samples.png, reconstructions.png (validation images) and chain.png in the run directory."""
        from ..eval.image_run import write_image_grids

        model.eval()
        paths = write_image_grids(model, self.images.valid, run_dir, generator=generator)  # the recipe's chains
        _log("image grids: " + ", ".join(paths.values()))


def build_data(recipe, rank: int = 0, world_size: int = 1, run_dir=None):
    """The data module of ``recipe.data.kind`` (``text`` or ``image``); ``run_dir``: the run being resumed, whose
    own tokenizer a text run keeps."""
    cls = ImageData if recipe.data.kind == "image" else TextData
    return cls(recipe, rank=rank, world_size=world_size, run_dir=run_dir)
