"""Validation during training: reconstruction at posterior samples, the latent diagnostics (does z carry the
sentence?) and the prior-fit diagnostics (do the prior's codes land where the codes of real sentences are?).

Every validation starts its chains from the same seeded noise (``VALID_SEED``), so the numbers of different steps
are comparable."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import torch

from ..sampling import SamplerDivergedError
from ..console import log as _log

VALID_SEED = 12345


class Validator:
    """The validation of one run: ``validator(model, step)`` returns the record written to ``metrics.jsonl``.

    * the data module's reconstruction metrics at one posterior sample per validation sentence
      (``train.eval_batches`` batches): NLL per example and per unit (MSE for images);
    * for text, :func:`~textebm.eval.latent.latent_diagnostics` on ``train.latent_batches`` batches with
      ``train.latent_chains`` chains per sentence (mutual information, active units, shuffled-latent gap, KL,
      reconstruction accuracy and BLEU);
    * for text, :func:`~textebm.eval.prior_fit.prior_fit` on ``train.prior_fit_samples`` codes per source, judged by
      the corpus's grammar when it has one, else by forward perplexity under an n-gram model of the training split
      (built at the first validation in a private temporary directory; skipped without kenlm).
    """

    def __init__(self, recipe, data, device):
        self.recipe, self.data, self.device = recipe, data, device
        self._judges = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    def __call__(self, model, step: int, max_batches: Optional[int] = None) -> dict:
        """The record of one validation (``max_batches``: at most this many validation batches instead of
        ``train.eval_batches``)."""
        t = self.recipe.train
        was = model.training
        model.eval()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(VALID_SEED)
        sums, batches = {}, []
        try:
            for x in self.data.validation(max_batches if max_batches is not None else t.eval_batches):
                x = x.to(self.device)
                z = model.sample_posterior(x, generator=gen)
                for k, v in self.data.recon_sums(model, x, z).items():
                    sums[k] = sums.get(k, 0) + v
                if len(batches) < t.latent_batches:
                    batches.append(x)
            names = list(sums)
            out = self.data.summarize(dict(zip(names, torch.stack([sums[k].to(self.device) for k in names])
                                                   .tolist())))
            # at step 0 the model is untrained (z carries nothing, the prior is its reference): the latent and
            # prior-fit diagnostics would cost a tenth of a short run to say so; the reconstruction NLL is the start
            if batches and self.data.latent_diagnostics and step > 0:
                from ..eval.latent import latent_diagnostics

                diag = latent_diagnostics(model, batches, n_chains=t.latent_chains, seed=VALID_SEED)
                if diag.get("message"):
                    _log(f"latent diagnostics: {diag['message']}")
                skip = ("n_sentences", "n_chains", "message")
                for k, v in diag.items():  # the diagnostics' own reconstruction NLL (latent_batches sentences,
                    if k in skip:          # refined chains) never replaces the validation's over the whole split
                        continue
                    key = f"valid_{k}"
                    out[f"valid_latent_{k}" if key in out or k.startswith("recon_nll") else key] = v
            if t.prior_fit_samples and self.data.latent_diagnostics and step > 0:
                out.update(self._prior_fit(model, step))
        finally:
            model.train(was)
        return out

    def _prior_fit(self, model, step: int) -> dict:
        from ..eval.prior_fit import prior_fit

        try:
            fit = prior_fit(model, self.data.train_ids, n=self.recipe.train.prior_fit_samples,
                            judges=self.judges(), seed=VALID_SEED, permutations=100)
        except SamplerDivergedError as e:  # a diagnostic: the training step owns what diverging means
            _log(f"prior fit: not measured at step {step} ({e})")
            return {}
        return {f"valid_fit_{k}": v for k, v in fit.items() if k not in ("protocol", "n")}

    def judges(self) -> list:
        """How decodes are judged: the corpus's grammar, or FPPL under an n-gram model of the training split."""
        if self._judges is None:
            from ..eval.prior_fit import grammar_judge
            from ..eval.truth import grammar_for_corpus

            d = self.recipe.data
            try:
                pcfg = grammar_for_corpus(d.corpus, d.data_dir)
            except ValueError as e:
                _log(f"prior fit: the corpus grammar is unusable ({e}); judged by FPPL instead")
                pcfg = None
            if pcfg is not None:
                self._judges = [grammar_judge(pcfg)]
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="textebm-")
                self._judges = self.data.ngram_judges(Path(self._tmp.name))
        return self._judges
