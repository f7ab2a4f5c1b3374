"""Benchmark one training iteration: the library's Trainer.train_step against bench/reference.py.

    python bench/train_iteration.py --preset ptb [--iters 5] [--device cpu|cuda] [--threads N]
                                    [--capture none|cuda_graph] [--amp none|bf16] [--launches] [--json OUT]

Prints JSON: seconds per iteration, per prior-sampling call and per posterior-sampling call, peak memory, and the
ratio reference / library, measured in the same process, alternating the two so load affects both alike. On a GPU,
``--capture cuda_graph`` runs the library's chains as captured CUDA graphs (the default there) and ``none`` eagerly;
``--amp bf16`` autocasts the decoder; ``--launches`` counts the kernel launches (CUDA runtime calls) of one posterior
chain per Langevin step, for the library and the reference (a captured chain launches one graph).
Presets follow the paper's text settings (latent 32, K0 = 60, s0 = 0.4, K1 = 20, s1 = 0.1):
    ptb    batch 32, vocabulary 10k, embedding 128, hidden 512, length 24
    snli   batch 32, vocabulary 10k, embedding 256, hidden 256, length 15
    yahoo  batch 32, vocabulary 20k, embedding 512, hidden 1024, length 40 (the real cap is 200; shortened here)
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import reference_sample_posterior, reference_sample_prior, reference_train_step  # noqa: E402

PRESETS = {
    "ptb": dict(batch=32, vocab=10_000, embed=128, hidden=512, length=24),
    "snli": dict(batch=32, vocab=10_000, embed=256, hidden=256, length=15),
    "yahoo": dict(batch=32, vocab=20_000, embed=512, hidden=1024, length=40),
    "quickstart": dict(batch=64, vocab=277, embed=64, hidden=192, length=10, latent=16),
}


def make_trainer(p, device, seed=0, impl="auto", overrides=()):
    from textebm.config import Recipe, apply_overrides
    from textebm.train import Trainer

    d = Path(tempfile.mkdtemp(prefix="textebm-bench-"))
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(p["vocab"] - 4)]
    for split, n in (("train", max(p["vocab"], 2000)), ("valid", 64), ("test", 64)):
        lines = [" ".join(rng.choice(words) for _ in range(p["length"])) for _ in range(n)]
        if split == "train":  # every word at least once, so the vocabulary has the preset's size
            lines += [" ".join(words[i:i + p["length"]]) for i in range(0, len(words), p["length"])]
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n")
    r = apply_overrides(Recipe(name="bench"), [
        f"data.corpus={d}", f"data.max_len={p['length']}", f"model.latent_dim={p.get('latent', 32)}",
        f"model.embed_dim={p['embed']}", f"model.hidden_dim={p['hidden']}", f"train.batch_size={p['batch']}",
        "train.steps=1000000", "train.grad_clip=null", f"model.decoder_args={{impl: {impl}}}", *overrides])
    tr = Trainer(r, d / "run", device=device, progress=False)
    x = torch.randint(4, len(tr.data.tokenizer), (p["batch"], p["length"] + 2))
    x[:, 0], x[:, -1] = tr.data.tokenizer.bos_id, tr.data.tokenizer.eos_id
    return tr, x.to(tr.device)


def count_launches(fn, n_steps: int) -> float:
    """CUDA kernel and graph launches (runtime API calls seen by the profiler) of ``fn()``, per Langevin step."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch")
    n = sum(e.count for e in prof.key_averages() if e.key in names)
    return n / n_steps


def timed(fn, sync):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ptb")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--impl", choices=("auto", "fused", "unrolled"), default="auto",
                    help="LSTM implementation of the library's path (auto: unrolled on CPU, fused on GPU)")
    ap.add_argument("--capture", choices=("auto", "none", "cuda_graph"), default="auto",
                    help="the library's chains as CUDA graphs (auto: on CUDA)")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast the decoder (library path)")
    ap.add_argument("--launches", action="store_true", help="count kernel launches per Langevin step (CUDA)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    tr, x = make_trainer(p, args.device, impl=args.impl,
                         overrides=[f"sampling.capture={args.capture}", f"train.amp={args.amp}"])
    cuda = tr.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    s = tr.recipe.sampling
    model, prior = tr.model, tr.model.prior
    gen = torch.Generator(device=tr.device).manual_seed(0)

    res = {k: [] for k in ("fast_iter", "ref_iter", "fast_post", "ref_post", "fast_prior", "ref_prior")}
    for i in range(args.iters + 1):  # the first round warms up and is not counted
        t_fast, st = timed(lambda: tr.train_step(x), sync)
        t_ref, _ = timed(lambda: reference_train_step(model, tr.opt_dec, tr.opt_prior, x, s.prior_steps,
                                                       s.prior_step_size, s.posterior_steps,
                                                       s.posterior_step_size, gen), sync)
        model.eval()
        z0 = prior.sample_reference(x.shape[0], generator=gen)
        t_fp, _ = timed(lambda: tr.sample_posterior(x), sync)
        t_rp, _ = timed(lambda: reference_sample_posterior(prior, model.decoder, x, z0, s.posterior_steps,
                                                           s.posterior_step_size, gen), sync)
        t_fz, _ = timed(lambda: tr.sample_prior(x.shape[0]), sync)
        t_rz, _ = timed(lambda: reference_sample_prior(prior, z0, s.prior_steps, s.prior_step_size, gen), sync)
        if i == 0:
            continue
        for k, v in zip(res, (t_fast, t_ref, t_fp, t_rp, t_fz, t_rz)):
            res[k].append(v)
    med = {k: statistics.median(v) for k, v in res.items()}
    launches = {}
    if args.launches and cuda:
        z0 = prior.sample_reference(x.shape[0], generator=gen)
        launches = {"textebm": count_launches(lambda: tr.sample_posterior(x), s.posterior_steps),
                    "reference": count_launches(lambda: reference_sample_posterior(
                        prior, model.decoder, x, z0, s.posterior_steps, s.posterior_step_size, gen),
                        s.posterior_steps)}
    out = {
        "preset": args.preset, **p, "impl": args.impl, "capture": args.capture, "amp": args.amp,
        "graphs": None if tr.graphs is None else {"captures": tr.graphs.captures, "replays": tr.graphs.replays},
        "launches_per_posterior_step": launches or None,
        "device": str(tr.device), "threads": torch.get_num_threads(),
        "iters": args.iters, "torch": torch.__version__,
        "seconds_per_iteration": {"textebm": med["fast_iter"], "reference": med["ref_iter"]},
        "seconds_per_posterior_sampling": {"textebm": med["fast_post"], "reference": med["ref_post"]},
        "seconds_per_prior_sampling": {"textebm": med["fast_prior"], "reference": med["ref_prior"]},
        "speedup_iteration": med["ref_iter"] / med["fast_iter"],
        "speedup_posterior": med["ref_post"] / med["fast_post"],
        "speedup_prior": med["ref_prior"] / med["fast_prior"],
        "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2**20 if cuda
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
