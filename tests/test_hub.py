"""Models on the Hub without a network: a run pushed to a stand-in for the Hub (a local cache laid out as
``huggingface_hub`` lays out what it downloads), loaded back by id with HF_HUB_OFFLINE=1 by ``from_pretrained``,
``textebm sample`` and ``textebm eval``; the model card's metadata block, parsed by YAML and by the Hub client."""
import hashlib
import json
import os
import shutil
import types
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, run_cli

hf = pytest.importorskip("huggingface_hub")

REPO = "textebm-test/tiny"


class LocalHub:
    """A stand-in for ``huggingface_hub.HfApi``: ``upload_folder`` writes the folder into a Hugging Face cache as the
    client's downloads lay it out (``models--org--name/blobs/<sha256>``, ``snapshots/<commit>/<file>`` linking to
    the blob, ``refs/<branch>`` holding the commit), so the client itself finds it offline."""

    def __init__(self, cache: Path):
        self.cache = Path(cache)
        self.repos, self.uploads = [], []

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type="model"):
        self.repos.append((repo_id, private, exist_ok, repo_type))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type="model", revision=None, commit_message=None):
        root = self.cache / f"models--{repo_id.replace('/', '--')}"
        files = sorted(p for p in Path(folder_path).rglob("*") if p.is_file())
        commit = hashlib.sha1(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
        snap = root / "snapshots" / commit
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        snap.mkdir(parents=True, exist_ok=True)
        for p in files:
            data = p.read_bytes()
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            rel = p.relative_to(folder_path)
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, (snap / rel).parent), snap / rel)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / (revision or "main")).write_text(commit)
        self.uploads.append((repo_id, [str(p.relative_to(folder_path)) for p in files], commit_message))
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}", oid=commit)


EVAL_ARGS = ["--fppl", "--rppl", "--nll", "--recon", "--diversity", "--latent", "--n-samples", "100",
             "--max-sentences", "8", "-K", "8", "--chains", "3", "--log-z-samples", "2000", "--fit-samples", "40",
             "--order", "3", "--no-progress"]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_run):
    """A copy of the tiny run, evaluated, pushed to a LocalHub whose cache is ``cache``."""
    from textebm.cli import main
    from textebm.model import LatentEBMModel

    tmp = tmp_path_factory.mktemp("hub")
    run = tmp / "run"
    shutil.copytree(tiny_run, run)
    assert main(["eval", str(run), *EVAL_ARGS]) == 0
    hub = LocalHub(tmp / "cache")
    model = LatentEBMModel.from_pretrained(run)
    info = model.push_to_hub(REPO, run_dir=run, api=hub, commit_message="first")
    return types.SimpleNamespace(run=run, cache=tmp / "cache", hub=hub, info=info, model=model, tmp=tmp)


