"""Time of one posterior Langevin step through a pretrained causal LM decoder (textebm.decoders.TransformerDecoder):
log p_beta(x | z) and its gradient in z, the work a step of the posterior chain does, with the LM's weights frozen
(as in a chain: textebm.sampling.frozen). Prints JSON, one line per size.

    python bench/pretrained_posterior.py [--sizes tiny small gpt2-small] [--batch 16] [--length 30] [--threads 1]

tiny = the test suite's model (2 layers, width 32, vocabulary 401); small = 6 layers, width 384, vocabulary 16000;
gpt2-small = GPT-2's 124M shape (12 layers,
width 768, vocabulary 50257), randomly initialized: the time depends on the shape, not the weights. Nothing is
downloaded. The step's cost is about one forward and one input-gradient backward pass (~4 N B T multiply-adds
for N weights in the blocks plus the output layer's 4 V E B T), so the time scales with layers x width^2 and with
the number of tokens B x T; the prefix adds n_prefix positions.
"""
import argparse
import json
import tempfile
import time

import torch

SIZES = {"tiny": dict(vocab=401, n_embd=32, n_layer=2, n_head=2),
         "small": dict(vocab=16000, n_embd=384, n_layer=6, n_head=6),
         "gpt2-small": dict(vocab=50257, n_embd=768, n_layer=12, n_head=12)}


def build(size: str, directory: str, latent_dim: int, n_prefix: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    from textebm.decoders import TransformerDecoder

    s = SIZES[size]
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=s["vocab"], n_embd=s["n_embd"], n_layer=s["n_layer"], n_head=s["n_head"],
                               n_positions=128)).save_pretrained(directory)
    return TransformerDecoder(s["vocab"], latent_dim, pretrained=directory, n_prefix=n_prefix,
                              freeze_lm=True).eval(), s


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small", "gpt2-small"], choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=30, help="tokens per sentence, </s> included")
    ap.add_argument("--latent-dim", type=int, default=32)
    ap.add_argument("--n-prefix", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="timed steps after 2 warm-up steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from textebm.sampling import frozen

    for size in args.sizes:
        with tempfile.TemporaryDirectory() as d:
            dec, s = build(size, d, args.latent_dim, args.n_prefix)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(3, s["vocab"], (args.batch, args.length + 1), generator=g)
        x[:, 0] = dec.bos_id
        x[:, -1] = dec.eos_id
        ctx = dec.prepare(x)
        z = torch.randn(args.batch, args.latent_dim, generator=g)
        times = []
        with frozen(dec):
            for i in range(args.steps + 2):
                t = time.perf_counter()
                zz = z.detach().requires_grad_(True)
                lp = dec.log_prob_prepared(ctx, zz).sum()
                grad, = torch.autograd.grad(lp, zz)
                z = z + 0.01 * grad
                if i >= 2:
                    times.append(time.perf_counter() - t)
        times.sort()
        n_weights = sum(p.numel() for p in dec.lm.parameters())
        print(json.dumps({"size": size, "lm_weights": n_weights, "batch": args.batch, "length": args.length,
                          "n_prefix": args.n_prefix, "threads": args.threads,
                          "seconds_per_step_median": times[len(times) // 2], "seconds_per_step_min": times[0],
                          "torch": torch.__version__}))


if __name__ == "__main__":
    main()
