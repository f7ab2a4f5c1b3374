"""The time no exact implementation of posterior Langevin can go below: the output layer's two matrix products.

    python bench/gemm_floor.py --preset ptb [--threads 2] [--reps 20]

Each posterior Langevin step needs the gradient in z of sum_t log softmax(W h_t + b)[y_t], which needs
    p_t = softmax(W h_t + b)          one (N x H) @ (H x V) product (N = batch x length real tokens), and
    (onehot(y_t) - p_t) @ W           one (N x V) @ (V x H) product,
whatever else an implementation caches or fuses. This script times exactly those two products, with torch's
fastest layout for each, on random data of the preset's sizes, and prints JSON: milliseconds per step, the implied
seconds for K1 steps, and the largest speed-up over a given reference time that any exact implementation could
reach if everything else (LSTM, softmax passes, Python) cost nothing.
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
from train_iteration import PRESETS  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ptb")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--posterior-steps", type=int, default=20)
    ap.add_argument("--reference-seconds", type=float, default=None,
                    help="the reference's measured seconds per posterior-sampling call (from train_iteration.py)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    n, h, v = p["batch"] * p["length"], p["hidden"], p["vocab"]
    hid, w, b = torch.randn(n, h), torch.randn(v, h) * 0.05, torch.zeros(v)
    g = torch.softmax(torch.randn(n, v), 1)
    fwd, bwd = [], []
    for i in range(args.reps + 2):
        t = time.perf_counter()
        torch.addmm(b, hid, w.t())
        t1 = time.perf_counter()
        g @ w
        t2 = time.perf_counter()
        if i >= 2:  # warm-up
            fwd.append(t1 - t)
            bwd.append(t2 - t1)
    per_step = statistics.median(fwd) + statistics.median(bwd)
    flops = 2 * 2 * n * h * v
    out = {"preset": args.preset, "threads": torch.get_num_threads(), "rows": n, "hidden": h, "vocab": v,
           "forward_ms": 1e3 * statistics.median(fwd), "backward_ms": 1e3 * statistics.median(bwd),
           "gflops_per_s": flops / per_step / 1e9,
           "floor_seconds_per_posterior_call": per_step * args.posterior_steps}
    if args.reference_seconds:
        out["max_exact_speedup_over_reference"] = args.reference_seconds / out["floor_seconds_per_posterior_call"]
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
