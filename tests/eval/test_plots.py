"""Pictures and metric logs: plot_run / plot_chain against known files and sizes, MetricsLogger round trips
(JSON lines and TensorBoard event files), and ``textebm plot`` on a real training run."""
import argparse
import json
import math
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest
import torch

from textebm.cli import plot as plot_cli
from textebm.eval import plots
from textebm.extras import MissingExtraError
from textebm.metrics_log import MetricsLogger

from conftest import ROOT

needs_plots = pytest.mark.skipif(find_spec("matplotlib") is None or find_spec("PIL") is None,
                                 reason="needs matplotlib (textebm[plots]) and Pillow")

#: one panel is 640 x 400 pixels, at most three panels a row
W, H = 640, 400


def write_metrics(run_dir, lines):
    """A run directory whose metrics.jsonl holds ``lines`` (dicts are written as JSON, strings as they are)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "".join((json.dumps(l) if isinstance(l, dict) else l) + "\n" for l in lines)
    (run_dir / "metrics.jsonl").write_text(text)
    return run_dir


def train_record(step, **extra):
    return {"step": step, "dec_nll": 40.0 - step, "dec_nll_token": 5.0 - 0.1 * step, "prior_loss": 0.01 * step,
            "f_pos": -0.1, "f_neg": -0.2, "f_gap": 0.1, "grad_norm_decoder": 2.0 + step, "grad_norm_prior": 0.5,
            "lr_decoder": 2e-3, **extra}


def png_size(path):
    """(width, height) of a PNG file, checked to be one by Pillow."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


# ---- plot_run ---------------------------------------------------------------------------------------------
@needs_plots
def test_plot_run_writes_one_png_per_group(tmp_path):
    run = write_metrics(tmp_path / "run", [
        {"step": 0, "valid_recon_nll": 64.2, "valid_recon_nll_token": 5.6, "valid_recon_ppl": 279.8},
        "",  # blank lines are skipped
        *[train_record(s) for s in range(1, 6)],
        {"step": 3, "nan_skip": 1, "sampler": "posterior"},
        {"valid_mi": 9.0},  # no step: ignored
        {"step": 5, "valid_recon_nll": 50.1, "valid_recon_nll_token": 4.4, "valid_mi": 1.5,
         "valid_active_units": 7},
        "   ",
    ])
    paths = plots.plot_run(run)
    out = run / "plots"  # the default directory
    names = ["decoder_nll", "prior_loss", "f_gap", "grad_norms", "validation", "latent"]
    assert paths == [out / f"{n}.png" for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in names)  # no temporary files left
    # panels: decoder NLL per sentence + per token; validation per sentence + per token; latent MI + active units
    sizes = {p.stem: png_size(p) for p in paths}
    assert sizes == {"decoder_nll": (2 * W, H), "prior_loss": (W, H), "f_gap": (W, H), "grad_norms": (W, H),
                     "validation": (2 * W, H), "latent": (2 * W, H)}


@needs_plots
def test_plot_run_groups_without_data_write_nothing(tmp_path):
    run = write_metrics(tmp_path / "run", [
        {"step": 1, "prior_loss": 0.5, "valid_mi": None, "valid_kl": "n/a", "dec_nll": float("nan")},
        {"step": 2, "prior_loss": 0.25, "valid_active_units": True, "grad_norm_prior": math.inf},
        {"step": 3, "nan_skip": 1, "dec_nll": 3.0},
    ])
    (out,) = plots.plot_run(run, tmp_path / "pics")
    assert out == tmp_path / "pics" / "prior_loss.png" and png_size(out) == (W, H)
    assert [p.name for p in (tmp_path / "pics").iterdir()] == ["prior_loss.png"]
    # nothing plottable at all: no files, not even the directory
    nothing = write_metrics(tmp_path / "other", [{"step": 1, "time_step": 0.2}, {"note": "hello"}])
    assert plots.plot_run(nothing) == [] and not (nothing / "plots").exists()


@needs_plots
def test_plot_run_latent_panels_and_image_runs(tmp_path):
    latent = ["valid_mi", "valid_active_units", "valid_active_fraction", "valid_shuffle_gap", "valid_kl",
              "valid_recon_token_acc", "valid_recon_bleu"]
    run = write_metrics(tmp_path / "run", [{"step": s, **{k: float(s) for k in latent}} for s in (0, 10)])
    (path,) = plots.plot_run(run)
    assert path.name == "latent.png" and png_size(path) == (3 * W, 3 * H)  # seven panels: three rows of three
    # an image run: NLL per image and per pixel value, and the MSE
    image = write_metrics(tmp_path / "image", [
        {"step": 1, "dec_nll": 900.0, "dec_nll_dim": 0.9},
        {"step": 1, "valid_recon_nll": 950.0, "valid_recon_nll_dim": 0.95, "valid_mse": 0.01},
    ])
    assert {p.stem: png_size(p) for p in plots.plot_run(image)} == {"decoder_nll": (2 * W, H),
                                                                  "validation": (3 * W, H)}


