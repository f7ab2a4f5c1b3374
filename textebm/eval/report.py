"""Reports of the evaluation tools: JSON (atomic, NaN-free) and Markdown tables.

Pictures (line plots of chains and training runs) are drawn with matplotlib in :mod:`textebm.eval.plots`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Sequence


# ---- JSON -----------------------------------------------------------------------------------------------
def jsonable(obj):
    """A copy of ``obj`` that :func:`json.dumps` accepts with ``allow_nan=False``: non-finite floats -> None,
    paths -> str, tuples -> lists, numpy / torch scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_json(path, report: dict, root=None) -> Path:
    """Write ``report`` as indented JSON through :func:`textebm.files.write_file` (an exclusive temporary file in
    the same directory, fsync, rename; never through a link)."""
    from ..files import write_file

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"cannot write the report: directory {path.parent} does not exist")
    return write_file(path, json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n", root=root)


# ---- Markdown -------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.{digits}e}"
        return f"{v:.{digits}f}"
    return str(v)


def metric_rows(report: dict) -> List[tuple]:
    """(metric, value, notes) rows of an evaluation report, in a fixed order."""
    rows = []
    for key, trained_on in (("fppl", "train, {} samples"), ("rppl", "{} samples")):  # what the n-gram model saw
        p = report.get(key)
        if p is not None:
            rows.append((key.upper(), _fmt(p.get("value"), 2),
                         _notes(p, f"{p.get('order')}-gram on {trained_on.format(p.get('n_samples'))}, "
                                   f"oov {p.get('oov', 'n/a')}, {p.get('estimator', 'n/a')}")))
    n = report.get("nll")
    if n is not None:
        extra = ""
        if n.get("log_z") is not None:
            extra = (f"{n.get('n_sentences')} sentences, K={n['settings']['n_importance']}, "
                     f"log Z={n['log_z']:.3f}±{n['log_z_se']:.3f}, ESS {n.get('ess_mean', 0):.1f}")
        rows.append(("NLL (nats/sentence)", _fmt(n.get("nll_per_sentence"), 3), _notes(n, extra)))
        rows.append(("PPL (per token, IS)", _fmt(n.get("ppl_per_token"), 3), "tokens include </s>"))
    c = report.get("recon")
    if c is not None:
        rows.append(("recon NLL (nats/sentence)", _fmt(c.get("recon_nll_per_sentence"), 3),
                     _notes(c, f"{c.get('n_sentences', 0)} sentences, one posterior sample each")))
        rows.append(("recon NLL (nats/token)", _fmt(c.get("recon_nll_per_token"), 4), "tokens include </s>"))
    lat = report.get("latent")
    if lat is not None:
        base = f"{lat.get('n_sentences')} sentences, {lat.get('n_chains')} chains each"
        rows.append(("mutual information I(x; z) (nats)", _fmt(lat.get("mi"), 3),
                     _notes(lat, f"± {_fmt(lat.get('mi_se'), 3)}; {base}")))
        rows.append(("active units", _fmt(lat.get("active_units")), f"of {lat.get('latent_dim')}"))
        rows.append(("shuffled-latent gap (nats/sentence)", _fmt(lat.get("shuffle_gap"), 3),
                     "log p(x|z+(x)) - log p(x|z+(x'))"))
        rows.append(("KL = IS-NLL - recon NLL (nats/sentence)", _fmt(lat.get("kl"), 3), f"± {_fmt(lat.get('kl_se'), 3)}"))
        rows.append(("reconstruction token accuracy", _fmt(lat.get("recon_token_acc"), 3),
                     f"greedy from z+; BLEU-4 {_fmt(lat.get('recon_bleu'), 3)}, exact {_fmt(lat.get('recon_exact'), 3)}"))
    fit = report.get("prior_fit")
    if fit is not None:
        n = fit.get("n")
        for metric, label, digits in (("grammatical", "grammatical", 3), ("fppl", "FPPL", 2)):
            for rule in ("decode", "greedy"):
                how = "greedy" if rule == "greedy" else "recipe's decoding"
                if fit.get(f"prior_{rule}_{metric}") is None:
                    continue
                rows.append((f"prior fit: {label} of decodes, prior / posterior / N(0,I) codes ({how})",
                             " / ".join(_fmt(fit.get(f"{src}_{rule}_{metric}"), digits)
                                        for src in ("prior", "posterior", "reference")),
                             f"ratio prior/posterior {_fmt(fit.get(f'ratio_{rule}_{metric}'), 3)}; {n} codes each"))
        rows.append(("prior fit: MMD^2(prior codes, posterior codes)", _fmt(fit.get("mmd2"), 4),
                     f"permutation p {_fmt(fit.get('mmd_p'), 3)}; Gaussian kernel, bandwidth "
                     f"{_fmt(fit.get('mmd_bandwidth'), 3)}"))
        rows.append(("prior fit: f(z+) - f(z-) (nats)", _fmt(fit.get("f_gap"), 3),
                     f"mean distance to the nearest posterior code: prior {_fmt(fit.get('nn_prior'), 2)}, "
                     f"N(0,I) {_fmt(fit.get('nn_reference'), 2)}, posterior {_fmt(fit.get('nn_posterior'), 2)}"))
    tools = report.get("latent_tools")
    if tools is not None:
        rc, ip = tools.get("reconstruction") or {}, tools.get("interpolation") or {}
        rows.append(("reconstruction from codes: token accuracy", _fmt(rc.get("token_acc"), 3),
                     f"greedy from each sentence's code; BLEU-4 {_fmt(rc.get('bleu'), 3)}, exact "
                     f"{_fmt(rc.get('exact'), 3)}, {rc.get('n')} sentences"))
        rows.append(("interpolation: decodes the grammar derives", _fmt(ip.get("grammatical"), 3),
                     f"{ip.get('n_pairs')} random pairs, {ip.get('steps')} points each (endpoints included); "
                     f"between the endpoints {_fmt(ip.get('grammatical_interior'), 3)}"))
        sy = tools.get("symbols")
        if sy is not None:
            rows.append(("symbols: NMI / ARI of clusters against sentence types",
                         f"{_fmt(sy.get('nmi'), 3)} / {_fmt(sy.get('ari'), 3)}",
                         f"symbols used: {sum(1 for v in sy.get('symbol_usage', []) if v)} of "
                         f"{len(sy.get('symbol_usage', []))}"))
            rows.append(("symbols: purity of conditional samples", _fmt(sy.get("purity"), 3),
                         f"fraction of a symbol's samples of its majority type; grammatical "
                         f"{_fmt(sy.get('samples_grammatical'), 3)}"))
    tr = report.get("truth")
    if tr is not None:
        st = tr.get("samples")
        if st is not None:
            rows.append(("samples the grammar derives", _fmt(st.get("frac_derivable"), 3),
                         f"{st.get('n_samples')} samples; copied from train {_fmt(st.get('frac_in_train'), 3)}, "
                         f"novel and derivable {_fmt(st.get('frac_novel_derivable'), 3)}"))
            rows.append(("mean true log p of derivable samples (nats)", _fmt(st.get("mean_log_prob_derivable"), 3),
                         ""))
        kl = tr.get("kl")
        if kl is not None:
            rows.append(("KL(data || model) (nats/sentence)", _fmt(kl.get("kl_per_sentence"), 3),
                         _notes(kl, f"model NLL - exact entropy {_fmt(kl.get('entropy_per_sentence'), 3)}; "
                                    f"± {_fmt(kl.get('kl_se'), 3)}")))
    d = report.get("diversity")
    if d is not None:
        for k in ("distinct_1", "distinct_2", "distinct_3"):
            rows.append((k.replace("_", "-"), _fmt(d.get(k), 4), ""))
        rows.append(("self-BLEU-4", _fmt(d.get("self_bleu"), 4),
                     _notes(d, f"{d.get('self_bleu_n_used')} samples (subsample)")))
    return rows


def _notes(section: dict, text: str) -> str:
    msg = section.get("message")
    fb = section.get("fallback_reason")
    parts = [text] if text else []
    if fb:
        parts.append(f"fallback: {fb}")
    if msg:
        parts.append(f"WARNING: {msg}")
    return "; ".join(parts).replace("|", "/")


def markdown_table(report: dict) -> str:
    """The report's numbers as a Markdown table (metric | value | notes)."""
    lines = ["| metric | value | notes |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in metric_rows(report)]
    return "\n".join(lines)


def markdown_chain(rows: Sequence[dict]) -> str:
    lines = ["| step | log-density | sentence |", "|---:|---:|---|"]
    for r in rows:
        sent = (r["sentence"] or "<empty>").replace("|", "/")
        lines.append(f"| {r['step']} | {r['log_density']:.3f} | {sent} |")
    return "\n".join(lines)
