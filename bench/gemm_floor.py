"""The time no exact implementation of posterior Langevin can go below: the matrix products every step needs.

    python bench/gemm_floor.py --preset ptb [--threads 2] [--reps 5] [--compare]

Each posterior Langevin step needs the gradient in z of sum_t log softmax(W h_t + b)[y_t] through the LSTM,
which needs, whatever an implementation caches or fuses:
    p_t = softmax(W h_t + b)          one (N x H) @ (H x V) product (N = batch x (length + 1) target tokens),
    (onehot(y_t) - p_t) @ W           one (N x V) @ (V x H) product,
    h_{t-1} @ W_hh^T                  one (B x H) @ (H x 4H) product per time step (the recurrence), and
    dgates_t @ W_hh                   one (B x 4H) @ (4H x H) product per time step (its backward).
This script times exactly those products for K1 steps on random data of the preset's sizes and prints JSON:
milliseconds per step for each group and the implied seconds per posterior call (the floor).

With --compare it also times, alternating in the same process so that machine load affects all three alike,
the library's posterior-sampling call and the reference's (bench/reference.py) on the preset, and prints
reference / floor, the largest speed-up over the reference that any exact fp32 implementation could reach on
this machine if everything besides these products cost nothing, next to the library's reference / library.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_iteration import PRESETS, make_trainer  # noqa: E402


def floor_products(p, k1):
    """A function running the products of k1 posterior steps, and the per-group timings it records."""
    B, T, H, V = p["batch"], p["length"] + 1, p["hidden"], p["vocab"]
    n = B * T
    hid, w, b = torch.randn(n, H), torch.randn(V, H) * 0.05, torch.zeros(V)
    probs = torch.softmax(torch.randn(n, V), 1)
    hb, w_hh, dg = torch.randn(B, H), torch.randn(4 * H, H) * 0.05, torch.randn(B, 4 * H)
    gates = torch.zeros(B, 4 * H)
    times = {"output_forward": [], "output_backward": [], "lstm": []}

    def run():
        acc = {k: 0.0 for k in times}
        for _ in range(k1):
            t0 = time.perf_counter()
            torch.addmm(b, hid, w.t())
            t1 = time.perf_counter()
            probs @ w
            t2 = time.perf_counter()
            for _ in range(T):
                torch.addmm(gates, hb, w_hh.t())
                dg @ w_hh
            t3 = time.perf_counter()
            acc["output_forward"] += t1 - t0
            acc["output_backward"] += t2 - t1
            acc["lstm"] += t3 - t2
        for k, v in acc.items():
            times[k].append(v)
        return sum(acc.values())

    return run, times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ptb")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--posterior-steps", type=int, default=20)
    ap.add_argument("--compare", action="store_true",
                    help="also time the library's and the reference's posterior-sampling calls, interleaved")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    k1 = args.posterior_steps
    run_floor, times = floor_products(p, k1)
    calls = [("floor", run_floor)]
    if args.compare:
        from reference import reference_sample_posterior

        tr, x = make_trainer(p, "cpu")
        tr.recipe.sampling.posterior_steps = k1
        model = tr.model.eval()
        gen = torch.Generator().manual_seed(0)
        z0 = model.prior.sample_reference(x.shape[0], generator=gen)
        calls += [("textebm", lambda: tr.sample_posterior(x)),
                  ("reference", lambda: reference_sample_posterior(model.prior, model.decoder, x, z0, k1,
                                                                   tr.recipe.sampling.posterior_step_size, gen))]
    secs = {name: [] for name, _ in calls}
    for i in range(args.reps + 1):  # the first round warms up
        for name, fn in calls:
            t = time.perf_counter()
            fn()
            if i:
                secs[name].append(time.perf_counter() - t)
    for v in times.values():
        del v[0]
    B, T, H, V = p["batch"], p["length"] + 1, p["hidden"], p["vocab"]
    flops = k1 * (2 * 2 * B * T * H * V + T * 2 * 2 * B * H * 4 * H)
    med = {k: statistics.median(v) for k, v in secs.items()}
    out = {"preset": args.preset, "threads": torch.get_num_threads(), "posterior_steps": k1, "reps": args.reps,
           "ms_per_step": {k: 1e3 * statistics.median(v) / k1 for k, v in times.items()},
           "gflops_per_s": flops / med["floor"] / 1e9,
           "seconds_per_posterior_call": med}
    if args.compare:
        out["max_exact_speedup_over_reference"] = med["reference"] / med["floor"]
        out["speedup_textebm_over_reference"] = med["reference"] / med["textebm"]
        out["textebm_over_floor"] = med["textebm"] / med["floor"]
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
