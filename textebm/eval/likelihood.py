"""Marginal likelihood of a latent EBM by importance sampling, and reconstruction NLL.

The model is p(x, z) = p_alpha(z) p_beta(x | z) with p_alpha(z) = exp(f_alpha(z)) N(z; 0, sigma0^2 I) / Z(alpha)
(Pang et al. 2020). Its marginal likelihood is estimated per example with K importance samples:

    log p(x) ~= log (1/K) sum_k w_k,   w_k = p_alpha(z_k) p_beta(x | z_k) / q(z_k | x),   z_k ~ q(. | x),

computed as a logsumexp of log w_k = log p_alpha(z_k) + log p_beta(x | z_k) - log q(z_k | x). The proposal
q(z | x) is a Gaussian fitted to posterior Langevin samples of x: ``n_chains`` chains per example, each run
``n_steps`` steps on log p_alpha(z) + log p_beta(x | z) from p0, give a mean and a (diagonal or shrunk full)
covariance; the covariance is multiplied by ``inflation`` (> 1 gives heavier proposal tails than the fitted
posterior, which keeps the weights' variance bounded when the fit is too narrow).

log p_alpha needs log Z(alpha) = log E_{p0}[exp f_alpha(z)], estimated once per model by
:func:`estimate_log_partition`: annealed importance sampling from p0 by default
(:meth:`LatentEBMPrior.log_partition_ais`), plain Monte Carlo under p0 on request. Every log p(x) estimate
inherits its error: an error e in log Z shifts every log p(x) by -e, i.e. the total NLL of N examples by N e.

Bias: E[log p_hat(x)] <= log p(x) (Jensen), so the estimated NLL is an upper bound in expectation (up to the
error of log Z, which enters with the opposite sign because log Z's own estimate is biased low).
Burda, Grosse, Salakhutdinov (2016) use the same estimator for VAEs; Pang et al. (2020, Sec. 4.2) report
NLL/PPL of the text models this way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from ..console import progress as progress_bar
from ..sampling import POSTERIOR_CHAIN, ChainConfig

#: Defaults of :func:`evaluate_nll` (and ``textebm eval --nll``), chosen so the quickstart run evaluates in
#: well under two minutes on two CPU cores.
NLL_DEFAULTS = dict(n_importance=100, n_chains=16, inflation=1.5, covariance="diag", log_z_samples=100_000,
                    batch_size=32)


# ---- the proposal ---------------------------------------------------------------------------------------
@dataclass
class GaussianProposal:
    """q(z | x) = N(mean, cov) per example: ``mean`` (B, d); ``scale`` (B, d) std devs (diagonal) or (B, d, d)
    lower Cholesky factors (full)."""

    mean: torch.Tensor
    scale: torch.Tensor

    @property
    def diagonal(self) -> bool:
        return self.scale.dim() == 2

    def sample(self, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(B, k, d) draws z = mean + L eps."""
        B, d = self.mean.shape
        eps = torch.randn(B, k, d, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        if self.diagonal:
            return self.mean.unsqueeze(1) + eps * self.scale.unsqueeze(1)
        return self.mean.unsqueeze(1) + eps @ self.scale.transpose(1, 2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mean, cov) for z of shape (B, k, d); returns (B, k)."""
        d = self.mean.shape[1]
        diff = z - self.mean.unsqueeze(1)
        if self.diagonal:
            u = diff / self.scale.unsqueeze(1)
            log_det = self.scale.log().sum(-1, keepdim=True)
        else:
            # solve L u = diff for every (b, k)
            u = torch.linalg.solve_triangular(self.scale, diff.transpose(1, 2), upper=False).transpose(1, 2)
            log_det = torch.diagonal(self.scale, dim1=1, dim2=2).log().sum(-1, keepdim=True)
        return -0.5 * u.pow(2).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)


def gaussian_from_samples(z: torch.Tensor, inflation: float = 1.5, covariance: str = "diag",
                          min_var: float = 1e-4, shrinkage: float = 0.1) -> GaussianProposal:
    """Fit q per example to samples z of shape (B, C, d) (C >= 2 chains per example).

    Diagonal: var_j = inflation * max(sample variance_j, min_var).
    Full: S = (1 - shrinkage) * sample covariance + shrinkage * diag(sample covariance) (Ledoit-Wolf-style
    shrinkage toward the diagonal, needed because C is often <= d), then inflation * (S + min_var I).
    """
    if z.dim() != 3 or z.shape[1] < 2:
        raise ValueError(f"need samples of shape (batch, chains >= 2, dim); got {tuple(z.shape)}")
    if not inflation > 0:
        raise ValueError(f"inflation must be > 0, got {inflation}")
    if covariance not in ("diag", "full"):
        raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
    mean = z.mean(1)
    if covariance == "diag":
        var = z.var(1, unbiased=True).clamp_min(min_var) * inflation
        return GaussianProposal(mean, var.sqrt())
    zc = z - mean.unsqueeze(1)
    S = zc.transpose(1, 2) @ zc / (z.shape[1] - 1)
    diag = torch.diag_embed(torch.diagonal(S, dim1=1, dim2=2))
    eye = torch.eye(z.shape[2], dtype=z.dtype, device=z.device)
    S = ((1 - shrinkage) * S + shrinkage * diag + min_var * eye) * inflation
    return GaussianProposal(mean, torch.linalg.cholesky(S))


#: a log Z standard error above this (nats) makes the NLL untrustworthy; the report says so
LOG_Z_SE_WARN = 0.1

#: the refinement after the model's posterior chain, before a proposal is fitted or a diagnostic computed:
#: the paper's posterior chain (20 Langevin steps of s1 = 0.1) at temperature 1 (noise scale 1), so that the
#: samples have the width of the model's posterior even when training infers z with a sharpened (low-noise) chain
REFINE_CHAIN = POSTERIOR_CHAIN.replace(name="posterior chain (refinement at temperature 1)")


def posterior_samples(model, x, z0: Optional[torch.Tensor] = None, chain: Optional[ChainConfig] = None,
                      refine: Optional[ChainConfig] = REFINE_CHAIN,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Samples of the model's posterior p(z | x): ``chain`` (default: the model's posterior chain, from ``z0``
    or where the chain starts), which finds where the posterior is, then ``refine`` (default
    :data:`REFINE_CHAIN`, with the model chain's clamp; None: no refinement), which spreads a sharpened chain's
    states to the posterior's own width."""
    chain = chain or model.posterior_chain
    z = model.sample_posterior(x, chain, z0=z0, generator=generator, name=f"{chain.name} (evaluation)")
    if refine is not None and refine.n_steps:
        z = model.sample_posterior(x, refine.replace(z_clamp=chain.z_clamp), z0=z, generator=generator)
    return z


def posterior_chains(model, x: torch.Tensor, n_chains: int, chain: Optional[ChainConfig] = None,
                     refine: Optional[ChainConfig] = REFINE_CHAIN,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, C, d) final states of C = ``n_chains`` independent posterior chains per example of the batch x
    (:func:`posterior_samples`, run as one batch of B * C rows), with the model in eval mode (no dropout; its
    mode is restored). x may be any batch the decoder accepts whose first dimension indexes examples."""
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    B = x.shape[0]
    was = model.training
    model.eval()
    try:
        z = posterior_samples(model, x.repeat_interleave(n_chains, 0), None, chain, refine, generator)
    finally:
        model.train(was)
    return z.detach().view(B, n_chains, -1)


@torch.no_grad()
def fit_posterior_proposal(model, x, n_chains: int = 16, chain: Optional[ChainConfig] = None,
                           inflation: float = 1.5, covariance: str = "diag", min_var: float = 1e-4,
                           shrinkage: float = 0.1, refine: Optional[ChainConfig] = REFINE_CHAIN,
                           generator: Optional[torch.Generator] = None) -> GaussianProposal:
    """:func:`gaussian_from_samples` fitted to ``n_chains`` posterior chains per example of x
    (:func:`posterior_chains`)."""
    if n_chains < 2:
        raise ValueError(f"n_chains must be >= 2 to fit a proposal, got {n_chains}")
    z = posterior_chains(model, x, n_chains, chain, refine, generator)
    return gaussian_from_samples(z, inflation=inflation, covariance=covariance, min_var=min_var,
                                 shrinkage=shrinkage)


# ---- the estimator --------------------------------------------------------------------------------------
@dataclass
class ISResult:
    """Per-example importance-sampling results (all (B,) tensors on the CPU, float64).

    log_px: log p_hat(x) = logmeanexp_k log w_k.
    se: delta-method standard error of log p_hat(x) from the weights, sd(w) / (sqrt(K) mean(w)).
    ess: effective sample size (sum w)^2 / sum w^2, between 1 and K.
    """

    log_px: torch.Tensor
    se: torch.Tensor
    ess: torch.Tensor


def summarize_log_weights(log_w: torch.Tensor) -> ISResult:
    """logmeanexp, standard error and ESS of log-weights of shape (B, K)."""
    log_w = log_w.double()
    K = log_w.shape[1]
    log_px = torch.logsumexp(log_w, 1) - math.log(K)
    w = torch.exp(log_w - log_w.max(1, keepdim=True).values)
    mean = w.mean(1)
    sd = w.std(1, unbiased=True) if K > 1 else torch.zeros_like(mean)
    ess = w.sum(1).pow(2) / w.pow(2).sum(1)
    return ISResult(log_px.cpu(), (sd / (math.sqrt(K) * mean)).cpu(), ess.cpu())


@torch.no_grad()
def importance_log_likelihood(model, x, log_z: float, n_importance: int = 50,
                              proposal: Optional[GaussianProposal] = None, max_rows: int = 4096,
                              generator: Optional[torch.Generator] = None, **proposal_kwargs) -> ISResult:
    """log p(x) ~= logmeanexp_k [log p_alpha(z_k) + log p_beta(x | z_k) - log q(z_k | x)], z_k ~ q(. | x).

    ``log_z`` is log Z(alpha) (see :func:`estimate_log_partition`); ``proposal`` is q (default: fitted with
    :func:`fit_posterior_proposal` and ``proposal_kwargs``). The decoder is evaluated on at most ``max_rows``
    (example, sample) pairs at a time. The model should be in eval mode (no dropout).
    """
    if n_importance < 1:
        raise ValueError(f"n_importance must be >= 1, got {n_importance}")
    if proposal is None:
        proposal = fit_posterior_proposal(model, x, generator=generator, **proposal_kwargs)
    B = x.shape[0]
    z = proposal.sample(n_importance, generator=generator)            # (B, K, d)
    log_q = proposal.log_prob(z)                                      # (B, K)
    d = z.shape[2]
    log_prior = model.prior.log_prob(z.reshape(-1, d), log_z).view(B, n_importance)
    log_lik = torch.empty(B, n_importance, dtype=log_q.dtype, device=log_q.device)
    step = max(1, max_rows // max(1, B))
    for k0 in range(0, n_importance, step):
        k1 = min(n_importance, k0 + step)
        zk = z[:, k0:k1].reshape(-1, d)
        xk = x.repeat_interleave(k1 - k0, 0)
        log_lik[:, k0:k1] = model.decoder.log_prob(xk, zk).view(B, k1 - k0)
    return summarize_log_weights(log_prior + log_lik - log_q)


def estimate_log_partition(prior, n_samples: int = 100_000, seed: int = 0, method: str = "ais"):
    """log Z(alpha) = log E_{z ~ N(0, sigma0^2 I)}[exp f_alpha(z)] with its standard error: (estimate, se).

    ``method="ais"`` (default): annealed importance sampling (:meth:`LatentEBMPrior.log_partition_ais`) with
    n_samples / 100 chains (at least 100) over 500 temperatures, accurate also for a peaked prior (on the
    quickstart models with log Z near -15 it was within 0.1 nats of a 4,000-temperature estimate); ``"mc"``: plain
    Monte Carlo under p0 with ``n_samples`` draws (:meth:`LatentEBMPrior.log_partition`), which a peaked prior
    biases low. A Gaussian prior has log Z = 0 exactly.
    """
    if getattr(prior, "kind", "ebm") == "gaussian":
        return 0.0, 0.0
    if method not in ("ais", "mc"):
        raise ValueError(f"method must be 'ais' or 'mc', got {method!r}")
    device = prior.sample_reference(1).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    if method == "ais":
        return prior.log_partition_ais(n_chains=max(100, n_samples // 100), n_temps=500, generator=gen)
    return prior.log_partition(n_samples=n_samples, batch_size=min(50_000, n_samples), generator=gen)


# ---- text: sentences in, numbers out --------------------------------------------------------------------
def _encode_for_model(model, sentences: Sequence[str]):
    """Token ids as the model was trained on them (recipe's max_len and length policy), and the counts."""
    from ..data.tokenizers import encode_sentences

    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; cannot evaluate text")
    r = model.recipe
    max_len = r.data.max_len if r is not None else 10 ** 9
    policy = r.data.length_policy if r is not None else "truncate"
    if r is not None and r.data.lowercase:
        sentences = [s.lower() for s in sentences]
    ids, stats = encode_sentences(list(sentences), model.tokenizer, max_len, policy)
    unk = getattr(model.tokenizer, "unk_id", None)
    stats["unk_tokens"] = sum(t == unk for s in ids for t in s) if unk is not None else 0
    return ids, stats


def _batches(ids: List[List[int]], batch_size: int):
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


NLL_PROTOCOL = (
    "NLL by importance sampling: log p(x) ~= logmeanexp_k [log p_alpha(z_k) + log p_beta(x|z_k) - log q(z_k|x)] "
    "with K = {n_importance} samples z_k ~ q(z|x); q is a {covariance} Gaussian fitted to {n_chains} posterior "
    "chains per sentence ({sampler}, {n_steps} steps of size {step_size}, noise scale {noise_scale}, started at "
    "{start}, the recipe's posterior chain unless overridden, then {refine_steps} Langevin steps of size "
    "{refine_step_size} at temperature 1 (noise scale 1), so the proposal has the posterior's width; last state of each "
    "chain), its (co)variance multiplied by {inflation} for heavier tails. log p_alpha includes -log Z(alpha), "
    "estimated once per model by annealed importance sampling from N(0, sigma0^2 I) (log_z_samples / 100 = "
    "{log_z_samples} / 100 chains, 500 temperatures, one MALA step each; seed {seed}; exactly 0 for a Gaussian "
    "prior); every log p(x) inherits that error (an error e in log Z changes the total NLL by N*e). "
    "Sentences are encoded as in training (recipe max_len and length policy; words outside the vocabulary "
    "become <unk> and are scored as <unk>). NLL is in nats per sentence; per-token perplexity = "
    "exp(total NLL / total tokens), tokens counting </s> once per sentence (not <s>). The estimate of log p(x) "
    "is biased low, so NLL and PPL are upper bounds in expectation."
)


@torch.no_grad()
def evaluate_nll(model, sentences: Sequence[str], n_importance: int = NLL_DEFAULTS["n_importance"],
                 n_chains: int = NLL_DEFAULTS["n_chains"], chain: Optional[ChainConfig] = None,
                 inflation: float = NLL_DEFAULTS["inflation"],
                 covariance: str = NLL_DEFAULTS["covariance"], log_z_samples: int = NLL_DEFAULTS["log_z_samples"],
                 log_z: Optional[tuple] = None, batch_size: int = NLL_DEFAULTS["batch_size"], seed: int = 0,
                 progress: bool = False) -> dict:
    """Importance-sampled NLL and per-token perplexity of ``sentences`` under a text model.

    Returns a JSON-ready dict: ``nll_per_sentence`` (mean nats), ``nll_total``, ``ppl_per_token`` =
    exp(total NLL / total tokens incl. </s>), ``log_z`` and ``log_z_se``, the Monte Carlo standard error of the
    total (``nll_total_se_is``), the total's shift for a one-standard-error change of log Z
    (``nll_total_se_log_z``), the mean effective sample size, the counts, and ``protocol``.
    """
    chain = chain or model.posterior_chain
    settings = dict(n_importance=n_importance, n_chains=n_chains, **chain.describe(),
                    refine_steps=REFINE_CHAIN.n_steps, refine_step_size=REFINE_CHAIN.step_size, inflation=inflation,
                    covariance=covariance, log_z_samples=log_z_samples, seed=seed,
                    batch_size=batch_size)
    ids, stats = _encode_for_model(model, sentences)
    out = {"settings": settings, "protocol": NLL_PROTOCOL.format(**settings), "n_input_sentences": len(sentences),
           **stats}
    if not ids:
        out.update(message="no sentences to evaluate (empty input, or all dropped by the length policy)",
                   nll_per_sentence=None, ppl_per_token=None)
        return out
    was = model.training
    model.eval()
    try:
        if log_z is None:
            log_z = estimate_log_partition(model.prior, log_z_samples, seed=seed)
        lz, lz_se = float(log_z[0]), float(log_z[1])
        gen = torch.Generator(device=model.device)
        gen.manual_seed(seed + 1)
        from ..data import pad_batch

        pad = model.tokenizer.pad_id
        log_px = torch.empty(len(ids), dtype=torch.float64)
        se = torch.empty(len(ids), dtype=torch.float64)
        ess = torch.empty(len(ids), dtype=torch.float64)
        bar = progress_bar(len(ids), "nll", progress, leave=False)
        for idx in _batches(ids, batch_size):
            x = pad_batch([ids[i] for i in idx], pad).to(model.device)
            res = importance_log_likelihood(model, x, lz, n_importance=n_importance, generator=gen,
                                            n_chains=n_chains, chain=chain, inflation=inflation,
                                            covariance=covariance)
            t = torch.as_tensor(idx)
            log_px[t], se[t], ess[t] = res.log_px, res.se, res.ess
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
    finally:
        model.train(was)
    n_tok = sum(len(s) - 1 for s in ids)
    N = len(ids)
    total = float(-log_px.sum())
    out.update(
        n_sentences=N, n_tokens=n_tok, nll_total=total, nll_per_sentence=total / N,
        nll_per_token=total / n_tok, ppl_per_token=_safe_exp(total / n_tok),
        log_z=lz, log_z_se=lz_se, nll_total_se_is=float(se.pow(2).sum().sqrt()),
        nll_total_se_log_z=N * lz_se,
        ppl_per_token_range_log_z=[_safe_exp((total - N * lz_se) / n_tok), _safe_exp((total + N * lz_se) / n_tok)],
        ess_mean=float(ess.mean()), ess_min=float(ess.min()),
        nll_per_sentence_values=[round(-float(v), 4) for v in log_px],
    )
    if not math.isfinite(total):
        out["message"] = "the NLL is not finite (a decoder or prior value overflowed)"
    elif lz_se > LOG_Z_SE_WARN:
        out["message"] = (f"log Z(alpha) is uncertain (standard error {lz_se:.2f} nats): the prior is so peaked that "
                          f"annealed importance sampling did not settle, and the NLL is not trustworthy (a value "
                          f"below the data's entropy is this error); a bounded f (prior.f_clamp) keeps it "
                          f"estimable")
    return out


RECON_PROTOCOL = (
    "Reconstruction NLL: -log p_beta(x|z+) at one posterior sample z+ per sentence (the recipe's posterior chain "
    "unless overridden: {sampler}, {n_steps} steps of size {step_size}, noise scale {noise_scale}, started at "
    "{start}; "
    "seed {seed}), decoder in eval mode. Reported per sentence (nats) and per token (tokens include </s>); "
    "it is not a likelihood of x (z+ depends on x) and is not comparable to the NLL."
)


@torch.no_grad()
def evaluate_reconstruction(model, sentences: Sequence[str], chain: Optional[ChainConfig] = None,
                            batch_size: int = 64, seed: int = 0) -> dict:
    """Mean -log p_beta(x | z+) at posterior samples z+ ~ p(z | x) by ``chain`` (default: the model's posterior
    chain), per sentence and token."""
    chain = chain or model.posterior_chain
    settings = dict(**chain.describe(), seed=seed, batch_size=batch_size)
    ids, stats = _encode_for_model(model, sentences)
    out = {"settings": settings, "protocol": RECON_PROTOCOL.format(**settings), **stats}
    if not ids:
        out.update(message="no sentences to evaluate", recon_nll_per_sentence=None, recon_ppl_per_token=None)
        return out
    from ..data import pad_batch

    was = model.training
    model.eval()
    gen = torch.Generator(device=model.device)
    gen.manual_seed(seed)
    total = 0.0
    try:
        for idx in _batches(ids, batch_size):
            x = pad_batch([ids[i] for i in idx], model.tokenizer.pad_id).to(model.device)
            z = model.sample_posterior(x, chain, generator=gen)
            total += float(-model.decoder.log_prob(x, z).sum())
    finally:
        model.train(was)
    n_tok = sum(len(t) - 1 for t in ids)
    out.update(n_sentences=len(ids), n_tokens=n_tok, recon_nll_total=total,
               recon_nll_per_sentence=total / len(ids), recon_nll_per_token=total / n_tok,
               recon_ppl_per_token=_safe_exp(total / n_tok))
    return out


def _safe_exp(v: float) -> float:
    return math.exp(v) if v < 700 else float("inf")
