"""Image runs: reconstructions, anomaly scores, FID of samples, PNG grids, and the ``textebm eval`` report.

All images are (N, C, H, W) tensors in [-1, 1]; the model is a :class:`textebm.model.LatentEBMModel` whose
decoder has ``mean(z)`` (the conv generator).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size]


def posterior_scores(model, images: torch.Tensor, chain=None, batch_size: int = 100,
                     generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """Per-image scores at a posterior sample z+ ~ p(z | x) by ``chain`` (default: the model's posterior chain),
    one chain per image:

        joint          = -[f(z+) - |z+|^2 / (2 sigma0^2) + log p_beta(x | z+)]   (Pang et al. 2020, Sec. 5.4)
        prior          = -[f(z+) - |z+|^2 / (2 sigma0^2)]
        reconstruction = -log p_beta(x | z+)
        squared_error  = |x - g(z+)|^2 summed over pixel values
    Higher = more anomalous. log Z(alpha) is a constant and does not change any ranking, so it is left out.
    """
    device = model.device
    out = {"joint": [], "prior": [], "reconstruction": [], "squared_error": []}
    for x in _batches(images, batch_size):
        x = x.to(device)
        z = model.sample_posterior(x, chain, generator=generator)
        with torch.no_grad():
            mean = model.decoder.mean(z)
            lp_prior = model.prior.log_prob_unnormalized(z)
            lp_x = model.decoder.log_prob_given_mean(x, mean)
            out["squared_error"].append((x - mean).pow(2).flatten(1).sum(1).cpu())
        out["prior"].append(-lp_prior.cpu())
        out["reconstruction"].append(-lp_x.cpu())
        out["joint"].append(-(lp_prior + lp_x).cpu())
    return {k: torch.cat(v).double() for k, v in out.items()}


def reconstruction_mse(model, images: torch.Tensor, chain=None, batch_size: int = 100,
                       generator: Optional[torch.Generator] = None) -> float:
    """Mean over images and pixel values of (x - g(z+))^2, z+ from the posterior chain (the paper's MSE)."""
    sq = posterior_scores(model, images, chain, batch_size, generator)["squared_error"]
    return float(sq.sum()) / images.numel()


def sample_images(model, n: int, chain=None, batch_size: int = 100,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """n images g(z-), z- by the prior chain ``chain`` (default: the model's)."""
    out = []
    for i in range(0, n, batch_size):
        z = model.sample_prior(min(batch_size, n - i), chain, generator=generator)
        with torch.no_grad():
            out.append(model.decoder.mean(z).cpu())
    return torch.cat(out)


def write_image_grids(model, images: torch.Tensor, out_dir, n: int = 64, prior_chain=None, posterior_chain=None,
                      chain_steps: int = 600, chains: int = 8, columns: int = 10,
                      generator: Optional[torch.Generator] = None) -> Dict[str, str]:
    """PNG grids a person can look at: prior samples, data beside reconstructions, and long prior chains.

    samples.png          n images g(z-);
    reconstructions.png  rows alternate n/2 data images and their reconstructions g(z+);
    chain.png            ``chains`` rows, each one prior chain (``prior_chain`` with ``chain_steps`` steps of its
                         first step size) decoded at ``columns`` evenly spaced steps (left to right), showing
                         where a long chain drifts.
    Chains default to the model's.
    """
    from .image_metrics import save_image_grid

    out_dir = Path(out_dir)
    paths = {}
    prior_chain = prior_chain or model.prior_chain
    samples = sample_images(model, n, prior_chain, generator=generator)
    save_image_grid(samples, out_dir / "samples.png")
    paths["samples"] = str(out_dir / "samples.png")

    half = max(1, min(n // 2, images.shape[0]))
    x = images[:half].to(model.device)
    x_hat = model.reconstruct(x, posterior_chain, generator=generator).cpu()
    per_row = min(half, 8)
    rows = []
    for i in range(0, half, per_row):
        rows += [x[i:i + per_row].cpu(), x_hat[i:i + per_row]]
    pad = [torch.cat([r, torch.ones(per_row - r.shape[0], *r.shape[1:])]) if r.shape[0] < per_row else r
           for r in rows]
    save_image_grid(torch.cat(pad), out_dir / "reconstructions.png", nrow=per_row)
    paths["reconstructions"] = str(out_dir / "reconstructions.png")

    from ..sampling.schedules import first_value

    long_chain = prior_chain.replace(n_steps=chain_steps, step_size=first_value(prior_chain.step_size))
    chain_grid(model, out_dir / "chain.png", long_chain, max(1, chain_steps // max(1, columns - 1)), chains,
               generator)
    paths["chain"] = str(out_dir / "chain.png")
    return paths


def chain_grid(model, path, chain, every: int = 60, chains: int = 8,
               generator: Optional[torch.Generator] = None) -> dict:
    """Run ``chains`` prior chains ``chain`` (a ChainConfig) from p0 and write one row per chain, decoded every
    ``every`` steps (the start included), as a PNG grid. Returns the steps shown and the mean log-density there."""
    from .image_metrics import save_image_grid

    res = model.sample_prior(chains, chain.replace(start="reference", name="long prior chain"),
                             generator=generator, snapshot_every=every, return_samples=True)
    with torch.no_grad():
        frames = torch.stack([model.decoder.mean(z).cpu() for _, z in res.snapshots], 1)  # (chains, cols, C, H, W)
        logp = [float(model.prior.log_prob_unnormalized(z).mean()) for _, z in res.snapshots]
    save_image_grid(frames.reshape(-1, *frames.shape[2:]), path, nrow=len(res.snapshots))
    return {"steps": [k for k, _ in res.snapshots], "mean_log_density": logp, "path": str(path)}


def evaluate_image_run(model, split: str = "test", max_images: int = 0, inception: Optional[str] = None,
                       fid_samples: int = 0, seed: int = 0, posterior_chain=None, batch_size: int = 100,
                       grids_dir=None) -> dict:
    """``textebm eval`` for an image run: reconstruction MSE, FID (when Inception weights are given, or any
    extractor), anomaly AUPRC / AUROC (for a held-out-class recipe), and PNG grids."""
    from ..data.images import held_out_class_split, load_images
    from .anomaly import anomaly_report

    r = model.recipe
    if r is None:
        raise ValueError("the model carries no recipe, so its image set is unknown")
    d = r.data
    posterior_chain = posterior_chain or model.posterior_chain
    chain = posterior_chain.describe()
    images = load_images(d.corpus, d.image_size, d.channels, data_dir=d.data_dir, limit=d.limit, seed=r.seed,
                         **d.options)
    if d.held_out_class is not None:
        images = held_out_class_split(images, d.held_out_class)
    x = images.split(split)
    labels = getattr(images, f"{split}_labels")
    if max_images:
        x = x[:max_images]
        labels = labels[:max_images] if labels is not None else None
    gen = torch.Generator(device=model.device)
    gen.manual_seed(seed)
    report = {"kind": "image", "data": {"images": images.name, "split": split, "n": int(x.shape[0]),
                                        "shape": list(x.shape[1:])},
              "settings": {"posterior_steps": chain["n_steps"], "posterior_step_size": chain["step_size"],
                           "posterior_noise_scale": chain["noise_scale"], "seed": seed}}
    # one posterior pass serves MSE and anomaly
    scores = posterior_scores(model, x, posterior_chain, batch_size, gen)
    report["mse"] = float(scores.pop("squared_error").sum()) / x.numel()
    if d.held_out_class is not None:
        report["anomaly"] = {"held_out_class": d.held_out_class,
                             **anomaly_report({k: v.numpy() for k, v in scores.items()}, labels.numpy())}
    if inception:
        from .image_metrics import InceptionFeatures, fid

        n = fid_samples or x.shape[0]
        fake = sample_images(model, n, batch_size=batch_size, generator=gen)
        report["fid"] = {"value": fid(x[:n], fake, InceptionFeatures(inception), batch_size=batch_size),
                         "n_real": int(min(n, x.shape[0])), "n_fake": int(n), "features": "inception-2015-12-05"}
    else:
        report["fid"] = {"skipped": "no Inception weights given (--inception PATH to inception-2015-12-05.pt)"}
    if grids_dir is not None:
        report["grids"] = write_image_grids(model, x, grids_dir, posterior_chain=posterior_chain, generator=gen)
    return report


def markdown_image_report(report: dict) -> str:
    """A small Markdown table of an image report."""
    lines = ["| metric | value |", "|---|---|", f"| reconstruction MSE ({report['data']['split']}, "
             f"{report['data']['n']} images) | {report['mse']:.5f} |"]
    fid = report.get("fid", {})
    lines.append(f"| FID | {fid['value']:.2f} |" if "value" in fid else f"| FID | skipped: {fid.get('skipped')} |")
    if "anomaly" in report:
        a = report["anomaly"]
        for name in ("joint", "prior", "reconstruction"):
            if name in a:
                lines.append(f"| anomaly AUPRC / AUROC ({name} score, held-out class {a['held_out_class']}) | "
                             f"{a[name]['auprc']:.3f} / {a[name]['auroc']:.3f} |")
        lines.append(f"| anomaly positive rate | {a['positive_rate']:.3f} |")
    return "\n".join(lines)
