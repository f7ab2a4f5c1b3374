"""Line plots as PNG files, drawn with matplotlib (the optional ``[plots]`` extra).

* :func:`plot_chain`: the energy profile of a sampler chain (``textebm chain --out plot.png``).
* :func:`plot_run`: the training curves, validation curves and latent diagnostics of a run, read from its
  ``metrics.jsonl`` (``textebm plot RUN``).

matplotlib is imported inside the functions, so importing this module costs nothing. Figures are
``matplotlib.figure.Figure`` objects on an Agg canvas: no display is needed and pyplot's global state (the
current figure, the interactive backend) is never touched. Every panel is ``PANEL_INCHES`` at ``DPI``, at most
``MAX_COLUMNS`` panels a row, so a figure of n panels is ``min(n, 3) * 640`` by ``ceil(n / 3) * 400`` pixels.
PNGs are written atomically (a temporary file beside the target, then ``os.replace``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..extras import require
from ..files import make_dirs, write_file
from ..metrics_log import METRICS_FILE, read_records

#: width and height of one panel, in inches
PANEL_INCHES = (6.4, 4.0)
#: pixels per inch of the written PNGs
DPI = 100
#: panels per row of a figure
MAX_COLUMNS = 3
#: a curve with at most this many points is drawn with a marker at every point
MARKER_MAX_POINTS = 40


# ---- what plot_run draws ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Panel:
    """One set of axes: the curves (metrics.jsonl keys) that share its y axis; the legend names each curve by
    its :data:`LEGEND` entry, else by its key.

    ``title`` and ``ylabel`` may contain ``{example}``, filled with "sentence" or "image" by the kind of run.
    """
    title: str
    ylabel: str
    curves: Tuple[str, ...]
    log_y: bool = False


@dataclass(frozen=True)
class FigureSpec:
    """One PNG (``name``.png): its panels; panels without data are left out, a figure without any is not written."""
    name: str
    title: str
    panels: Tuple[Panel, ...]


FIGURES: Tuple[FigureSpec, ...] = (
    FigureSpec("decoder_nll", "decoder NLL -log p(x | z+) on training batches, z+ from the posterior chain", (
        Panel("per {example}", "nats/{example}", ("dec_nll",)),
        Panel("per token (</s> included)", "nats/token", ("dec_nll_token",)),
        Panel("per pixel value", "nats/pixel value", ("dec_nll_dim",)),
    )),
    FigureSpec("prior_loss", "prior loss on training batches", (
        Panel("the objective's loss of the prior (MLE: mean f(z-) - mean f(z+))", "prior loss", ("prior_loss",)),
    )),
    FigureSpec("f_gap", "energy gap of the prior on training batches", (
        Panel("f at posterior samples z+ and prior samples z-", "mean f(z) (unnormalized log-density, nats)",
              ("f_gap", "f_pos", "f_neg")),
    )),
    FigureSpec("grad_norms", "gradient norms (before clipping)", (
        Panel("total L2 norm of the gradients", "L2 norm (log scale)", ("grad_norm_decoder", "grad_norm_prior"),
              log_y=True),
    )),
    FigureSpec("validation", "validation reconstruction: -log p(x | z+) at one posterior sample (fixed seed)", (
        Panel("reconstruction NLL per {example}", "nats/{example}", ("valid_recon_nll",)),
        Panel("reconstruction NLL per token (</s> included)", "nats/token", ("valid_recon_nll_token",)),
        Panel("reconstruction NLL per pixel value", "nats/pixel value", ("valid_recon_nll_dim",)),
        Panel("reconstruction MSE |x - g(z+)|^2", "squared error per pixel value", ("valid_mse",)),
    )),
    FigureSpec("latent", "latent diagnostics on validation data", (
        Panel("mutual information I(x; z)", "nats", ("valid_mi",)),
        Panel("active units", "latent dimensions", ("valid_active_units",)),
        Panel("active units (fraction)", "fraction of latent dimensions", ("valid_active_fraction",)),
        Panel("shuffle gap: recon NLL with shuffled z - with own z", "nats", ("valid_shuffle_gap",)),
        Panel("KL divergence", "nats", ("valid_kl",)),
        Panel("reconstruction token accuracy", "fraction of tokens", ("valid_recon_token_acc",)),
        Panel("reconstruction BLEU", "BLEU", ("valid_recon_bleu",)),
    )),
)

#: legend labels of the curves that share a panel with others
LEGEND = {
    "f_gap": "f_gap = mean f(z+) - mean f(z-)",
    "f_pos": "f_pos = mean f(z+), posterior samples",
    "f_neg": "f_neg = mean f(z-), prior samples",
    "grad_norm_decoder": "decoder",
    "grad_norm_prior": "prior",
}

#: keys that only image runs write; their presence makes ``{example}`` "image"
IMAGE_KEYS = ("dec_nll_dim", "valid_recon_nll_dim", "valid_mse")


# ---- reading metrics.jsonl --------------------------------------------------------------------------------
def read_metrics(path) -> List[dict]:
    """The records of a ``metrics.jsonl`` (:func:`textebm.metrics_log.read_records`: blank lines and a torn last
    line are skipped, the latter with a warning).

    Raises FileNotFoundError when the file is missing, ValueError (naming the file and the line number) for a
    line that is not a JSON object, and ValueError for a file without records.
    """
    path = Path(path)
    records = read_records(path)
    if not records:
        raise ValueError(f"{path} holds no records: nothing to plot")
    return records


#: values beyond this magnitude are left out of a plot (an axis cannot span them: matplotlib's tick locator
#: overflows near 1e308), as non-finite ones are
MAX_PLOT_VALUE = 1e200


def _number(v) -> Optional[float]:
    """``v`` as a float of magnitude at most :data:`MAX_PLOT_VALUE`, or None for anything else (None, strings,
    booleans, NaN, infinities, integers or floats too large to draw)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, int) and abs(v) > MAX_PLOT_VALUE:  # float(v) could overflow
        return None
    v = float(v)
    if not math.isfinite(v) or abs(v) > MAX_PLOT_VALUE:
        return None
    return v


