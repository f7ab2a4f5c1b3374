"""The latent as a tool, over many inputs: codes of sentences, their reconstructions with scores, paths between
codes, variations, clusters; batched, seeded, with a progress bar on long inputs, and codes written to files.

Each function is a loop over batches around one method of :class:`~textebm.model.LatentEBMModel` (``encode``,
``reconstruct``, ``interpolate``, ``sample_near``, ``cluster``), which work on one batch of sentences, token ids
or images; ``textebm encode | reconstruct | interpolate | cluster`` and ``textebm sample --near | --symbol`` are
these functions behind a command line (:mod:`textebm.cli`).

Sentences are batched by length (little padding), and the results come back in the input's order. A batch's
chains draw their noise from one generator seeded once per call, so the same seed gives the same numbers for the
same inputs and batch size.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

#: the extensions :func:`write_codes` writes, by format
CODE_FORMATS = {".safetensors": "safetensors", ".npy": "npy", ".jsonl": "jsonl"}
#: inputs at least this long show a progress bar (when asked for)
PROGRESS_FROM = 256


def _generator(model, seed: int) -> torch.Generator:
    gen = torch.Generator(device=model.device)
    gen.manual_seed(seed)
    return gen


def _length_batches(model, inputs, batch_size: int) -> List[List[int]]:
    """Indices of ``inputs`` cut into batches of similar length (sentences) or in order (tensors)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(inputs)
    if isinstance(inputs, torch.Tensor) or model.tokenizer is None:
        order = list(range(n))
    else:
        order = sorted(range(n), key=lambda i: len(inputs[i].split()))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _take(inputs, idx: List[int]):
    if isinstance(inputs, torch.Tensor):
        return inputs[torch.as_tensor(idx, device=inputs.device)]
    return [inputs[i] for i in idx]


def _bar(total: int, desc: str, enabled: bool):
    from .console import progress

    return progress(total, desc, enabled and total >= PROGRESS_FROM, leave=False)


def encode_all(model, inputs, batch_size: int = 64, n_chains: int = 8, chain=None, seed: int = 0,
               progress: bool = False, amortized: Optional[bool] = None, refine: Optional[int] = None):
    """:meth:`~textebm.model.LatentEBMModel.encode` over many inputs (sentences or a tensor of examples), batched:
    a :class:`~textebm.model.Codes` of all of them in the input's order (``samples`` kept when chains ran);
    ``refine``: steps of ascent to each posterior's mode (:meth:`~textebm.model.LatentEBMModel.encode`)."""
    from .model import Codes

    n = len(inputs)
    if n == 0:
        raise ValueError("no inputs to encode")
    gen = _generator(model, seed)
    mean = std = samples = None
    source = None
    bar = _bar(n, "encode", progress)
    for idx in _length_batches(model, inputs, batch_size):
        c = model.encode(_take(inputs, idx), n_chains=n_chains, chain=chain, generator=gen, amortized=amortized,
                         refine=refine)
        if mean is None:
            d = c.mean.shape[1]
            mean, std = c.mean.new_empty(n, d), c.std.new_empty(n, d)
            samples = c.samples.new_empty(n, c.samples.shape[1], d) if c.samples is not None else None
            source = c.source
        t = torch.as_tensor(idx, device=mean.device)
        mean[t], std[t] = c.mean, c.std
        if samples is not None:
            samples[t] = c.samples
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return Codes(mean, std, samples, source)


def _bodies(model, x: torch.Tensor) -> List[List[int]]:
    """Token ids between <s> and </s> of each row of a padded batch."""
    tok = model.tokenizer
    out = []
    for row in x.tolist():
        row = row[1:] if row and row[0] == tok.bos_id else row
        row = [t for t in row if t != tok.pad_id]
        out.append(row[:row.index(tok.eos_id)] if tok.eos_id in row else row)
    return out


