"""Interrupted runs resume exactly, damaged checkpoints fall back, divergence is caught, bad input is reported."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from textebm.config import ConfigError, Recipe, dump_recipe, load_recipe
from textebm.data import CorpusError, load_corpus
from textebm.sampling import SamplerDivergedError
from textebm.train import Trainer, list_checkpoints, load_latest_checkpoint, train

from conftest import ROOT, tiny_recipe



def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model.safetensors"))


def cli(*args, wait=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "textebm", *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def test_sigkill_then_resume_matches_an_uninterrupted_run(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "train.steps=40", "train.save_every=4", "train.keep_checkpoints=2",
                    "train.num_threads=1", "model.dropout_in=0.2", "model.dropout_out=0.2")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dump_recipe(r))
    full = tmp_path / "full"
    p = cli("train", str(recipe), "--out", str(full), "--no-progress")
    assert p.returncode == 0, p.stderr

    cut = tmp_path / "cut"
    proc = cli("train", str(recipe), "--out", str(cut), "--no-progress", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [c for c in list_checkpoints(cut) if int(c.stem.split("-")[1]) >= 12]
        if done or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "model.safetensors").exists(), "the run finished before it could be killed"
    p = cli("train", "--resume", str(cut), "--no-progress")
    assert p.returncode == 0, p.stderr
    a, b = weights(full), weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_truncated_checkpoint_falls_back_to_previous(toy_corpus, tmp_path, capsys):
    r = tiny_recipe(toy_corpus, "train.steps=6", "train.save_every=2", "train.keep_checkpoints=5")
    train(r, tmp_path / "run", device="cpu", progress=False)
    ckpts = list_checkpoints(tmp_path / "run")
    assert [c.name for c in ckpts] == ["ckpt-00000002.pt", "ckpt-00000004.pt", "ckpt-00000006.pt"]
    data = ckpts[-1].read_bytes()
    ckpts[-1].write_bytes(data[: len(data) // 3])
    path, ck = load_latest_checkpoint(tmp_path / "run")
    assert path == ckpts[-2] and ck["step"] == 4
    assert "unreadable" in capsys.readouterr().err
    # resuming continues from step 4 and finishes
    tr = Trainer(r, tmp_path / "run", device="cpu", resume=True, progress=False)
    assert tr.step == 4
    assert tr.run()["step"] == 6


def test_only_corrupt_checkpoints_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-00000001.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="every checkpoint .* is unreadable"):
        load_latest_checkpoint(tmp_path)


def test_diverging_step_size_raises_naming_the_sampler(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "sampling.prior_step_size=1e6", "prior.sigma0=1e-3", "train.latent_batches=0")
    with pytest.raises(SamplerDivergedError, match="prior langevin sampler diverged at step"):
        train(r, tmp_path / "run", device="cpu", progress=False)


def test_diverging_step_size_recovers_when_configured(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "sampling.prior_step_size=1e4", "prior.sigma0=1e-3", "sampling.on_nan=skip",
                    "train.latent_batches=0", "train.steps=3")
    summary = train(r, tmp_path / "run", device="cpu", progress=False)
    assert summary["step"] == 3 and summary["nan_skips"] >= 1


def test_same_seed_same_training_curve(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "train.steps=5", "model.dropout_in=0.3")
    train(r, tmp_path / "a", device="cpu", progress=False)
    train(r, tmp_path / "b", device="cpu", progress=False)
    strip = lambda p: [{k: v for k, v in __import__("json").loads(l).items() if not k.startswith("time")}
                       for l in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")


def test_recipe_fuzz_gives_config_errors_only(tmp_path):
    rng = random.Random(0)
    base = yaml.safe_load(dump_recipe(Recipe()))
    samples = [b"", b"\xff\xfe\x00garbage", b"train: [1, 2", b"- a\n- b\n", b"train: 3\n", b"name: {a: 1}\n",
               b"seed: 1.5\n", b"train:\n  steps: ten\n", b"train:\n  lr_prior: .nan\n", b"data:\n  max_len: 0\n",
               b"sampling:\n  on_nan: maybe\n", b"model:\n  latent_dim: true\n", b"\t\tbad: : :\n"]
    for _ in range(150):
        samples.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))))
    for _ in range(150):  # structured mutations: a random key gets a random value
        d = yaml.safe_load(dump_recipe(Recipe()))
        sec = rng.choice([k for k, v in base.items() if isinstance(v, dict)])
        key = rng.choice(list(d[sec]) + ["bogus"])
        d[sec][key] = rng.choice([None, -1, 0, 1e9, "x", [1, "a"], {"k": 1}, True, 2.5, float("inf")])
        samples.append(yaml.safe_dump(d).encode())
    ok = 0
    for i, data in enumerate(samples):
        p = tmp_path / f"r{i}.yaml"
        p.write_bytes(data)
        try:
            load_recipe(p)
            ok += 1
        except ConfigError as e:
            assert str(e) and "\n" not in str(e).strip()
    assert ok < len(samples)


def test_corpus_fuzz_gives_corpus_errors_only(tmp_path):
    rng = random.Random(1)
    for i in range(60):
        d = tmp_path / f"c{i}"
        d.mkdir()
        for split in ("train", "valid", "test"):
            if rng.random() < 0.1:
                continue
            kind = rng.randrange(4)
            if kind == 0:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            elif kind == 1:
                data = b"\n" * rng.randrange(0, 5)
            elif kind == 2:
                data = "héllo wörld\n".encode("latin-1")
            else:
                data = b"a b c\nd e\n"
            (d / f"{split}.txt").write_bytes(data)
        try:
            c = load_corpus(str(d))
            assert c.train and c.valid and c.test
        except CorpusError as e:
            assert str(e)


def test_two_process_ddp_on_cpu_keeps_ranks_identical(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "train.steps=6", "train.num_threads=1", "train.batch_size=16")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dump_recipe(r))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(29500 + os.getpid() % 1000), "-m", "textebm", "train", str(recipe), "--out",
                        str(tmp_path / "ddp"), "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "parameters across 2 ranks: max difference from rank 0 0" in p.stderr, p.stderr[-2000:]
    assert "ranks: 2" in p.stderr
    ckpt = sorted((tmp_path / "ddp" / "checkpoints").glob("ckpt-*.pt"))[-1]
    s = subprocess.run([sys.executable, "-m", "textebm", "sample", str(ckpt), "-n", "4"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert s.returncode == 0 and len(s.stdout.splitlines()) == 4, s.stderr