def plain_text(text: str) -> str:
    """``text`` for a matplotlib title or label as it is: ``$`` would start mathtext (a run named
    ``cost $\\frac$`` would be typeset, or fail to parse)."""
    return str(text).replace("$", r"\$")


def series(records: Sequence[dict], key: str) -> Tuple[List[float], List[float]]:
    """(steps, values) of ``key`` over the records, in step order.

    Records without a numeric ``step`` or with ``nan_skip`` are ignored, and so is a value that is not a finite
    number. A step logged twice (a resumed run repeats the steps after its last checkpoint) keeps the later value.
    """
    by_step: Dict[float, float] = {}
    for rec in records:
        step, value = _number(rec.get("step")), _number(rec.get(key))
        if step is not None and value is not None and "nan_skip" not in rec:
            by_step[step] = value
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


# ---- drawing ----------------------------------------------------------------------------------------------
def _figure(n_panels: int, title: Optional[str]):
    """An Agg-backed figure of ``n_panels`` axes in rows of at most MAX_COLUMNS; returns (figure, axes)."""
    figure = require("matplotlib.figure", "plotting", "plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    cols = min(n_panels, MAX_COLUMNS)
    rows = math.ceil(n_panels / cols)
    fig = figure.Figure(figsize=(cols * PANEL_INCHES[0], rows * PANEL_INCHES[1]), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    return fig, axes[:n_panels]


def _draw(ax, xs: Sequence[float], ys: Sequence[float], label: Optional[str] = None) -> None:
    """One curve; short ones get a marker at every point, so a single point is visible too."""
    ax.plot(xs, ys, label=label, marker="o" if len(xs) <= MARKER_MAX_POINTS else None, markersize=3, linewidth=1.2)


def _save(fig, path, root=None) -> Path:
    """Write ``fig`` to ``path`` as PNG through :func:`textebm.files.write_file` (atomically, never through a
    link; with ``root``, the run directory, no folder below it may be a link); parent directories are created."""
    return write_file(path, lambda fh: fig.savefig(fh, format="png"), root=root)


def plot_chain(trace: Sequence[float], path, title: Optional[str] = None, root=None) -> Path:
    """The energy profile of a sampler chain as a PNG: the mean log-density at every step (``trace[k]`` at step
    k, index 0 = the start, as in ``Samples.trace``). Non-finite values leave gaps. Returns the path."""
    ys = [float(v) for v in trace]
    if not ys:
        raise ValueError("plot_chain needs a trace with at least one value")
    fig, (ax,) = _figure(1, plain_text(title) if title else "energy profile of the sampler chain")
    _draw(ax, range(len(ys)), ys)
    ax.set_xlabel("sampler step")
    ax.set_ylabel("mean log-density (unnormalized, nats)")
    ax.grid(alpha=0.3)
    return _save(fig, path, root)


def plot_run(run_dir, out_dir=None) -> List[Path]:
    """One PNG per group of curves of :data:`FIGURES` that has data, from ``run_dir/metrics.jsonl``, written to
    ``out_dir`` (default ``run_dir/plots``) as ``<name>.png``. Returns the written paths (none when no known
    metric has data); errors as in :func:`read_metrics`."""
    from ..rundir import check_recovered

    run_dir = Path(run_dir)
    check_recovered(run_dir)
    records = read_metrics(run_dir / METRICS_FILE)
    root = run_dir if out_dir is None else None
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    huge = sum(1 for rec in records for v in rec.values() if not isinstance(v, bool) and isinstance(v, (int, float))
               and _number(v) is None and (isinstance(v, int) or math.isfinite(v)))
    if huge:
        import sys

        print(f"warning: {run_dir / METRICS_FILE}: {huge} value(s) beyond ±{MAX_PLOT_VALUE:g} left out of the plots "
              f"(no axis can span them)", file=sys.stderr)
    example = "image" if any(k in rec for rec in records for k in IMAGE_KEYS) else "sentence"
    written = []
    for spec in FIGURES:
        panels = []
        for panel in spec.panels:
            curves = [(LEGEND.get(key, key), *series(records, key)) for key in panel.curves]
            curves = [c for c in curves if c[1]]
            if curves:
                panels.append((panel, curves))
        if not panels:
            continue
        fig, axes = _figure(len(panels), f"{spec.title}\nrun {plain_text(run_dir.resolve().name)}")
        for ax, (panel, curves) in zip(axes, panels):
            for label, xs, ys in curves:
                _draw(ax, xs, ys, label)
            ax.set_title(panel.title.format(example=example), fontsize="medium")
            ax.set_xlabel("training step")
            ax.set_ylabel(panel.ylabel.format(example=example))
            if panel.log_y:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        written.append(_save(fig, out_dir / f"{spec.name}.png", root))
    return written


def plot_prior_chain(run, out_dir=None, steps: int = 200, n_chains: int = 64, seed: int = 0):
    """The energy profile of the run's prior chain: ``n_chains`` chains of ``steps`` steps of the recipe's prior
    sampler and step size from p0, their mean log p_alpha(z) (unnormalized) at every step, drawn by
    :func:`plot_chain` into ``out_dir/energy_profile.png`` (default ``RUN/plots``). Returns (path or None, why):
    None for a Gaussian prior (exact draws, no chain) or a run with no model yet."""
    import torch

    from ..runs import is_saved_model, list_checkpoints, load_model

    run = Path(run)
    if not (run.is_file() or is_saved_model(run) or list_checkpoints(run)):
        return None, f"{run} holds no model yet: no prior chain drawn"
    model = load_model(run)
    if model.prior.fixed or model.prior.kind == "gaussian":
        return None, "the Gaussian prior is sampled exactly: no chain to draw"
    gen = torch.Generator().manual_seed(seed)
    out = model.sample_prior(n_chains, model.prior_chain.replace(n_steps=steps), generator=gen, trace=True,
                             return_samples=True)
    name = (run.parent if run.is_file() else run).resolve().name
    root = None if out_dir is not None else (run.parent if run.is_file() else run)
    out_dir = Path(out_dir) if out_dir is not None else root / "plots"
    make_dirs(out_dir, root)  # inside the run: no folder on the way may be a link
    path = plot_chain(out.trace, out_dir / "energy_profile.png",
                      title=f"prior chain of {name}: {n_chains} chains, {steps} steps, seed {seed}")
    return path, None

