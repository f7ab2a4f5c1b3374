"""The image side through the shared modules: conv generator likelihood, the one Trainer, anomaly scores, CLI."""
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from textebm.config import ConfigError, Recipe, apply_overrides, load_recipe
from textebm.decoders import ConvDecoder
from textebm.model import LatentEBMModel, build_model
from textebm.train import Trainer


# ---- the decoder ----------------------------------------------------------------------------------------
def test_conv_log_prob_is_the_gaussian_density():
    torch.manual_seed(0)
    dec = ConvDecoder(latent_dim=5, channels=3, image_size=16, ngf=4, sigma=0.3)
    z = torch.randn(4, 5)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    want = torch.distributions.Normal(dec.mean(z), 0.3).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(dec.log_prob(x, z), want, rtol=1e-5, atol=1e-3)
    # the posterior gradient in z is the analytic one: J^T (x - g(z)) / sigma^2
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(dec.log_prob(x, zz).sum(), zz)
    _, vjp = torch.autograd.functional.vjp(dec.mean, z, (x - dec.mean(z)) / 0.09)
    torch.testing.assert_close(g, vjp, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,layers", [(8, 2), (32, 4), (64, 5)])
def test_conv_layers_follow_the_paper(size, layers):
    dec = ConvDecoder(latent_dim=3, channels=1, image_size=size, ngf=2)
    convs = [m for m in dec.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == layers and convs[0].out_channels == 16 and convs[-1].out_channels == 1
    assert isinstance(dec.net[-1], torch.nn.Tanh)
    assert dec.mean(torch.zeros(2, 3)).shape == (2, 1, size, size)


def test_conv_bad_input_is_named():
    with pytest.raises(ValueError, match="image_size must be 4 \\* 2\\^k"):
        ConvDecoder(latent_dim=3, image_size=28)
    dec = ConvDecoder(latent_dim=3, channels=3, image_size=8, ngf=2)
    with pytest.raises(ValueError, match=r"\(batch, 3, 8, 8\).*data.channels"):
        dec.log_prob(torch.zeros(2, 1, 8, 8), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(batch, 3, 8, 8\)"):
        dec.log_prob(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="z of shape"):
        dec.log_prob(torch.zeros(2, 3, 8, 8), torch.zeros(2, 4))


# ---- recipes --------------------------------------------------------------------------------------------
def test_image_recipes_load_and_build():
    for name, shape in (("svhn", (3, 32, 32)), ("cifar10", (3, 32, 32)), ("celeba64", (3, 64, 64)),
                        ("mnist_anomaly", (1, 32, 32)), ("digits_anomaly", (1, 8, 8))):
        r = load_recipe(f"recipes/{name}.yaml")
        assert r.data.kind == "image" and r.model.decoder == "conv"
        m = build_model(r)
        assert m.decoder.mean(torch.zeros(1, r.model.latent_dim)).shape[1:] == shape
    for d in range(10):
        r = load_recipe(f"recipes/mnist_anomaly/digit_{d}.yaml")
        assert r.data.held_out_class == d and r.name == f"mnist_anomaly_{d}" and r.data.corpus == "mnist"
    svhn, cifar = load_recipe("recipes/svhn.yaml"), load_recipe("recipes/cifar10.yaml")
    assert (svhn.model.ngf, cifar.model.ngf, cifar.model.latent_dim) == (64, 128, 128)
    assert cifar.sampling == svhn.sampling and cifar.train.lr_prior == svhn.train.lr_prior == 2e-5


def test_recipe_base_overrides_and_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\ntrain: {steps: 7, batch_size: 3}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\ntrain: {steps: 9}\n")
    r = load_recipe(tmp_path / "b.yaml")
    assert (r.name, r.train.steps, r.train.batch_size) == ("b", 9, 3)
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_recipe(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "e.yaml")


def test_decoder_and_data_kind_must_agree():
    with pytest.raises(ConfigError, match="does not fit data.kind"):
        apply_overrides(Recipe(), ["model.decoder=conv"])
    with pytest.raises(ConfigError, match="channels"):
        apply_overrides(Recipe(), ["data.kind=image", "model.decoder=conv", "data.channels=2"])


# ---- training through the shared Trainer ----------------------------------------------------------------
def _patterns(n_per_class, classes, seed=0, noise=0.05):
    """8x8 grey images: class k is a bright 3x3 square at one of 4 places, or (k >= 4) a bright full row."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in classes:
        img = np.zeros((8, 8))
        if k < 4:
            r, c = [(1, 1), (1, 4), (4, 1), (4, 4)][k]
            img[r:r + 3, c:c + 3] = 1.0
        else:
            img[3:5, :] = 1.0
        for _ in range(n_per_class):
            v = np.clip(img * rng.uniform(0.7, 1.0) + noise * rng.standard_normal((8, 8)), 0, 1)
            xs.append((v * 255).round().astype(np.uint8))
            ys.append(k)
    x, y = np.stack(xs), np.array(ys)
    perm = rng.permutation(len(x))
    return x[perm], y[perm]


def _image_recipe(data, *extra):
    return apply_overrides(Recipe(name="img"), [
        "data.kind=image", f"data.corpus={data}", "data.image_size=8", "data.channels=1",
        "model.decoder=conv", "model.latent_dim=8", "model.ngf=8", "prior.hidden=32",
        "sampling.posterior_steps=15", "train.batch_size=32", "train.lr_decoder=2e-3", "train.lr_prior=1e-4",
        "train.betas_decoder=[0.5, 0.999]", "train.grad_clip=null", "train.eval_batches=null",
        "train.log_every=10", "train.num_threads=1", *extra])


@pytest.fixture(scope="module")
def pattern_npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("patterns")
    xtr, ytr = _patterns(80, range(5), seed=0)
    xte, yte = _patterns(20, range(5), seed=1)
    np.savez(d / "patterns.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return d / "patterns.npz"


def test_image_model_trains_and_mse_falls(pattern_npz, tmp_path):
    r = _image_recipe(pattern_npz, "train.steps=150", "train.eval_every=150", "train.save_every=150")
    summary = Trainer(r, tmp_path / "run", progress=False).run()
    assert summary["valid_mse_end"] < 0.1 * summary["valid_mse_start"], summary
    # the run is a readable directory: weights, metrics, grids
    for f in ("config.json", "model.safetensors", "metrics.jsonl", "samples.png", "reconstructions.png",
              "chain.png"):
        assert (tmp_path / "run" / f).is_file(), f
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("dec_nll_dim" in rec for rec in recs) and any("valid_mse" in rec for rec in recs)
    # save / load gives the same generator
    m = LatentEBMModel.from_pretrained(tmp_path / "run")
    z = torch.randn(3, 8)
    t = Trainer(r, tmp_path / "run2", progress=False)
    t.model.load_state_dict(m.state_dict())
    torch.testing.assert_close(m.decoder.mean(z), t.model.decoder.mean(z))


def test_anomaly_pipeline_ranks_the_held_out_class_first(pattern_npz, tmp_path):
    """Train without class 4 (a bar); the bar images must score as more anomalous than the squares."""
    from textebm.eval.anomaly import auroc
    from textebm.eval.image_run import evaluate_image_run

    r = _image_recipe(pattern_npz, "data.held_out_class=4", "train.steps=150", "train.eval_every=150",
                      "train.save_every=150")
    t = Trainer(r, tmp_path / "run", progress=False)
    assert not bool((t.data.images.train_labels == 4).any())
    t.run()
    model = LatentEBMModel.from_pretrained(tmp_path / "run").eval()
    rep = evaluate_image_run(model, split="test", seed=0)
    a = rep["anomaly"]
    assert a["positive_rate"] == pytest.approx(0.2)
    assert a["joint"]["auprc"] > 0.8 and a["joint"]["auroc"] > 0.9, a
    assert a["reconstruction"]["auroc"] > 0.8, a
    assert 0 < rep["mse"] < 1
    # a scorer that ignores the image is at chance level: the pipeline's AUROC is not an artefact
    rng = np.random.default_rng(0)
    y = t.data.images.test_labels.numpy()
    assert abs(auroc(rng.standard_normal(len(y)), y) - 0.5) < 0.2


def test_sample_cli_writes_an_image_grid(pattern_npz, tmp_path):
    from PIL import Image

    r = _image_recipe(pattern_npz, "train.steps=2", "train.eval_every=2", "train.save_every=2")
    Trainer(r, tmp_path / "run", progress=False).run()
    out = tmp_path / "grid.png"
    p = subprocess.run([sys.executable, "-m", "textebm", "sample", str(tmp_path / "run"), "-n", "9",
                        "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # 3 x 3 tiles of 8 x 8 with 2-pixel padding around and between: 3 * 8 + 4 * 2 = 32
    assert Image.open(out).size == (32, 32)
    # a long prior chain: 8 rows (chains) x 4 columns (steps 0, 10, 20, 30)
    p = subprocess.run([sys.executable, "-m", "textebm", "chain", str(tmp_path / "run"), "--steps", "30",
                        "--every", "10", "--out", str(tmp_path / "chain.png")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert Image.open(tmp_path / "chain.png").size == (4 * 8 + 5 * 2, 8 * 8 + 9 * 2)
    assert p.stdout.count("\n| ") == 4
    # the latent commands on images: 3 images beside their reconstructions (3 rows of 2), and a path of 5
    np.save(tmp_path / "three.npy", np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32))
    p = subprocess.run([sys.executable, "-m", "textebm", "reconstruct", str(tmp_path / "run"), "--input",
                        str(tmp_path / "three.npy"), "--out", str(tmp_path / "rec.png"), "--scores",
                        "--refine", "5", "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert Image.open(tmp_path / "rec.png").size == (2 * 8 + 3 * 2, 3 * 8 + 4 * 2) and "MSE" in p.stderr
    p = subprocess.run([sys.executable, "-m", "textebm", "interpolate", str(tmp_path / "run"), "--input",
                        str(tmp_path / "three.npy"), "--steps", "5", "--out", str(tmp_path / "path.png"),
                        "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert Image.open(tmp_path / "path.png").size[0] == 5 * 8 + 6 * 2


def test_wrong_image_shape_in_data_is_a_clear_error(tmp_path):
    from textebm.data.images import ImageDataError

    np.savez(tmp_path / "rgb.npz", x_train=np.zeros((40, 8, 8, 3), np.uint8),
             x_test=np.zeros((10, 8, 8, 3), np.uint8))
    r = _image_recipe(tmp_path / "rgb.npz", "train.steps=1")
    with pytest.raises(ImageDataError, match="channels"):
        Trainer(r, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_eval_cli_names_the_missing_inception_file(pattern_npz, tmp_path):
    r = _image_recipe(pattern_npz, "train.steps=1", "train.eval_every=1", "train.save_every=1")
    Trainer(r, tmp_path / "run", progress=False).run()
    p = subprocess.run([sys.executable, "-m", "textebm", "eval", str(tmp_path / "run"), "--inception",
                        str(tmp_path / "nope.pt")], capture_output=True, text=True)
    assert p.returncode == 2 and "inception-2015-12-05.pt" in p.stderr and "no download" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_first_layer_shortcut_matches_the_transposed_convolution():
    torch.manual_seed(1)
    dec = ConvDecoder(latent_dim=6, channels=3, image_size=16, ngf=3)
    z = torch.randn(5, 6)
    torch.testing.assert_close(dec.mean(z), dec.net(z[:, :, None, None]), rtol=1e-5, atol=1e-6)


class _TinyFeatures(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        return x.float().mean(1).flatten(1)[:, :6]


def test_eval_reports_fid_with_a_user_feature_file(pattern_npz, tmp_path):
    from textebm.eval.image_run import evaluate_image_run

    path = tmp_path / "inception-2015-12-05.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated in recent torch; the FID file format is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_TinyFeatures()).save(str(path))
    r = _image_recipe(pattern_npz, "train.steps=1", "train.eval_every=1", "train.save_every=1")
    Trainer(r, tmp_path / "run", progress=False).run()
    model = LatentEBMModel.from_pretrained(tmp_path / "run").eval()
    rep = evaluate_image_run(model, inception=str(path), fid_samples=60, grids_dir=tmp_path / "grids")
    assert math.isfinite(rep["fid"]["value"]) and rep["fid"]["value"] > 0 and rep["fid"]["n_fake"] == 60
    assert {"samples", "reconstructions", "chain"} <= set(rep["grids"])


def test_two_process_ddp_trains_an_image_model(pattern_npz, tmp_path):
    """torchrun with two CPU processes: each rank samples its own shard, ranks stay identical, and the rank-0
    checkpoint samples an image grid in a single process."""
    import os
    from pathlib import Path

    from textebm.config import dump_recipe

    root = Path(__file__).resolve().parents[1]
    r = _image_recipe(pattern_npz, "train.steps=4", "train.eval_every=4", "train.save_every=4",
                      "train.batch_size=16")
    (tmp_path / "r.yaml").write_text(dump_recipe(r))
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(28500 + os.getpid() % 1000), "-m", "textebm", "train", str(tmp_path / "r.yaml"),
                        "--out", str(tmp_path / "ddp"), "--no-progress"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "parameters across 2 ranks: max difference from rank 0 0" in p.stderr, p.stderr[-2000:]
    ckpt = sorted((tmp_path / "ddp" / "checkpoints").glob("ckpt-*.pt"))[-1]
    s = subprocess.run([sys.executable, "-m", "textebm", "sample", str(ckpt), "-n", "4", "--out",
                        str(tmp_path / "g.png")], capture_output=True, text=True, env=env, timeout=300)
    assert s.returncode == 0 and (tmp_path / "g.png").is_file(), s.stderr


def test_image_run_resumes_exactly(pattern_npz, tmp_path):
    """Two steps, stop, resume to four: the same parameters as four steps in one go (data order, noise, Adam)."""
    full = _image_recipe(pattern_npz, "train.steps=4", "train.eval_every=100", "train.save_every=2")
    Trainer(full, tmp_path / "a", progress=False).run()
    half = apply_overrides(full, ["train.steps=2"])
    Trainer(half, tmp_path / "b", progress=False).run()
    (tmp_path / "b" / "recipe.yaml").write_text((tmp_path / "a" / "recipe.yaml").read_text())
    t = Trainer(full, tmp_path / "b", resume=True, progress=False)
    assert t.step == 2
    t.run()
    a = LatentEBMModel.from_pretrained(tmp_path / "a").state_dict()
    b = LatentEBMModel.from_pretrained(tmp_path / "b").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_compiled_image_sampling_gives_the_same_chain(pattern_npz, tmp_path):
    r = _image_recipe(pattern_npz, "train.steps=1", "sampling.compile=default")
    t = Trainer(r, tmp_path / "run", progress=False)
    x = t.data.next().x
    z0 = torch.randn(x.shape[0], 8, generator=torch.Generator().manual_seed(0))
    compiled = t.model.sample_posterior(x, t.model.posterior_chain.replace(n_steps=6, step_size=0.1), z0=z0,
                                        generator=torch.Generator().manual_seed(1))
    t.model.compile_sampling(None)
    eager = t.model.sample_posterior(x, t.model.posterior_chain.replace(n_steps=6, step_size=0.1), z0=z0,
                                        generator=torch.Generator().manual_seed(1))
    assert (eager - z0).abs().max() > 0.05
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