def reconstruct_all(model, inputs, batch_size: int = 64, n_chains: int = 8, chain=None, seed: int = 0,
                    progress: bool = False, decoding: Optional[dict] = None, scores: bool = True,
                    amortized: Optional[bool] = None, refine: Optional[int] = None):
    """Each input decoded at its code (:meth:`~textebm.model.LatentEBMModel.reconstruct`), batched.

    Text: returns (decodes, per-sentence rows, scores). ``decoding`` is the rule (default greedy, the recipe's
    ``generate.max_len``); the scores compare the decoded tokens with the input's (as the model reads it:
    truncated to ``data.max_len``, unknown words as <unk>) by :func:`textebm.eval.latent.reconstruction_scores`
    (token accuracy by position with </s>, exact match, corpus BLEU-4); each row holds the sentence's token
    accuracy and exact match. Images: (reconstructions (N, C, H, W), None, {"mse": per-value mean squared
    error}). ``scores=False`` leaves the scores out (None); ``amortized`` is :meth:`encode`'s."""
    from .eval.bleu import bleu_from_stats, bleu_stats
    from .eval.latent import reconstruction_scores

    n = len(inputs)
    if n == 0:
        raise ValueError("no inputs to reconstruct")
    gen = _generator(model, seed)
    bar = _bar(n, "reconstruct", progress)
    if model.is_image:
        outs, sq = [None] * n, 0.0
        for idx in _length_batches(model, inputs, batch_size):
            x = model.as_batch(_take(inputs, idx))
            rec = model.reconstruct(x, chain, gen, n_chains=n_chains, refine=refine)
            sq += float((rec - x).pow(2).sum())
            for j, i in enumerate(idx):
                outs[i] = rec[j].cpu()
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        out = torch.stack(outs)
        return out, None, ({"mse": sq / out.numel(), "n": n} if scores else None)
    rule = dict(greedy=True, max_len=model.recipe.generate.max_len if model.recipe is not None else 40)
    rule.update(decoding or {})
    decodes: List[Optional[str]] = [None] * n
    rows: List[Optional[dict]] = [None] * n
    correct = total = exact = 0
    bleu = None
    for idx in _length_batches(model, inputs, batch_size):
        x = model.as_batch(_take(inputs, idx))
        z = model.encode(x, n_chains=n_chains, chain=chain, generator=gen, amortized=amortized, refine=refine).mean
        ids = model.decode(z, generator=gen, decode=False, **rule)
        refs = _bodies(model, x)
        stopped = [len(h) < rule["max_len"] for h in ids]
        for j, i in enumerate(idx):
            decodes[i] = model.tokenizer.decode(ids[j])
            if scores:
                one = reconstruction_scores([ids[j]], [refs[j]], [stopped[j]], eos=model.tokenizer.eos_id)
                rows[i] = {"token_acc": one["token_acc"], "exact": bool(one["n_exact"])}
        if scores:
            sc = reconstruction_scores(ids, refs, stopped, eos=model.tokenizer.eos_id)
            correct, total, exact = correct + sc["correct_tokens"], total + sc["n_tokens"], exact + sc["n_exact"]
            st = bleu_stats(ids, refs)
            bleu = st if bleu is None else {"match": [a + b for a, b in zip(bleu["match"], st["match"])],
                                            "total": [a + b for a, b in zip(bleu["total"], st["total"])],
                                            "hyp_len": bleu["hyp_len"] + st["hyp_len"],
                                            "ref_len": bleu["ref_len"] + st["ref_len"]}
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    if not scores:
        return decodes, None, None
    return decodes, rows, {"token_acc": correct / total if total else None, "exact": exact / n,
                           "bleu": bleu_from_stats(bleu), "n": n, "n_tokens": total}


def interpolate_pairs(model, pairs: Sequence[Tuple], steps: int = 8, spherical: bool = False, n_chains: int = 8,
                      chain=None, seed: int = 0, progress: bool = False, decoding: Optional[dict] = None,
                      batch_size: int = 64):
    """For each pair (a, b) of inputs, the decodes along the path between their codes
    (:func:`~textebm.model.interpolate_codes`; endpoints exactly the codes), greedy unless ``decoding`` says
    otherwise. The codes of all endpoints come from one :func:`encode_all`. Returns (paths (P, steps, d),
    decodes: P lists of ``steps`` sentences, or a (P, steps, C, H, W) tensor of images)."""
    from .model import interpolate_codes

    if not pairs:
        raise ValueError("no pairs to interpolate")
    if model.is_image:
        ends = torch.stack([torch.as_tensor(v) for p in pairs for v in p])
    else:
        ends = [v for p in pairs for v in p]
    codes = encode_all(model, ends, batch_size, n_chains, chain, seed, progress).mean.view(len(pairs), 2, -1)
    center = model.prior.ref_mean if getattr(model.prior, "reference", None) == "fitted" else None
    paths = torch.stack([interpolate_codes(c[0], c[1], steps, spherical, center) for c in codes])
    rule = {} if model.is_image else dict(greedy=True)
    rule.update(decoding or {})
    gen = _generator(model, seed + 1)
    flat = paths.view(-1, paths.shape[-1])
    outs = []
    for i in range(0, flat.shape[0], max(1, batch_size * 4)):
        outs.append(model.decode(flat[i:i + batch_size * 4], generator=gen, **rule))
    if model.is_image:
        return paths, torch.cat([o.cpu() for o in outs]).view(len(pairs), steps, *outs[0].shape[1:])
    flat_dec = [s for o in outs for s in o]
    return paths, [flat_dec[i * steps:(i + 1) * steps] for i in range(len(pairs))]


