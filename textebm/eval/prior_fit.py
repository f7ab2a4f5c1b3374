"""Does the prior cover the aggregate posterior? Diagnostics of the prior's fit.

Once z carries the sentence, the codes of real sentences, the aggregate posterior q(z) = E_data[p(z | x)], sit
wherever the decoder and the posterior put them, not at N(0, I). Samples of the prior must land there too, or the
decoder is asked to decode codes it never saw ("prior holes"). Three measurements, from three sources of codes:

    prior      z ~ p_alpha by the model's prior chain (what ``textebm sample`` decodes)
    posterior  z ~ p(z | x) for x drawn at random from the training sentences (the aggregate posterior), by
               the model's posterior chain: the codes training feeds the decoder and the prior learns to cover
    reference  z ~ N(0, sigma0^2 I)

* **decode quality** (:func:`prior_fit`): each source's codes decoded with the recipe's decoding rule and greedily;
  for a corpus with a known grammar, the fraction the grammar derives; for any corpus given an n-gram model of the
  training split, the forward perplexity of the decodes. The prior-fit ratio is prior / posterior (grammatical
  fraction): 1 when prior codes decode as well as codes of real sentences.
* **a two-sample distance** between prior and posterior codes (:func:`mmd_test`): the unbiased squared maximum
  mean discrepancy with a Gaussian kernel (Gretton et al. 2012, "A Kernel Two-Sample Test", eq. 3) and its
  permutation p-value; about 0 (and a uniform p-value) when the two match.
* **f(z+) - f(z-)**: mean f_alpha at posterior codes minus mean f_alpha at prior codes, which tends to 0 when the
  prior has caught up (the gradient of the prior's maximum-likelihood loss is the same difference of f's
  parameter gradients).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import torch

#: the decoding rules every prior-fit report compares: the recipe's own, and arg-max
RULES = ("decode", "greedy")
SOURCES = ("prior", "posterior", "reference")

PRIOR_FIT_PROTOCOL = (
    "Prior fit: {n} codes from each source: prior (the model's prior chain: {prior_chain}), posterior (one "
    "posterior sample of each of {n} training sentences drawn at random by the model's posterior chain, the "
    "codes training feeds the decoder) and reference (N(0, sigma0^2 I)); each decoded by the recipe's rule "
    "({decoding}) and greedily (max_len {max_len}). Quality: {quality}. ratio = prior / posterior. MMD: unbiased "
    "squared maximum mean discrepancy between prior and posterior codes, Gaussian kernel exp(-|a-b|^2 / (2 h^2)) "
    "with h the median distance of the pooled codes, p-value from {permutations} permutations. f gap = mean "
    "f_alpha(posterior codes) - mean f_alpha(prior codes). Seed {seed}."
)


# ---- the two-sample test -------------------------------------------------------------------------------------
def _sq_dists(a: torch.Tensor) -> torch.Tensor:
    sq = a.pow(2).sum(-1)
    return (sq[:, None] + sq[None, :] - 2.0 * a @ a.T).clamp_min(0.0)


def mmd_test(x: torch.Tensor, y: torch.Tensor, bandwidth: Optional[float] = None, permutations: int = 200,
             generator: Optional[torch.Generator] = None) -> dict:
    """Unbiased MMD^2 between samples x (n, d) and y (m, d) with the kernel k(a, b) = exp(-|a - b|^2 / (2 h^2))
    (Gretton et al. 2012, eq. 3):

        MMD^2_u = sum_{i != j} k(x_i, x_j) / (n (n-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
                  - 2 sum_{i, j} k(x_i, y_j) / (n m),

    with h = ``bandwidth`` or the median distance between the pooled points (the median heuristic), and the
    p-value of the permutation test: (1 + #{permuted MMD^2 >= observed}) / (1 + ``permutations``), the pooled
    points split at random into groups of n and m. Returns ``mmd2``, ``p_value``, ``bandwidth``, ``n_x``, ``n_y``.
    """
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the MMD needs at least 2 points in each sample, got {n} and {m}")
    pooled = torch.cat([x, y])
    d2 = _sq_dists(pooled)
    if bandwidth is None:
        off = d2[~torch.eye(n + m, dtype=torch.bool)]
        bandwidth = float(off.sqrt().median()) or 1.0
    K = torch.exp(-d2 / (2.0 * bandwidth ** 2))
    K.fill_diagonal_(0.0)
    total = K.sum()

    def stat(ind: torch.Tensor) -> torch.Tensor:  # ind: (P, n + m), 1 for the rows of the x group
        kx = ind @ K
        xx = (kx * ind).sum(-1)
        xy = (kx * (1 - ind)).sum(-1)
        yy = total - xx - 2 * xy
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)

    first = torch.zeros(1, n + m, dtype=torch.float64)
    first[0, :n] = 1.0
    observed = float(stat(first)[0])
    exceed = 0
    done = 0
    while done < permutations:  # in blocks: (P, n + m) at a time
        p = min(64, permutations - done)
        order = torch.stack([torch.randperm(n + m, generator=generator) for _ in range(p)])
        ind = torch.zeros(p, n + m, dtype=torch.float64)
        ind.scatter_(1, order[:, :n], 1.0)
        exceed += int((stat(ind) >= observed - 1e-15).sum())
        done += p
    return {"mmd2": observed, "p_value": (1 + exceed) / (1 + permutations), "bandwidth": float(bandwidth),
            "n_x": n, "n_y": m}


def gaussian_mmd2(mu_x: Sequence[float], var_x: float, mu_y: Sequence[float], var_y: float,
                  bandwidth: float) -> float:
    """The population MMD^2 between N(mu_x, var_x I) and N(mu_y, var_y I) for the kernel of :func:`mmd_test`:
    E k(a, b) for a ~ N(mu_a, va I), b ~ N(mu_b, vb I) is (h^2 / (h^2 + va + vb))^(d/2) exp(-|mu_a - mu_b|^2 /
    (2 (h^2 + va + vb))), so MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)."""
    mx, my = torch.as_tensor(mu_x, dtype=torch.float64), torch.as_tensor(mu_y, dtype=torch.float64)
    d, h2 = mx.numel(), bandwidth ** 2

    def ek(ma, va, mb, vb):
        s = h2 + va + vb
        return (h2 / s) ** (d / 2) * math.exp(-float((ma - mb).pow(2).sum()) / (2 * s))

    return ek(mx, var_x, mx, var_x) + ek(my, var_y, my, var_y) - 2 * ek(mx, var_x, my, var_y)


# ---- codes from the three sources ----------------------------------------------------------------------------
def aggregate_posterior(model, sentence_ids: List[List[int]], batch_size: int = 64,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(N, d): one posterior sample of each sentence (token ids with <s> ... </s>) by the model's posterior chain
    (:func:`~textebm.eval.likelihood.posterior_samples` without a refinement), batched by length, returned in the
    order of ``sentence_ids``."""
    from ..data import pad_batch
    from .likelihood import _batches, posterior_samples

    out = torch.empty(len(sentence_ids), model.latent_dim)
    was = model.training
    model.eval()
    try:
        for idx in _batches(sentence_ids, batch_size):
            x = pad_batch([sentence_ids[i] for i in idx], model.tokenizer.pad_id).to(model.device)
            out[torch.as_tensor(idx)] = posterior_samples(model, x, refine=None, generator=generator).cpu()
    finally:
        model.train(was)
    return out


def code_sources(model, sentence_ids: List[List[int]], n: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """n codes from each source (see the module docstring), seeded: ``prior``, ``posterior`` (n of
    ``sentence_ids`` drawn without replacement, or all of them if fewer) and ``reference``."""
    gen = torch.Generator(device=model.device)
    gen.manual_seed(seed)
    pick = torch.randperm(len(sentence_ids), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    was = model.training
    model.eval()
    try:
        prior = model.sample_prior(n, generator=gen).detach().cpu()
        reference = model.prior.sample_reference(n, generator=gen).cpu()
    finally:
        model.train(was)
    posterior = aggregate_posterior(model, [sentence_ids[i] for i in pick], generator=gen)
    return {"prior": prior, "posterior": posterior, "reference": reference}


# ---- judging decodes -----------------------------------------------------------------------------------------
def grammar_judge(pcfg) -> Callable[[List[str]], dict]:
    """Sentences -> {"grammatical": the fraction the grammar derives}."""
    def judge(sentences: List[str]) -> dict:
        lps = pcfg.log_probs([s.split() for s in sentences])
        return {"grammatical": sum(lp > -math.inf for lp in lps) / max(1, len(lps))}
    return judge


def ngram_judge(arpa_path) -> Callable[[List[str]], dict]:
    """Sentences -> {"fppl": their perplexity under the n-gram model in ``arpa_path``} (kenlm)."""
    from .ngram import perplexity
    from .ngram.scoring import load_model
    from .text import _quiet_stderr

    with _quiet_stderr():
        lm = load_model(arpa_path)

    def judge(sentences: List[str]) -> dict:
        return {"fppl": perplexity(lm, list(sentences))["ppl"]}
    return judge


def decode(model, z: torch.Tensor, rule: dict, generator: Optional[torch.Generator] = None,
           batch_size: int = 500) -> List[str]:
    """Sentences decoded from codes z with the decoding rule ``rule`` (a decoder's ``generate`` arguments)."""
    out: List[str] = []
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, z.shape[0], batch_size):
                ids = model.decoder.generate(z[i:i + batch_size].to(model.device), generator=generator, **rule)
                out += [" ".join(model.tokenizer.decode(t).split()) for t in ids]
    finally:
        model.train(was)
    return out


def prior_fit(model, sentence_ids: List[List[int]], n: int = 256, judges: Sequence[Callable] = (),
              seed: int = 0, permutations: int = 200, decoding: Optional[dict] = None) -> dict:
    """The prior-fit diagnostics of a text model (module docstring), on ``n`` codes per source.

    ``sentence_ids``: training sentences as token ids (the aggregate posterior is drawn from them); ``judges``:
    callables sentences -> {metric: value} (:func:`grammar_judge`, :func:`ngram_judge`); ``decoding``: the
    recipe's rule (default :func:`~textebm.model.recipe_decoding` of the model's recipe).

    Returns ``{source}_{rule}_{metric}`` for every source, rule and judged metric, ``ratio_{rule}_{metric}`` =
    prior / posterior, ``mmd2``, ``mmd_p``, ``mmd_bandwidth``, ``f_gap`` (None for a prior without a tilt), the
    mean distance of prior and reference codes to their nearest posterior code (``nn_prior``, ``nn_reference``)
    and, for scale, of posterior codes to their nearest other posterior code (``nn_posterior``), ``n`` and
    ``protocol``.
    """
    from ..model import describe_decoding, recipe_decoding

    if n < 2:
        raise ValueError(f"the prior-fit diagnostics need at least 2 codes per source, got {n}")
    rule = dict(decoding) if decoding is not None else recipe_decoding(model.recipe)
    rules = {"decode": rule, "greedy": {**rule, "greedy": True}}
    codes = code_sources(model, sentence_ids, n, seed)
    out: dict = {"n": int(codes["posterior"].shape[0])}
    gen = torch.Generator(device=model.device)
    gen.manual_seed(seed + 1)
    names = set()
    for source in SOURCES:
        for rname, r in rules.items():
            sentences = decode(model, codes[source], r, generator=gen)
            for judge in judges:
                for metric, value in judge(sentences).items():
                    out[f"{source}_{rname}_{metric}"] = value
                    names.add(metric)
    for rname in rules:
        for metric in sorted(names):
            a, b = out.get(f"prior_{rname}_{metric}"), out.get(f"posterior_{rname}_{metric}")
            out[f"ratio_{rname}_{metric}"] = a / b if a is not None and b else None
    mmd = mmd_test(codes["prior"], codes["posterior"], permutations=permutations,
                   generator=torch.Generator().manual_seed(seed + 2))
    out.update(mmd2=mmd["mmd2"], mmd_p=mmd["p_value"], mmd_bandwidth=mmd["bandwidth"])
    post = codes["posterior"].double()
    d_post = torch.cdist(post, post)
    d_post.fill_diagonal_(float("inf"))
    out["nn_posterior"] = float(d_post.min(1).values.mean())
    for source in ("prior", "reference"):
        out[f"nn_{source}"] = float(torch.cdist(codes[source].double(), post).min(1).values.mean())
    if getattr(model.prior, "fixed", False):
        out["f_gap"] = None
    else:
        with torch.no_grad():
            f = lambda z: float(model.prior.f(z.to(model.device)).mean())  # noqa: E731
            out["f_gap"] = f(codes["posterior"]) - f(codes["prior"])
    quality = " and ".join(sorted({"grammatical": "the fraction of decodes the grammar derives",
                                   "fppl": "forward perplexity of the decodes under a 5-gram model of the "
                                           "training split"}.get(m, m) for m in names)) or "none judged"
    out["protocol"] = PRIOR_FIT_PROTOCOL.format(
        n=out["n"], prior_chain=_chain(model), decoding=describe_decoding(rule), max_len=rule["max_len"],
        quality=quality, permutations=permutations, seed=seed)
    return out


def _chain(model) -> str:
    from .text import chain_words

    return chain_words(model.prior_chain.describe())
