"""The latent as a tool, measured on a run of the bundled grammar corpus: reconstruction of 500 test sentences
(greedy; token accuracy, exact matches, BLEU-4), interpolation between 100 random pairs of test sentences (the
fraction of decodes the grammar derives, linear and spherical paths) and, for symbol-vector runs, the clusters'
NMI / ARI against the sentence types and the purity of conditional samples.

    python bench/latent_tools.py RUN [recon] [interp] [symbol]      # writes RUN/tools.json
"""
import json
import sys
import time
from pathlib import Path

import torch

from textebm.data.grammar import default_grammar
from textebm.eval.clusters import interpolation_report, symbol_report
from textebm.latent_tools import reconstruct_all
from textebm.runs import load_model

torch.set_num_threads(1)
run = sys.argv[1]
what = sys.argv[2:] or ["recon", "interp"]
m = load_model(run)
m.eval()
test_file = Path(__file__).resolve().parents[1] / "data" / "grammar" / "test.txt"
test = [line for line in test_file.read_text().split("\n") if line]
g = default_grammar()
out = {}
t = time.time()
if "recon" in what:
    dec, rows, sc = reconstruct_all(m, test[:500], seed=0)
    out["recon"] = sc
    print("recon", json.dumps(sc), f"{time.time()-t:.0f}s", flush=True)
if "interp" in what:
    for sph in (False, True):
        r = interpolation_report(m, test, g, n_pairs=100, steps=8, spherical=sph, seed=0)
        out["interp_sph" if sph else "interp"] = {k: r[k] for k in ("grammatical", "grammatical_interior", "endpoints_exact")}
        print("interp", "spherical" if sph else "linear", out["interp_sph" if sph else "interp"], f"{time.time()-t:.0f}s", flush=True)
        if not sph:
            for ex in r["examples"][:2]:
                print("  ", ex["a"], "||", ex["b"])
                for s in ex["path"]:
                    print("     ", s)
if "symbol" in what:
    r = symbol_report(m, test[:500], g, n_per_symbol=100, seed=0)
    out["symbol"] = {k: r[k] for k in ("nmi", "ari", "purity", "samples_grammatical", "symbol_usage")}
    print("symbol", out["symbol"], f"{time.time()-t:.0f}s", flush=True)
    print(json.dumps(r["clusters"]["contingency"]))
    print(json.dumps({k: (v["majority_type"], v["purity"], v["own_majority_type"], v["own_majority_fraction"]) for k, v in r["conditional"]["per_symbol"].items()}))
(Path(run) / "tools.json").write_text(json.dumps(out, indent=1))
