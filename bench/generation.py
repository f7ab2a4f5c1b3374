"""Sentence-generation throughput: prior Langevin (K0 steps) + batched decoding, sentences per second.

    python bench/generation.py --preset ptb [--n 1024] [--batch 256] [--device cpu]

Compares batched generation (the library's) with decoding one sentence at a time (the straightforward way).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_iteration import PRESETS, make_trainer  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ptb")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--one-by-one", type=int, default=32, help="sentences decoded singly for the baseline")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tr, _ = make_trainer(PRESETS[args.preset], args.device)
    model = tr.model.eval()
    gen = torch.Generator(device=tr.device).manual_seed(0)
    model.generate(8, generator=gen, max_len=40)  # warm up
    t = time.perf_counter()
    done = 0
    while done < args.n:
        m = min(args.batch, args.n - done)
        model.generate(m, generator=gen, max_len=40)
        done += m
    batched = args.n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(args.one_by_one):
        model.generate(1, generator=gen, max_len=40)
    single = args.one_by_one / (time.perf_counter() - t)
    out = {"preset": args.preset, "device": str(tr.device), "threads": torch.get_num_threads(),
           "sentences_per_second_batched": batched, "batch": args.batch,
           "sentences_per_second_one_at_a_time": single, "speedup": batched / single}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
