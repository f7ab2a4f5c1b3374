"""Models on the Hugging Face Hub: push a run with its model card, open one by id through the local cache.

``LatentEBMModel.push_to_hub(repo_id)`` / ``textebm push RUN org/name`` upload the files of a saved model
(:data:`MODEL_FILES`, the tokenizer's files), the run's ``recipe.yaml``, ``metrics.jsonl`` and evaluation reports
when it has them, and a model card, ``README.md``, whose metadata block (library name, datasets, metrics and a
``model-index`` with the evaluation's numbers) is generated from the recipe, the evaluation report and the latent
diagnostics (:func:`model_card`). Weights go up as safetensors only; checkpoints (``checkpoints/*.pt``) never do.

Every command that takes a run accepts a Hub id (``org/name``, or ``org/name@revision``) where a local path of that
name does not exist (:func:`resolve`): ``huggingface_hub.snapshot_download`` fetches only the files above into the
local cache (or finds them there), honouring ``HF_HUB_OFFLINE=1`` (cache only; a model or file that is not cached
is a one-line error naming it) and ``HF_HOME`` / ``HF_HUB_CACHE``. The snapshot is then opened like any saved model:
JSON and safetensors, tokenizer files as data, no code. Needs the ``[hub]`` extra (``huggingface_hub``).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .extras import MissingExtraError, require
from .files import atomic_write, read_json

#: what makes a model (both required)
MODEL_FILES = ("config.json", "model.safetensors")
#: a tokenizer's files (whichever the model's tokenizer writes)
TOKENIZER_FILES = ("vocab.json", "spm.model", "spm.json", "tokenizer.json", "tokenizer_config.json")
#: what a run adds when it has it
RUN_FILES = ("recipe.yaml", "metrics.jsonl", "eval-test.json", "eval-valid.json")
CARD_FILE = "README.md"
#: everything that is uploaded or downloaded; nothing else in a repository is fetched
HUB_FILES = MODEL_FILES + TOKENIZER_FILES + RUN_FILES + (CARD_FILE,)

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^({_PART})/({_PART})(?:@([A-Za-z0-9][A-Za-z0-9._/-]*))?$")


# ---- ids and the local cache --------------------------------------------------------------------------------
def parse_hub_id(name: str) -> Optional[Tuple[str, Optional[str]]]:
    """(repo_id, revision or None) when ``name`` has the shape of a Hub model id (``org/name[@revision]``)."""
    m = _HUB_ID.match(str(name))
    if m is None or ".." in m.group(2):
        return None
    return f"{m.group(1)}/{m.group(2)}", m.group(3)


def is_hub_id(name) -> bool:
    """True for an ``org/name[@revision]`` that is not a local path: nothing of that name exists here and its first
    part is not a local directory (``runs/missing`` in a folder holding ``runs/`` stays a local path)."""
    s = str(name)
    if parse_hub_id(s) is None or Path(s).exists():
        return False
    return not Path(s.split("/", 1)[0]).is_dir()


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as ``huggingface_hub`` reads it (1, true, yes or on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download(hub_id: str, cache_dir=None, token=None) -> Path:
    """The local snapshot of the model ``hub_id`` (``org/name[@revision]``): only :data:`HUB_FILES` are fetched,
    into the Hugging Face cache, or found there when ``HF_HUB_OFFLINE=1``. Errors are one line naming the id and
    what is missing."""
    parsed = parse_hub_id(hub_id)
    if parsed is None:
        raise ValueError(f"{hub_id!r} is not a Hub model id (expected org/name or org/name@revision)")
    repo_id, revision = parsed
    try:
        hf = require("huggingface_hub", "", "hub")
    except MissingExtraError:  # a mistyped local path looks like an id too: say both
        raise MissingExtraError(f"no such run directory or checkpoint: {hub_id}; opening it as a Hub id needs "
                                f"huggingface_hub, which is not installed: pip install 'textebm[hub]'") from None
    from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    cut = offline()
    where = f"{hub_id}: not a local run directory or checkpoint, and as a Hub id"
    try:
        path = Path(hf.snapshot_download(repo_id, revision=revision, allow_patterns=list(HUB_FILES),
                                         local_files_only=cut, cache_dir=cache_dir, token=token))
    except LocalEntryNotFoundError:
        if cut:
            raise FileNotFoundError(f"{where} it is not in the local Hugging Face cache ({_cache(cache_dir)}), and "
                                    f"HF_HUB_OFFLINE=1 forbids downloading it; fetch it once online or unset "
                                    f"HF_HUB_OFFLINE") from None
        raise OSError(f"{where} it could not be downloaded (the Hub is unreachable) and is not in the local cache "
                      f"({_cache(cache_dir)})") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{where} no model {repo_id} exists on the Hub (or it is private and no token was "
                                f"given: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{where} the model {repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"{where} {repo_id}: {' '.join(str(e).split())[:200]}") from None
    except Exception as e:  # connection and HTTP errors of any version of the client
        if type(e).__name__ == "IncompleteSnapshotError":  # huggingface_hub >= 2: the cache lacks listed files
            raise FileNotFoundError(f"{hub_id}: the local Hugging Face cache holds only part of it"
                                    + (", and HF_HUB_OFFLINE=1 forbids downloading the rest" if cut else "")
                                    + f" ({' '.join(str(e).split())[:160]})") from None
        if type(e).__name__ in ("OfflineModeIsEnabled",) or isinstance(e, (OSError, ValueError)):
            raise OSError(f"{where} it could not be fetched: {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}") from None
        raise
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        if cut:
            raise FileNotFoundError(f"{hub_id}: the local Hugging Face cache ({path}) lacks {', '.join(missing)}, "
                                    f"and HF_HUB_OFFLINE=1 forbids downloading it")
        raise FileNotFoundError(f"{hub_id}: the repository has no {', '.join(missing)}; it is not a textebm model "
                                f"(textebm push writes one)")
    return path


def _cache(cache_dir) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except (ImportError, AttributeError):
        return "~/.cache/huggingface/hub"


def resolve(path_or_id) -> Path:
    """A local path as it is; a Hub id (:func:`is_hub_id`) as its local snapshot (:func:`download`); anything else
    a FileNotFoundError ``no such run directory or checkpoint``."""
    p = Path(str(path_or_id)).expanduser()
    if p.exists():
        return p
    if is_hub_id(path_or_id):
        return download(str(path_or_id))
    raise FileNotFoundError(f"no such run directory or checkpoint: {p} (nor a Hub id org/name)")


# ---- pushing ----------------------------------------------------------------------------------------------
def stage(model, directory, repo_id: str, run_dir=None) -> List[Path]:
    """Write into ``directory`` exactly what :func:`push` uploads: the saved model (config, safetensors
    weights, tokenizer), the run's ``recipe.yaml``, ``metrics.jsonl`` and evaluation reports (from ``run_dir``,
    when given; the reports' local paths replaced by the id), and the model card ``README.md``. Returns the
    files written."""
    from .config import dump_recipe

    directory = Path(directory)
    model.save_pretrained(directory)
    run = Path(run_dir) if run_dir is not None else None
    for name in RUN_FILES:
        src = run / name if run is not None else None
        if src is not None and src.is_file():
            if name.startswith("eval-"):
                report = _public_report(read_json(src), repo_id)
                text = json.dumps(report, indent=1)
                atomic_write(directory / name, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"))
            else:
                atomic_write(directory / name, lambda tmp, s=src: shutil.copyfile(s, tmp))
    if not (directory / "recipe.yaml").exists() and model.recipe is not None:
        text = dump_recipe(model.recipe)
        atomic_write(directory / "recipe.yaml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    card = model_card(model, repo_id, directory)
    atomic_write(directory / CARD_FILE, lambda tmp: tmp.write_text(card, encoding="utf-8"))
    files = sorted(p for p in directory.iterdir() if p.is_file())
    unexpected = [p.name for p in files if p.name not in HUB_FILES]
    if unexpected:  # a save_pretrained that learned to write more must be added to HUB_FILES on purpose
        raise RuntimeError(f"staging {repo_id} wrote files outside the Hub file list: {unexpected}")
    return files


def _public_report(report: dict, repo_id: str) -> dict:
    """An evaluation report without the local paths of the machine it ran on."""
    report = dict(report)
    if isinstance(report.get("run"), dict):
        report["run"] = {**report["run"], "path": repo_id}
    if isinstance(report.get("settings"), dict) and "run" in report["settings"]:
        report["settings"] = {**report["settings"], "run": repo_id}
    return report


def push(model, repo_id: str, run_dir=None, private: Optional[bool] = None, token=None,
         commit_message: Optional[str] = None, revision: Optional[str] = None, api=None):
    """Upload ``model`` (and the run files of ``run_dir``) to the Hub repository ``repo_id``, creating it if
    needed; returns the commit's information (``huggingface_hub.CommitInfo``; its ``commit_url``). ``api`` is a
    ``huggingface_hub.HfApi`` or anything with its ``create_repo`` and ``upload_folder`` (a stand-in in tests)."""
    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hub repository id (expected org/name)")
    if api is None:
        hf = require("huggingface_hub", "textebm push", "hub")
        api = hf.HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="textebm-push-") as tmp:
        stage(model, tmp, repo_id, run_dir)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"Upload {repo_id} (textebm)")


# ---- the model card ---------------------------------------------------------------------------------------
#: Hub dataset ids of the named corpora that come from the Hub (textebm.data.benchmarks' defaults)
HUB_DATASETS = {"ptb": "ptb_text_only", "snli": "stanfordnlp/snli", "yahoo": "community-datasets/yahoo_answers_topics",
                "svhn": "ufldl-stanford/svhn", "cifar10": "uoft-cs/cifar10", "celeba": "flwrlabs/celeba",
                "mnist": "ylecun/mnist"}


def _num(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(round(v, 4)) if isinstance(v, float) else int(v)


def card_metrics(report: Optional[dict], metrics_log: Optional[dict] = None) -> List[Dict]:
    """The model-index metrics of an evaluation report (``textebm eval``'s JSON), each ``{type, name, value}``;
    without a report, the latent diagnostics of the run's last validation (``metrics.jsonl``)."""
    out: List[Dict] = []

    def add(kind, name, value):
        v = _num(value)
        if v is not None:
            out.append({"type": kind, "name": name, "value": v})

    r = report or {}
    nll, recon, lat = r.get("nll") or {}, r.get("recon") or {}, r.get("latent") or {}
    add("perplexity", "perplexity per token (importance-sampled NLL)", nll.get("ppl_per_token"))
    add("nll", "NLL (nats per sentence, importance sampling)", nll.get("nll_per_sentence"))
    add("nll", "reconstruction NLL (nats per sentence)", recon.get("recon_nll_per_sentence"))
    for m, what in (("fppl", "forward perplexity of samples (FPPL, words)"),
                    ("rppl", "reverse perplexity (RPPL, words)")):
        sec = r.get(m) or {}
        order = sec.get("order")
        add("perplexity", f"{what[:-1]}, {order}-gram)" if order else what, sec.get("value"))
    div = r.get("diversity") or {}
    for n in (1, 2, 3):
        add("distinct", f"distinct-{n} of samples (words)", div.get(f"distinct_{n}"))
    add("self_bleu", "self-BLEU-4 of samples (words)", div.get("self_bleu"))
    lat_source = lat
    if not lat and metrics_log:
        lat_source = {k[len("valid_"):]: v for k, v in metrics_log.items() if k.startswith("valid_")}
    add("mutual_information", "mutual information I(x; z) (nats)", lat_source.get("mi"))
    add("active_units", "active units of z", lat_source.get("active_units"))
    add("shuffled_latent_gap", "shuffled-latent gap (nats per sentence)", lat_source.get("shuffle_gap"))
    add("kl", "KL = IS-NLL - reconstruction NLL (nats per sentence)", lat_source.get("kl"))
    fit = r.get("prior_fit") or {}
    add("mmd", "MMD^2 of prior and aggregate-posterior codes", fit.get("mmd2"))
    if r.get("kind") == "image":
        for key, name in (("mse", "reconstruction MSE"), ("fid", "FID")):
            sec = r.get(key)
            add(key, name, sec.get("value") if isinstance(sec, dict) else sec)
    return out


def _last_validation(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    last = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and any(k.startswith("valid_mi") for k in rec):
            last = rec
    return last


def model_card(model, repo_id: str, directory=None) -> str:
    """``README.md`` for the Hub: a YAML metadata block (``library_name: textebm``, tags, ``datasets``,
    ``metrics`` and a ``model-index`` with the numbers of the evaluation report in ``directory``, else the latent
    diagnostics of its ``metrics.jsonl``), then what the model is, how it was trained and how to use it."""
    import yaml

    d = Path(directory) if directory is not None else None
    report, split = None, None
    for s in ("test", "valid"):
        if d is not None and (d / f"eval-{s}.json").is_file():
            report, split = read_json(d / f"eval-{s}.json"), s
            break
    last = _last_validation(d / "metrics.jsonl") if d is not None else None
    metrics = card_metrics(report, last)
    r = model.recipe
    corpus = r.data.corpus if r is not None else None
    dataset = HUB_DATASETS.get(corpus, corpus if corpus and "/" not in corpus and "\\" not in corpus
                               else Path(str(corpus)).name if corpus else None)
    image = model.is_image
    task = "image-generation" if image else "text-generation"
    meta = {"library_name": "textebm",
            "tags": ["textebm", "latent-space-ebm", "energy-based-model", task],
            "pipeline_tag": "unconditional-image-generation" if image else "text-generation"}
    if dataset:
        meta["datasets"] = [dataset]
    if metrics:
        meta["metrics"] = sorted({m["type"] for m in metrics})
        ds = {"name": str(corpus), "type": str(dataset)}
        if split:
            ds["split"] = split
        elif last:
            ds["split"] = "validation"
        meta["model-index"] = [{"name": repo_id, "results": [{
            "task": {"type": task, "name": "Text generation" if not image else "Image generation"},
            "dataset": ds, "metrics": metrics}]}]
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    body = _card_body(model, repo_id, report, split, metrics, last)
    return f"---\n{head}---\n\n{body}"


def _card_body(model, repo_id, report, split, metrics, last) -> str:
    r = model.recipe
    dec = model.decoder
    lines = [f"# {repo_id}", "",
             "A latent-space energy-based prior model (Pang, Han, Nijkamp, Zhu, Wu 2020, *Learning Latent Space "
             "Energy-Based Prior Model*), p(x, z) = p_alpha(z) p_beta(x | z), trained with "
             "[textebm](https://pypi.org/project/textebm/).", ""]
    prior = model.prior
    lines += ["## Model", "",
              f"- prior: {prior.kind} over z in R^{model.latent_dim}"
              + (" (exp f_alpha(z) times a Gaussian reference, f_alpha an MLP)" if prior.kind == "ebm" else ""),
              f"- decoder: {type(dec).__name__}"
              + (f" on the pretrained language model {dec.config.get('pretrained')}"
                 if isinstance(getattr(dec, "config", None), dict) and dec.config.get("pretrained") else ""),
              f"- parameters: {sum(p.numel() for p in model.parameters()):,}"]
    if hasattr(dec, "trainable_summary"):
        lines.append(f"- training: {dec.trainable_summary()}")
    if model.tokenizer is not None:
        lines.append(f"- tokenizer: {model.tokenizer.kind}, {len(model.tokenizer):,} tokens")
    if r is not None:
        s = r.sampling
        lines += [f"- recipe: `{r.name}` on the corpus `{r.data.corpus}`, {r.train.steps} steps of batch "
                  f"{r.train.batch_size} (recipe.yaml)",
                  f"- prior chain: {s.prior_steps} {r.prior.sampler} steps of size {s.prior_step_size}; posterior "
                  f"chain: {s.posterior_steps} {s.posterior_sampler} steps of size {s.posterior_step_size}"
                  + (f" -> {s.posterior_step_size_end}" if s.posterior_step_size_end else "")]
    lines.append("")
    if metrics:
        src = (f"`textebm eval` on the {split} split (eval-{split}.json)" if report is not None
               else f"the run's last validation (step {last.get('step')}, metrics.jsonl)")
        lines += ["## Results", "", f"From {src}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {m['name']} | {m['value']:.4g} |" for m in metrics]
        lines.append("")
        if report is not None and report.get("protocol"):
            lines += ["<details><summary>How each number was measured</summary>", ""]
            lines += [f"- **{k}**: {v}" for k, v in report["protocol"].items() if isinstance(v, str)]
            lines += ["", "</details>", ""]
    else:
        lines += ["## Results", "", "No evaluation report was pushed with this model (`textebm eval RUN` writes "
                                    "one; push again to include it).", ""]
    lines += ["## Usage", "", "```bash", "pip install 'textebm[hub]'", f"textebm sample {repo_id} -n 10",
              f"textebm eval {repo_id}", "```", "", "```python", "from textebm import LatentEBMModel", "",
              f"model = LatentEBMModel.from_pretrained(\"{repo_id}\")",
              "print(model.generate(5))" if not model.is_image else "images = model.generate(16)", "```", "",
              "The repository holds `config.json`, `model.safetensors` and the tokenizer's files: opening it "
              "runs no code from it.", ""]
    return "\n".join(lines)
