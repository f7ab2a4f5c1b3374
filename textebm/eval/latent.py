"""Latent-usage diagnostics of a text model p(x, z) = p_alpha(z) p_beta(x | z): does the decoder use z?

Everything is computed from posterior samples z+ ~ p(z | x): C independent short-run Langevin chains per
sentence (``model.sample_posterior``), the final state of each chain being one sample. The numbers describe the
posterior the model's own sampler produces (short-run chains are not exact posterior samples).

* :func:`mutual_information`: I(x; z) under the model (He et al. 2019), cross-fitted and bias-corrected;
* :func:`active_units`: Burda et al. (2016) active units, corrected for the noise of chain means;
* :func:`shuffled_latent_gap`: how much log p(x | z) drops when x gets another sentence's z;
* :func:`reconstruction`: greedy decoding from z+ against the input (token accuracy, exact match, BLEU-4);
* :func:`latent_diagnostics`: all of them, plus KL = IS-NLL - reconstruction NLL, over batches of sentences.

A decoder that ignores z reads MI ~ 0, no active units, a shuffled gap of exactly 0 and KL ~ 0.
All public functions return JSON-ready dicts of floats / ints (None where undefined).
"""
from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import torch

from .bleu import bleu_from_stats, bleu_stats, corpus_bleu  # noqa: F401 (corpus_bleu: part of this module's API)


def _check_chains(chains: torch.Tensor, min_chains: int, min_n: int = 2) -> torch.Tensor:
    if not isinstance(chains, torch.Tensor) or chains.dim() != 3:
        raise ValueError("chains must be a tensor of shape (sentences, chains, latent_dim)")
    N, C, _ = chains.shape
    if C < min_chains:
        raise ValueError(f"need at least {min_chains} chains per sentence, got {C}")
    if N < min_n:
        raise ValueError(f"need at least {min_n} sentences, got {N}")
    return chains.detach().to("cpu", torch.float64)


# ---- mutual information -----------------------------------------------------------------------------------
def _fit_diag(tr: torch.Tensor, shrink: bool):
    """Diagonal Gaussian fits (mean, variance) per sentence from samples tr (N, k, d).

    With ``shrink``, the log-variances are partially pooled across sentences per dimension (empirical Bayes):
    under Gaussian posteriors log s^2 = log sigma^2 + log(chi2_nu / nu), nu = k - 1, whose noise has mean
    psi(nu/2) - log(nu/2) and variance psi'(nu/2), both known. The between-sentence variance of log sigma^2
    is tau^2 = max(0, Var_n(log s^2) - psi'(nu/2)); each log s^2 is shrunk toward the mean over sentences by
    lambda = tau^2 / (tau^2 + psi'(nu/2)) and de-biased: a model whose posterior variances do not depend on x
    (an unused latent, a linear-Gaussian model) gets one pooled, nearly exact variance per dimension.
    """
    N, k, d = tr.shape
    mean = tr.mean(1)
    s2 = tr.var(1, unbiased=True).clamp_min(1e-12)
    if not shrink:
        return mean, s2
    noise_mean = _log_var_bias(k - 1)
    noise_var = float(torch.special.polygamma(1, torch.tensor((k - 1) / 2.0, dtype=torch.float64)))
    L = s2.log()
    m = L.mean(0)
    tau2 = (L.var(0, unbiased=True) - noise_var).clamp_min(0.0)
    lam = tau2 / (tau2 + noise_var)
    return mean, (m + lam * (L - m) - noise_mean).exp()