@pytest.fixture
def offline_cache(pushed, monkeypatch):
    """HF_HUB_OFFLINE=1 with the stand-in Hub's cache as the Hugging Face cache, for calls in this process."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(pushed.cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(pushed.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return pushed.cache


def test_push_uploads_the_saved_model_its_run_files_and_a_card_and_nothing_else(pushed):
    (repo, files, message), = pushed.hub.uploads
    assert repo == REPO and message == "first" and pushed.hub.repos == [(REPO, None, True, "model")]
    assert sorted(files) == ["README.md", "config.json", "eval-test.json", "metrics.jsonl", "model.safetensors",
                             "recipe.yaml", "vocab.json"]
    assert pushed.info.commit_url.startswith(f"https://huggingface.co/{REPO}/commit/")
    report = json.loads((pushed.run / "eval-test.json").read_text())
    snap = next((pushed.cache / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir())
    public = json.loads((snap / "eval-test.json").read_text())
    assert public["run"]["path"] == REPO and str(pushed.run) not in json.dumps(public)  # no local paths
    assert public["nll"] == report["nll"]


def test_a_pushed_run_loads_back_by_id_offline_and_samples_and_evaluates(pushed, offline_cache, tmp_path,
                                                                          monkeypatch, capsys):
    from textebm.cli import main
    from textebm.model import LatentEBMModel

    m = LatentEBMModel.from_pretrained(REPO)
    sd, sd0 = m.state_dict(), pushed.model.state_dict()
    assert list(sd) == list(sd0) and all(torch.equal(sd[k], sd0[k]) for k in sd)
    assert m.tokenizer.itos == pushed.model.tokenizer.itos
    # textebm sample by id, in a fresh process that has only the environment: the same lines as from the run
    env_cache = dict(HF_HUB_CACHE=str(offline_cache), HF_HUB_OFFLINE="1")
    p = run_cli_env(env_cache, "sample", REPO, "-n", "4", "--seed", "3")
    assert p.returncode == 0, p.stderr
    assert main(["sample", str(pushed.run), "-n", "4", "--seed", "3"]) == 0
    assert p.stdout == capsys.readouterr().out and len(p.stdout.splitlines()) == 4
    # textebm eval by id: the report goes to the current directory, the cache stays as it was
    before = sorted(str(q) for q in offline_cache.rglob("*"))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", REPO, "--recon", "--max-sentences", "5", "--no-progress"]) == 0
    rep = json.loads((tmp_path / "eval-test.json").read_text())
    assert rep["recon"]["n_sentences"] == 5 and rep["run"]["path"] == REPO
    # the other commands that take a run: chain, compare (with the pushed report), plot (with the pushed metrics)
    capsys.readouterr()
    assert main(["chain", REPO, "--steps", "4", "--every", "2"]) == 0
    assert main(["compare", REPO, str(pushed.run)]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| textebm-test/tiny |") or line.startswith("| run |")}
    assert set(rows) == {REPO, "run"} and rows[REPO] == rows["run"]  # the id's report is the run's
    if __import__("importlib").util.find_spec("matplotlib") is not None:
        assert main(["plot", REPO, "--chain-steps", "5"]) == 0
        assert (tmp_path / "plots" / "energy_profile.png").is_file()
    assert sorted(str(q) for q in offline_cache.rglob("*")) == before


def run_cli_env(env: dict, *args):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_cli(*args)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_the_model_card_parses_and_carries_the_metrics(pushed, offline_cache):
    import yaml
    from huggingface_hub import ModelCard

    from textebm.hub import download

    path = download(REPO) / "README.md"
    text = path.read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "textebm" and "text-generation" in meta["tags"]
    corpus = Path(pushed.model.recipe.data.corpus).name  # a local corpus: its directory's name
    assert meta["datasets"] == [corpus] and {"perplexity", "nll", "mutual_information"} <= set(meta["metrics"])
    report = json.loads((pushed.run / "eval-test.json").read_text())
    results = meta["model-index"][0]["results"][0]
    assert meta["model-index"][0]["name"] == REPO and results["dataset"]["split"] == "test"
    got = {m["name"]: m["value"] for m in results["metrics"]}
    want = {"perplexity per token (importance-sampled NLL)": report["nll"]["ppl_per_token"],
            "NLL (nats per sentence, importance sampling)": report["nll"]["nll_per_sentence"],
            "reconstruction NLL (nats per sentence)": report["recon"]["recon_nll_per_sentence"],
            "forward perplexity of samples (FPPL, words, 3-gram)": report["fppl"]["value"],
            "reverse perplexity (RPPL, words, 3-gram)": report["rppl"]["value"],
            "self-BLEU-4 of samples (words)": report["diversity"]["self_bleu"],
            "mutual information I(x; z) (nats)": report["latent"]["mi"],
            "active units of z": report["latent"]["active_units"],
            "MMD^2 of prior and aggregate-posterior codes": report["prior_fit"]["mmd2"]}
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-4), name
    # the Hub client reads the same numbers from the card
    card = ModelCard.load(path)
    assert card.data.library_name == "textebm"
    by_name = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert by_name["mutual information I(x; z) (nats)"] == pytest.approx(report["latent"]["mi"], abs=1e-4)
    assert f"textebm sample {REPO}" in card.text


def test_push_stage_writes_exactly_what_is_uploaded(pushed, tmp_path, capsys):
    from textebm.cli import main

    out = tmp_path / "staged"
    assert main(["push", str(pushed.run), REPO, "--stage", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(pushed.hub.uploads[0][1])
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))
    assert main(["push", str(pushed.run), REPO, "--stage", str(out)]) == 2  # not empty
    assert main(["push", str(pushed.run), "not an id", "--stage", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "must be a new or empty directory" in err and "is not a Hub repository id" in err


def test_ids_and_files_missing_from_the_cache_are_one_line_errors(pushed, offline_cache, tmp_path):
    env = dict(HF_HUB_CACHE=str(offline_cache), HF_HUB_OFFLINE="1")
    assert_one_line_error(run_cli_env(env, "sample", "textebm-test/absent"), "textebm-test/absent",
                          "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1")
    # a cache entry that lost its weights
    broken = tmp_path / "cache"
    shutil.copytree(offline_cache, broken, symlinks=True)
    snap = next((broken / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir())
    (snap / "model.safetensors").unlink()
    env["HF_HUB_CACHE"] = str(broken)
    p = run_cli_env(env, "eval", REPO, "--recon", "--out", str(tmp_path / "r.json"))
    assert_one_line_error(p, REPO, "lacks model.safetensors", "HF_HUB_OFFLINE=1")


def test_hub_ids_are_told_apart_from_local_paths(tmp_path, monkeypatch):
    from textebm.hub import is_hub_id, parse_hub_id

    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    for bad in ("name", "org/na me", "/abs/path", "./org/name", "a/b/c", "org/../x", "org/name.", "-org/name"):
        assert parse_hub_id(bad) is None, bad
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("runs/quickstart")
    (tmp_path / "runs").mkdir()
    assert not is_hub_id("runs/quickstart")  # runs/ is a local folder: a missing run, not a model on the Hub
