"""Training: Algorithm 1 of Pang et al. (2020) for every decoder.

Per batch x (:func:`~textebm.train.step.train_step`, one readable function):

    z+ ~ p(z | x)       the posterior chain (K1 steps, the recipe's sampler and schedules), from p0, the encoder or,
                        with warm starts, each example's last z+
    z- ~ p_alpha(z)     the prior chain (K0 steps, or the objective's own negatives; none for a Gaussian prior)
    decoder:  minimize  -mean_x log p_beta(x | z+)           (sum over tokens per sentence, mean over the batch)
    prior:    minimize  objective(prior, z+, z-)              (default: mean f(z-) - mean f(z+))

with separate Adam optimizers. Chains run with the model in eval mode (no dropout), so they target the model's own
posterior; the update then runs in train mode. The modules, one job each:

    step.py          the update, its losses and its soundness check (a loss that is NaN, an energy that runs away)
    trainer.py       Trainer: setup from a recipe, chains and their stores, checkpoints, the loop; train()
    validation.py    what a validation measures (reconstruction, latent diagnostics, prior fit)
    schedules.py     what changes over training steps (learning rates, the prior term's weight, posterior noise)
    report.py        what training prints
    signals.py       SIGINT / SIGTERM: finish the step, checkpoint, stop
    environment.py   devices, seeds, deterministic kernels, the step clock

The data module (:mod:`textebm.data.modules`) hides whether x is text or images; run directories and checkpoints are
:mod:`textebm.runs` and :mod:`textebm.rundir`; several processes under ``torchrun`` are :mod:`textebm.distributed`.
Against posterior collapse a recipe can anneal the prior term of the posterior (``train.anneal``), pretrain as an
autoencoder then reset the decoder (``train.pretrain_steps``, Li et al. 2019), warm-start each example's chain
(``sampling.posterior_warm_start``, Han et al. 2017), drop input words (``model.word_dropout``, Bowman et al. 2016),
and schedule the posterior chain's step size and noise (``sampling.posterior_*``, ``train.posterior_noise_to``).
"""
from ..runs import list_checkpoints, load_latest_checkpoint
from .environment import Elapsed, StepClock, resolve_device, seed_everything, use_deterministic_kernels
from .report import prior_fit_line, report_lines, validation_line
from .schedules import lr_lambda, posterior_noise, prior_weight
from .step import TrainingDivergedError, TrainingLoss, check_finite, train_step
from .trainer import MAX_SKIPS_IN_A_ROW, Trainer, train
from .validation import VALID_SEED, Validator

__all__ = ["Trainer", "train", "train_step", "TrainingLoss", "TrainingDivergedError", "check_finite", "Validator",
           "VALID_SEED", "MAX_SKIPS_IN_A_ROW", "lr_lambda", "prior_weight", "posterior_noise", "report_lines",
           "validation_line", "prior_fit_line", "resolve_device", "seed_everything", "use_deterministic_kernels",
           "StepClock", "Elapsed", "list_checkpoints", "load_latest_checkpoint"]