def _diag_log_density_matrix(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, max_cells: int = 1 << 22):
    """(R, N) matrix of log N(z_r; mean_m, diag(var_m)) for points z (R, d) and N diagonal Gaussians."""
    R, d = z.shape
    a = 1.0 / var                                   # (N, d)
    b = mean * a
    c = (mean * b).sum(1) + var.log().sum(1) + d * math.log(2 * math.pi)   # (N,)
    out = torch.empty(R, mean.shape[0], dtype=z.dtype)
    step = max(1, max_cells // max(1, mean.shape[0]))
    for i in range(0, R, step):
        zi = z[i:i + step]
        out[i:i + step] = -0.5 * ((zi * zi) @ a.t() - 2.0 * zi @ b.t() + c)
    return out


MI_ESTIMATORS = ("corrected", "cross_fitted", "in_sample")


def _log_var_bias(nu: int) -> float:
    """E[log(chi2_nu / nu)] = psi(nu/2) - log(nu/2): the bias of log s^2 (unbiased s^2, nu dof) for log sigma^2."""
    a = torch.tensor(nu / 2.0, dtype=torch.float64)
    return float(torch.special.digamma(a) - torch.log(a))


def mutual_information(chains: torch.Tensor, n_eval: int = 1, estimator: str = "corrected") -> dict:
    """I(x; z) under the model from posterior chains (N sentences, C chains, d), cross-fitted and de-biased.

    The aggregate-posterior estimator of He, Spokoyny, Neubig, Berg-Kirkpatrick (2019), with diagonal Gaussians
    q(z | x_n) fitted to the chains of each sentence:

        I = mean_n E_{z ~ p(z|x_n)} [ log q(z | x_n) - log (1/N) sum_m q(z | x_m) ]      (<= log N).

    ``estimator``: ``"corrected"`` (default: the first term in closed form from all chains, the aggregate
    cross-fitted on held-out chains with pooled variances and narrowed components; both biases removed to first
    order in 1/k), ``"cross_fitted"`` (plain held-out plug-in, biased low) or ``"in_sample"`` (biased high, for
    comparison). The derivation and the measured biases are in docs/latent.md ("The mutual-information
    estimator").

    Returns ``mi`` (nats), ``mi_se`` (standard error over sentences), ``n``, ``mi_max`` = log N, ``n_chains``,
    ``n_eval``, ``n_folds``, ``estimator``.
    """
    if estimator not in MI_ESTIMATORS:
        raise ValueError(f"estimator must be one of {MI_ESTIMATORS}, got {estimator!r}")
    in_sample = estimator == "in_sample"
    if not in_sample and n_eval < 1:
        raise ValueError(f"n_eval must be >= 1 for the {estimator} estimator, got {n_eval}")
    z = _check_chains(chains, min_chains=2 if in_sample else n_eval + 2)
    N, C, d = z.shape
    if in_sample:
        folds, k = [(torch.arange(C), torch.arange(C))], C
    else:
        k = C - n_eval
        folds = []
        for f in range(C // n_eval):
            ev = torch.arange(f * n_eval, (f + 1) * n_eval)
            keep = torch.ones(C, dtype=torch.bool)
            keep[ev] = False
            folds.append((torch.nonzero(keep).squeeze(1), ev))
    corrected = estimator == "corrected"
    log_n = math.log(N)
    own_sum = torch.zeros(N, dtype=torch.float64)
    agg_sum = torch.zeros(N, dtype=torch.float64)
    for tr_idx, ev_idx in folds:
        mean, var = _fit_diag(z[:, tr_idx], shrink=corrected)
        E = len(ev_idx)
        pts = z[:, ev_idx].reshape(N * E, d)
        if not corrected:
            owner = torch.arange(N).repeat_interleave(E)
            diff = pts - mean[owner]
            own = -0.5 * ((diff * diff / var[owner]).sum(1) + var[owner].log().sum(1) + d * math.log(2 * math.pi))
            own_sum += own.view(N, E).mean(1)
        comp_var = var * (1.0 - 1.0 / k) if corrected else var
        logq = _diag_log_density_matrix(pts, mean, comp_var)              # (N*E, N)
        agg_sum += (torch.logsumexp(logq, 1) - log_n).view(N, E).mean(1)
    agg = agg_sum / len(folds)
    if corrected:
        log_var = z.var(1, unbiased=True).clamp_min(1e-12).log() - _log_var_bias(C - 1)
        own = -0.5 * (log_var.sum(1) + d * math.log(2 * math.pi * math.e))
    else:
        own = own_sum / len(folds)
    per_sentence = own - agg
    return {"mi": float(per_sentence.mean()), "mi_se": float(per_sentence.std(unbiased=True) / math.sqrt(N)),
            "n": N, "mi_max": log_n, "n_chains": C, "n_eval": 0 if in_sample else n_eval, "n_folds": len(folds),
            "estimator": estimator}


# ---- active units -----------------------------------------------------------------------------------------
def active_units(chains: torch.Tensor, threshold: float = 0.01, alpha: Optional[float] = 1e-3) -> dict:
    """Active units (Burda, Grosse, Salakhutdinov 2016): A_u = Cov_x(E[z_u | x]) > ``threshold``.

    E[z_u | x_n] is estimated by the mean of the C chains of x_n, and the variance of these chain means over
    sentences is inflated by their own noise: E[Var_n(chain mean)] = Cov_x(E[z_u | x]) + E_x[Var(z_u | x)] / C.
    A posterior equal to the prior would read 1/C per unit (0.125 for C = 8), i.e. every unit active. The
    one-way ANOVA (random effects) estimate removes it:

        A_u = Var_n(mean_c z_{n,c,u}) - mean_n Var_c(z_{n,c,u}) / C      (both unbiased, N - 1 and C - 1),

    whose expectation is 0 for an unused unit. Its noise is still ~ (sigma^2 / C) sqrt(2 / N) (0.0125 for
    C = 8, N = 200), the size of the threshold, so a unit is counted only when it is also significant: the
    ANOVA F statistic MS_between / MS_within = C Var_n(chain mean) / mean_n Var_c(z) exceeds its null
    F(N - 1, N (C - 1)) quantile at level ``alpha`` (``alpha=None``: threshold only). Units whose A_u is
    between the threshold and the detection limit (~3.1 sigma^2 / C sqrt(2 / N)) are then missed.

    Returns ``active_units``, ``active_fraction``, the per-dimension ``variance`` (A_u, corrected),
    ``variance_uncorrected`` (Var_n of the chain means, Burda et al.'s number), ``p_value`` (per dimension),
    ``active_units_uncorrected`` (variance_uncorrected > threshold), ``threshold``, ``alpha``.
    """
    z = _check_chains(chains, min_chains=2)
    N, C, d = z.shape
    means = z.mean(1)
    between = means.var(0, unbiased=True)                 # Var_n of the chain means
    within = z.var(1, unbiased=True).mean(0)               # mean_n Var_c
    corrected = between - within / C
    ms_b, ms_w = C * between, within
    if alpha is not None:
        from scipy.stats import f as f_dist

        F = torch.where(ms_w > 0, ms_b / ms_w.clamp_min(1e-300), torch.where(ms_b > 0, math.inf, 0.0))
        p = [float(f_dist.sf(float(v), N - 1, N * (C - 1))) for v in F]
    else:
        p = [None] * d
    active = [bool(corrected[u] > threshold) and (alpha is None or p[u] < alpha) for u in range(d)]
    n_active = sum(active)
    return {"active_units": n_active, "active_fraction": n_active / d,
            "variance": [float(v) for v in corrected], "variance_uncorrected": [float(v) for v in between],
            "p_value": p, "active_units_uncorrected": int((between > threshold).sum()),
            "threshold": threshold, "alpha": alpha}


# ---- shuffled latents -------------------------------------------------------------------------------------
def random_derangement(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random permutation pi of 0..n-1 without fixed points (n >= 2): one random n-cycle."""
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2, got {n}")
    order = torch.randperm(n, generator=generator)
    pi = torch.empty(n, dtype=torch.long)
    pi[order] = order.roll(-1)
    return pi


@torch.no_grad()
def _shuffle_terms(model, x: torch.Tensor, z: torch.Tensor, generator: Optional[torch.Generator] = None):
    pi = random_derangement(x.shape[0], generator).to(z.device)
    matched = model.decoder.log_prob(x, z).double().cpu()
    shuffled = model.decoder.log_prob(x, z[pi]).double().cpu()
    return matched, shuffled


def shuffled_latent_gap(model, x: torch.Tensor, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> dict:
    """E[log p(x | z+(x))] - E[log p(x | z+(x'))], nats per sentence, x' another sentence of the batch.

    z (B, d) holds one posterior sample per sentence of x; x' = x_{pi(n)} for a random derangement pi (no
    sentence keeps its own z). The gap is exactly 0 (up to float error) for a decoder that ignores z, and
    large when z carries sentence-specific information. Returns ``shuffle_gap``, its standard error over
    sentences ``shuffle_gap_se``, ``log_lik_matched``, ``log_lik_shuffled`` (means) and ``n``. The model
    should be in eval mode.
    """
    matched, shuffled = _shuffle_terms(model, x, z, generator)
    diff = matched - shuffled
    n = diff.numel()
    return {"shuffle_gap": float(diff.mean()),
            "shuffle_gap_se": float(diff.std(unbiased=True) / math.sqrt(n)) if n > 1 else None,
            "log_lik_matched": float(matched.mean()), "log_lik_shuffled": float(shuffled.mean()), "n": n}


# ---- reconstruction ---------------------------------------------------------------------------------------
def reconstruction_scores(decoded: Sequence[Sequence[int]], references: Sequence[Sequence[int]],
                          stopped: Optional[Sequence[bool]] = None, eos: object = "</s>") -> dict:
    """Compare decoded token sequences with the input sentences (both without <s> and </s>).

    ``stopped[n]`` says whether decoding n ended with </s> (default: yes). Token accuracy compares position by
    position the input followed by </s> (L_n + 1 tokens) with the decoded tokens followed by </s> when they
    stopped: correct / sum_n (L_n + 1), so a missing, extra or late </s> costs a token. Exact match: the
    decoded sequence equals the input and stopped. BLEU: :func:`corpus_bleu` of the decoded sequences against
    the inputs (without </s>). Returns ``token_acc``, ``exact``, ``bleu``, ``n``, ``n_tokens``, and the counts
    ``correct_tokens``, ``n_exact``.
    """
    if len(decoded) != len(references):
        raise ValueError(f"{len(decoded)} decoded sequences but {len(references)} references")
    stopped = [True] * len(decoded) if stopped is None else list(stopped)
    correct = total = exact = 0
    for h, ref, st in zip(decoded, references, stopped):
        h, ref = list(h), list(ref)
        full_h = h + [eos] if st else h
        full_r = ref + [eos]
        total += len(full_r)
        correct += sum(1 for a, b in zip(full_h, full_r) if a == b)
        exact += int(st and h == ref)
    n = len(references)
    return {"token_acc": correct / total if total else None, "exact": exact / n if n else None,
            "bleu": corpus_bleu(decoded, references), "n": n, "n_tokens": total, "correct_tokens": correct,
            "n_exact": exact}


def _bodies(model, x: torch.Tensor) -> List[List[int]]:
    """Input token ids between <s> and </s> (padding removed)."""
    dec = model.decoder
    bos, eos, pad = getattr(dec, "bos_id", None), getattr(dec, "eos_id", None), getattr(dec, "pad_id", None)
    out = []
    for row in x.tolist():
        if bos is not None and row and row[0] == bos:
            row = row[1:]
        row = [t for t in row if t != pad]
        if eos is not None and eos in row:
            row = row[:row.index(eos)]
        out.append(row)
    return out


@torch.no_grad()
def _decode(model, x: torch.Tensor, z: torch.Tensor, max_len: Optional[int]):
    refs = _bodies(model, x)
    if max_len is None:  # room for the longest input, its </s> and a run-on (within a transformer's positions)
        longest = max(len(r) for r in refs)
        max_len = longest + 5
        cap = getattr(model.decoder, "max_positions", None)
        if cap is not None:
            max_len = max(longest + 1, min(max_len, cap - getattr(model.decoder, "n_prefix", 0)))
    hyps = model.decoder.generate(z, max_len=max_len, greedy=True)
    stopped = [len(h) < max_len for h in hyps]
    return hyps, refs, stopped


def reconstruction(model, x: torch.Tensor, z: torch.Tensor, max_len: Optional[int] = None) -> dict:
    """Greedy decoding from posterior samples z (B, d) compared with the input sentences x (padded batch).

    ``decoder.generate(z, max_len, greedy=True)``; ``max_len`` defaults to the longest input + 5 tokens (fewer
    if a transformer's positions end sooner, never fewer than the longest input + 1), so a decoding that has
    not stopped by then has overrun every input. Scores from :func:`reconstruction_scores`
    (token accuracy incl. </s>, exact match, corpus BLEU-4 over the model's token ids). Model in eval mode.
    """
    hyps, refs, stopped = _decode(model, x, z, max_len)
    eos = getattr(model.decoder, "eos_id", "</s>")
    return reconstruction_scores(hyps, refs, stopped, eos=eos)


# ---- everything -------------------------------------------------------------------------------------------
def _log_z(model, log_z, log_z_samples: int, seed: int):
    if log_z is not None:
        return (float(log_z[0]), float(log_z[1])) if isinstance(log_z, (tuple, list)) else (float(log_z), 0.0)
    if getattr(model.prior, "kind", None) == "gaussian":
        return 0.0, 0.0
    from .likelihood import estimate_log_partition

    return tuple(float(v) for v in estimate_log_partition(model.prior, log_z_samples, seed=seed))


def _mean_se(values: torch.Tensor):
    n = values.numel()
    if n == 0:
        return None, None
    return float(values.mean()), (float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else None)


def implausible(out: dict, z_crit: float = 3.0) -> Optional[str]:
    """A one-line warning when the diagnostics contradict themselves, else None: MI and KL cannot be negative, so
    an estimate more than ``z_crit`` standard errors below 0 means the chains did not sample one posterior per
    sentence (typically a diverged or very peaked prior) and none of the numbers is trustworthy."""
    bad = [f"{k} {out[k]:.3g} +- {out[k + '_se']:.2g}" for k in ("mi", "kl")
           if out.get(k) is not None and out.get(k + "_se") is not None
           and out[k] < -max(z_crit * out[k + "_se"], 1e-6)]
    if not bad:
        return None
    return (f"{', '.join(bad)} nats is negative, and the true value cannot be: the chains do not sample the "
            "posterior (a diverged or very peaked prior?), so these latent diagnostics are not trustworthy")


def latent_diagnostics(model, batches: Iterable[torch.Tensor], n_chains: int = 8, chain=None, seed: int = 0, n_importance: int = 32,
                       log_z=None, log_z_samples: int = 100_000, n_eval: int = 1,
                       au_threshold: float = 0.01, max_len: Optional[int] = None) -> dict:
    """All latent-usage diagnostics over padded LongTensor batches, from one run of the chains per batch.

    Per batch: C = ``n_chains`` posterior chains per sentence (:func:`~textebm.eval.likelihood.posterior_chains`:
    ``chain``, default the model's posterior chain, then a refinement at temperature 1), z+ = the first chain's
    state.
    Over all sentences:

    * ``mi``, ``mi_se``, ``mi_max``: :func:`mutual_information` of all chains (cross-fitted, ``n_eval``);
    * ``active_units``, ``active_fraction``: :func:`active_units` (``au_threshold``, ANOVA-corrected);
    * ``shuffle_gap`` (+ ``_se``): :func:`shuffled_latent_gap` within each batch (batches of one sentence skip);
    * ``recon_nll`` (+ ``_se``) = mean -log p_beta(x | z+), nats/sentence;
    * ``is_nll`` (+ ``_se`` over sentences, ``is_nll_se_is`` Monte Carlo) = mean -log p_hat(x): importance
      sampling (:func:`~textebm.eval.likelihood.importance_log_likelihood`, ``n_importance`` samples) with the
      proposal fitted to the same chains (:func:`~textebm.eval.likelihood.gaussian_from_samples`, diagonal,
      inflation 1.5); log Z(alpha) by :func:`~textebm.eval.likelihood.estimate_log_partition`
      (``log_z_samples``, ``seed``) unless ``log_z`` (a number or (estimate, se)) is given; 0 for a GaussianPrior;
    * ``kl`` (+ ``_se``) = is_nll - recon_nll per sentence: log p(x | z+) - log p(x), whose expectation over
      z+ ~ p(z | x) is KL(p(z | x) || p_alpha(z)) (biased up by the IS estimate's downward bias of log p(x),
      shifted by any error of log Z);
    * ``recon_token_acc``, ``recon_exact``, ``recon_bleu``: :func:`reconstruction` from z+ (corpus-level);
    * ``n_sentences``, ``n_chains``, ``latent_dim``, ``n_steps``, ``step_size``, ``n_importance``, ``log_z``,
      ``seed``.

    MI and active units need >= 2 sentences and >= n_eval + 2 chains (else None). Seeded: same seed, same
    numbers.
    """
    from .likelihood import gaussian_from_samples, importance_log_likelihood, posterior_chains

    if n_chains < 2:
        raise ValueError(f"n_chains must be >= 2 (the IS proposal and the diagnostics need spread), got {n_chains}")
    chain = chain or model.posterior_chain
    was = model.training
    model.eval()
    all_chains, recon, is_nll, is_se, gaps = [], [], [], [], []
    bleu = {"match": [0] * 4, "total": [0] * 4, "hyp_len": 0, "ref_len": 0}
    correct = total = exact = n_rec = 0
    device = None
    try:
        for x in batches:
            if device is None:
                device = x.device
                gen = torch.Generator(device=device)
                gen.manual_seed(seed)
                perm_gen = torch.Generator()
                perm_gen.manual_seed(seed + 1)
                lz, lz_se = _log_z(model, log_z, log_z_samples, seed)
            chains = posterior_chains(model, x, n_chains, chain, generator=gen)
            all_chains.append(chains.cpu())
            z = chains[:, 0]
            with torch.no_grad():
                rec = -model.decoder.log_prob(x, z).double().cpu()
                recon.append(rec)
                proposal = gaussian_from_samples(chains)
                res = importance_log_likelihood(model, x, lz, n_importance=n_importance, proposal=proposal,
                                                generator=gen)
                is_nll.append(-res.log_px)
                is_se.append(res.se)
                if x.shape[0] >= 2:
                    m, s = _shuffle_terms(model, x, z, perm_gen)
                    gaps.append(m - s)
                hyps, refs, stopped = _decode(model, x, z, max_len)
            eos = getattr(model.decoder, "eos_id", "</s>")
            sc = reconstruction_scores(hyps, refs, stopped, eos=eos)
            correct, total, exact, n_rec = (correct + sc["correct_tokens"], total + sc["n_tokens"],
                                            exact + sc["n_exact"], n_rec + sc["n"])
            st = bleu_stats(hyps, refs)
            bleu = {"match": [a + b for a, b in zip(bleu["match"], st["match"])],
                    "total": [a + b for a, b in zip(bleu["total"], st["total"])],
                    "hyp_len": bleu["hyp_len"] + st["hyp_len"], "ref_len": bleu["ref_len"] + st["ref_len"]}
    finally:
        model.train(was)
    if not all_chains:
        raise ValueError("latent_diagnostics got no batches")
    chains = torch.cat(all_chains)
    N = chains.shape[0]
    recon_t, is_t = torch.cat(recon), torch.cat(is_nll)
    described = chain.describe()
    out = {"n_sentences": N, "n_chains": n_chains, "latent_dim": int(chains.shape[2]),
           "n_steps": described["n_steps"], "step_size": described["step_size"], "n_importance": n_importance,
           "log_z": lz, "log_z_se": lz_se, "seed": seed}
    if N >= 2 and n_chains >= n_eval + 2:
        mi = mutual_information(chains, n_eval=n_eval)
        au = active_units(chains, threshold=au_threshold)
        out.update(mi=mi["mi"], mi_se=mi["mi_se"], mi_max=mi["mi_max"], active_units=au["active_units"],
                   active_fraction=au["active_fraction"], active_units_uncorrected=au["active_units_uncorrected"])
    else:
        out.update(mi=None, mi_se=None, mi_max=None, active_units=None, active_fraction=None,
                   active_units_uncorrected=None)
    gap_mean, gap_se = _mean_se(torch.cat(gaps)) if gaps else (None, None)
    out["shuffle_gap"], out["shuffle_gap_se"] = gap_mean, gap_se
    out["recon_nll"], out["recon_nll_se"] = _mean_se(recon_t)
    out["is_nll"], out["is_nll_se"] = _mean_se(is_t)
    out["is_nll_se_is"] = float(torch.cat(is_se).pow(2).sum().sqrt() / N)
    out["kl"], out["kl_se"] = _mean_se(is_t - recon_t)
    out["recon_token_acc"] = correct / total if total else None
    out["recon_exact"] = exact / n_rec if n_rec else None
    out["recon_bleu"] = bleu_from_stats(bleu)
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None  # JSON has no NaN / infinity
    out["message"] = implausible(out)
    return out


def latent_diagnostics_for_sentences(model, sentences: Sequence[str], max_sentences: Optional[int] = 200,
                                     batch_size: int = 32, **kw) -> dict:
    """:func:`latent_diagnostics` of (the first ``max_sentences`` of) ``sentences``, encoded as
    :func:`~textebm.eval.likelihood.evaluate_nll` encodes them (recipe max_len and length policy, <unk> for
    unknown words), batched by length. ``kw`` go to :func:`latent_diagnostics`; the encoding counts
    (``truncated``, ``dropped``, ``unk_tokens``) and ``n_input_sentences`` are added."""
    from ..data import pad_batch
    from .likelihood import _batches, _encode_for_model

    sentences = list(sentences)
    if max_sentences is not None:
        sentences = sentences[:max_sentences]
    ids, stats = _encode_for_model(model, sentences)
    if not ids:
        raise ValueError("no sentences to evaluate (empty input, or all dropped by the length policy)")
    pad = model.tokenizer.pad_id
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batches = (pad_batch([ids[i] for i in idx], pad).to(device) for idx in _batches(ids, batch_size))
    out = latent_diagnostics(model, batches, **kw)
    out.update(n_input_sentences=len(sentences), **stats)
    return out