def test_series_known_answer():
    records = [
        {"step": 3, "x": 30.0}, {"step": 1, "x": 10}, {"step": 2, "x": "bad"}, {"step": 2, "nan_skip": 1, "x": 99.0},
        {"x": 5.0}, {"step": None, "x": 6.0}, {"step": 4, "x": None}, {"step": 5, "x": float("nan")},
        {"step": 3, "x": 31.0},  # a resumed run logs step 3 again: the later value wins
        {"step": 6, "x": True},
    ]
    assert plots.series(records, "x") == ([1.0, 3.0], [10.0, 31.0])
    assert plots.series(records, "missing") == ([], [])


def test_plot_run_bad_files(tmp_path):
    run = write_metrics(tmp_path / "run", [train_record(1), "", "{\"step\": 2, \"dec_nll\": ", train_record(3)])
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 3: not valid JSON"):
        plots.plot_run(run)
    write_metrics(run, [train_record(1), "[1, 2]"])
    with pytest.raises(ValueError, match=r"line 2: expected a JSON object, got list"):
        plots.plot_run(run)
    write_metrics(run, ["", "  "])
    with pytest.raises(ValueError, match="holds no records"):
        plots.plot_run(run)
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found"):
        plots.plot_run(tmp_path / "nope")


def test_missing_matplotlib_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import matplotlib.figure now fails
    with pytest.raises(MissingExtraError, match=r"plotting needs matplotlib.*pip install 'textebm\[plots\]'"):
        plots.plot_chain([1.0, 2.0], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_a_missing_tensorboard_names_tensorboard_not_torch(tmp_path, monkeypatch):
    """torch.utils.tensorboard is importable only with tensorboard installed: the message names what is missing."""
    from textebm.metrics_log import MetricsLogger

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(MissingExtraError, match=r"needs tensorboard, .*pip install 'textebm\[tensorboard\]'"):
        MetricsLogger(tmp_path / "run", ["jsonl", "tensorboard"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_imports_stay_light():
    code = ("import sys, textebm.eval.report, textebm.eval.plots, textebm.cli.plot, textebm.metrics_log; "
            "heavy = [m for m in ('matplotlib', 'torch', 'numpy') if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# ---- plot_chain -------------------------------------------------------------------------------------------
@needs_plots
def test_plot_chain(tmp_path):
    path = plots.plot_chain([3.0, 1.0, -2.5, float("nan"), 4.0], tmp_path / "sub" / "chain.png", title="a chain")
    assert path == tmp_path / "sub" / "chain.png" and png_size(path) == (W, H)
    assert [p.name for p in path.parent.iterdir()] == ["chain.png"]
    assert png_size(plots.plot_chain([7.0], tmp_path / "one.png")) == (W, H)  # a single point is fine
    with pytest.raises(ValueError, match="at least one value"):
        plots.plot_chain([], tmp_path / "empty.png")


# ---- MetricsLogger ----------------------------------------------------------------------------------------
def read_jsonl(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_metrics_logger_jsonl_round_trip(tmp_path):
    with MetricsLogger(tmp_path) as ml:
        ml.log({"step": 1, "loss": torch.tensor(1.5), "acc": np.float32(0.25), "n": np.int64(3),
                "nan": float("nan"), "inf": -math.inf, "tnan": torch.tensor(float("nan")), "sampler": "prior",
                "flag": True})
        ml.log({"step": 2, "loss": 0.75})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 1.5, "acc": 0.25, "n": 3, "nan": None, "inf": None, "tnan": None, "sampler": "prior",
         "flag": True},
        {"step": 2, "loss": 0.75},
    ]
    with MetricsLogger(tmp_path, report_to=["jsonl"]) as ml:  # append: a resumed run continues the file
        ml.log({"step": 3, "loss": 0.5})
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_metrics_logger_flushes_disabled_and_bad_backend(tmp_path):
    ml = MetricsLogger(tmp_path / "a")  # the run directory is created
    ml.log({"step": 1, "loss": 2.0})
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]  # readable before close
    ml.close()
    ml.close()  # a second close does nothing
    with MetricsLogger(tmp_path / "b", report_to=("jsonl", "tensorboard"), enabled=False) as off:  # other ranks
        off.log({"step": 1, "loss": 2.0})
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match=r"'wandb'.*jsonl, tensorboard"):
        MetricsLogger(tmp_path, report_to=("jsonl", "wandb"))


def test_metrics_logger_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, report_to=("jsonl", "tensorboard")) as ml:
        ml.log({"step": 0, "valid_recon_nll": torch.tensor(64.25)})
        for step in (1, 2, 3):
            ml.log({"step": step, "dec_nll": 40.0 - step, "n": np.int64(step * 10), "sampler": "prior",
                    "f_gap": float("nan") if step == 2 else 0.5 * step})
        ml.log({"note": "no step: JSON only", "x": 1.0})
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 5
    (events,) = (tmp_path / "tensorboard").iterdir()
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["dec_nll", "f_gap", "n", "valid_recon_nll"]

    def scalars(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    assert scalars("dec_nll") == [(1, 39.0), (2, 38.0), (3, 37.0)]
    assert scalars("n") == [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert scalars("f_gap") == [(1, 0.5), (3, 1.5)]  # NaN is left out
    assert scalars("valid_recon_nll") == [(0, 64.25)]


# ---- textebm plot -----------------------------------------------------------------------------------------
@needs_plots
def test_plot_command_on_a_training_run(tiny_run, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    plot_cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "pictures"
    args = parser.parse_args(["plot", str(tiny_run), "--out", str(out)])
    assert plot_cli.run(args) == 0
    written = capsys.readouterr().err.split()
    # the tiny run logs every training step and validates at steps 0 and 20; its prior chain's energy profile
    required = {"decoder_nll", "prior_loss", "f_gap", "grad_norms", "validation", "energy_profile"}
    names = {p.stem for p in out.iterdir()}
    assert required <= names <= {spec.name for spec in plots.FIGURES} | {"energy_profile"}
    assert png_size(out / "energy_profile.png") == (W, H)
    assert sorted(written) == sorted(str(out / f"{n}.png") for n in names)
    assert png_size(out / "decoder_nll.png") == (2 * W, H)  # per sentence and per token
    assert png_size(out / "validation.png") == (2 * W, H)
    for n in names:
        png_size(out / f"{n}.png")


@needs_plots
def test_the_energy_profile_is_the_prior_chain_of_the_run(tiny_run, tmp_path, monkeypatch):
    """What is drawn is the trace of the run's own prior chain (its recipe's sampler), K + 1 values; no chain
    for a Gaussian prior, and --chain-steps 0 draws none."""
    from textebm.runs import load_model

    drawn = {}
    real = plots.plot_chain
    monkeypatch.setattr(plots, "plot_chain", lambda trace, path, title=None: drawn.update(trace=trace) or
                        real(trace, path, title))
    path, why = plots.plot_prior_chain(tiny_run, tmp_path, steps=30, n_chains=16, seed=3)
    assert path == tmp_path / "energy_profile.png" and why is None and len(drawn["trace"]) == 31
    model = load_model(tiny_run)
    ref = model.sample_prior(16, model.prior_chain.replace(n_steps=30), generator=torch.Generator().manual_seed(3), trace=True,
                             return_samples=True)
    assert drawn["trace"] == pytest.approx(ref.trace, rel=1e-6)
    monkeypatch.setattr(type(model.prior), "kind", "gaussian")
    assert plots.plot_prior_chain(tiny_run, tmp_path / "g")[0] is None
    parser = argparse.ArgumentParser()
    plot_cli.add_parser(parser.add_subparsers(dest="command"))
    assert plot_cli.run(parser.parse_args(["plot", str(tiny_run), "--out", str(tmp_path / "none"),
                                           "--chain-steps", "0"])) == 0
    assert not (tmp_path / "none" / "energy_profile.png").exists()



@needs_plots
def test_plot_of_a_run_named_with_dollars_and_huge_numbers(tmp_path, capsys):
    """Rows 17 and 18: a run named ``cost $\\frac$`` printed ``\\frac`` (matplotlib's mathtext), metrics of 1e308
    gave "arange: cannot compute length", and an integer above 1e308 an OverflowError."""
    from conftest import run_main

    name = write_metrics(tmp_path / "cost $\\frac$", [train_record(1), train_record(2)])
    code, out, err = run_main(capsys, "plot", name, "--chain-steps", "0")
    assert code == 0, err
    assert (name / "plots" / "decoder_nll.png").is_file()
    huge = write_metrics(tmp_path / "huge", [{"step": 1, "dec_nll": 1e308, "prior_loss": 10 ** 400},
                                             {"step": 2, "dec_nll": -1e308, "prior_loss": 1.0},
                                             {"step": 3, "dec_nll": 2.0, "prior_loss": 0.5}])
    code, out, err = run_main(capsys, "plot", huge, "--chain-steps", "0")
    assert code == 0, err
    assert (huge / "plots" / "decoder_nll.png").is_file() and (huge / "plots" / "prior_loss.png").is_file()
    assert any("3 value(s) beyond" in line for line in err), err