def cluster_all(model, inputs, batch_size: int = 64, n_chains: int = 8, chain=None, seed: int = 0,
                progress: bool = False):
    """The most probable symbol of each input and p(y | x) (:meth:`~textebm.model.LatentEBMModel.cluster`) of a
    symbol-vector run, batched: ((N,) LongTensor, (N, K) tensor)."""
    if not hasattr(model.prior, "symbol_log_probs"):
        raise ValueError(f"clustering needs a symbol-vector prior (prior.kind: symbol_vector); this run's prior is "
                         f"{model.prior.kind!r}")
    n = len(inputs)
    if n == 0:
        raise ValueError("no inputs to cluster")
    gen = _generator(model, seed)
    probs = None
    bar = _bar(n, "cluster", progress)
    for idx in _length_batches(model, inputs, batch_size):
        p = model.symbol_probs(_take(inputs, idx), n_chains, chain, gen)
        if probs is None:
            probs = p.new_empty(n, p.shape[1])
        probs[torch.as_tensor(idx, device=probs.device)] = p
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return probs.argmax(-1), probs


# ---- codes to files ---------------------------------------------------------------------------------------
def code_format(path) -> str:
    """``safetensors``, ``npy`` or ``jsonl`` by the path's extension (a ValueError naming the valid ones)."""
    ext = Path(path).suffix.lower()
    if ext not in CODE_FORMATS:
        raise ValueError(f"cannot tell the format of {path} from its extension; use one of "
                         f"{', '.join(CODE_FORMATS)}")
    return CODE_FORMATS[ext]


def code_records(codes, texts: Optional[Sequence[str]] = None) -> List[dict]:
    """One JSON-ready record per input: ``mean`` and ``std`` (lists of floats), with ``text`` when given."""
    mean, std = codes.mean.detach().cpu().tolist(), codes.std.detach().cpu().tolist()
    out = []
    for i, (m, s) in enumerate(zip(mean, std)):
        rec = {"text": texts[i]} if texts is not None else {}
        rec.update(mean=[round(v, 6) for v in m], std=[round(v, 6) for v in s])
        out.append(rec)
    return out


def write_codes(path, codes, texts: Optional[Sequence[str]] = None, source: str = "") -> Path:
    """Write codes through the package's safe writer, by extension: ``.safetensors`` (tensors ``mean`` and
    ``std``, (N, d) float32, with the source in its metadata), ``.npy`` (the means, (N, d) float32: one array per
    file), ``.jsonl`` (one record per input: ``text``, ``mean``, ``std``)."""
    from .files import atomic_write, write_file

    fmt = code_format(path)
    mean = codes.mean.detach().float().cpu().contiguous()
    std = codes.std.detach().float().cpu().contiguous()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        meta = {"source": source or str(getattr(codes, "source", "")), "rows": str(mean.shape[0])}
        return atomic_write(path, lambda tmp: save_file({"mean": mean, "std": std}, str(tmp), metadata=meta))
    if fmt == "npy":
        import numpy as np

        return write_file(path, lambda fh: np.save(fh, mean.numpy(), allow_pickle=False))
    lines = "".join(json.dumps(r) + "\n" for r in code_records(codes, texts))
    return write_file(path, lines)


def read_codes(path) -> torch.Tensor:
    """The means written by :func:`write_codes` (any of its formats), (N, d) float32."""
    from .files import read_regular

    fmt = code_format(path)
    if fmt == "safetensors":
        from safetensors.torch import load

        return load(read_regular(path, "codes file"))["mean"]
    if fmt == "npy":
        import io

        import numpy as np

        return torch.from_numpy(np.load(io.BytesIO(read_regular(path, "codes file")), allow_pickle=False))
    rows = [json.loads(line) for line in read_regular(path, "codes file").decode("utf-8").splitlines() if line]
    return torch.tensor([r["mean"] for r in rows], dtype=torch.float32)

