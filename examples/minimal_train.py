"""The quickstart model trained with textebm's public API in one loop: Algorithm 1 of Pang et al. (2020).

Each step:
    z+ ~ p(z | x)      the recipe's posterior chain on log p_alpha(z) + log p_beta(x | z)
    z- ~ p_alpha(z)    the recipe's prior chain on log p_alpha(z) = f_alpha(z) - |z|^2 / 2 (+ const)
    decoder: minimize -mean log p_beta(x | z+)          prior: minimize mean f(z-) - mean f(z+)     (eq. 11)
                                                               + lambda mean |grad_z f(z+)|^2 (the recipe's penalty)
each with its own Adam and its gradients clipped, as ``textebm train`` does. Prints the validation reconstruction NLL
(nats per sentence) that ``textebm train`` logs as ``valid_recon_nll``, at the start and the end.

Run: python examples/minimal_train.py [STEPS [SEED]]   (default 300 and the recipe's seed; about a minute per 100
     steps on one core)
Compare: textebm train quickstart --set train.steps=300 --set train.eval_every=300 [--set seed=SEED] --out runs/q300
"""
import sys

import torch

from textebm.config import apply_overrides, load_recipe
from textebm.data.modules import build_data
from textebm.model import build_model
from textebm.train import Validator, seed_everything

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
seed = [f"seed={int(sys.argv[2])}"] if len(sys.argv) > 2 else []
recipe = apply_overrides(load_recipe("quickstart"), [f"train.steps={steps}", "train.latent_batches=0",
                                                     "train.prior_fit_samples=0", *seed])
t = recipe.train
torch.set_num_threads(1)
seed_everything(recipe.seed)                     # python, numpy and torch, as textebm train seeds them

data = build_data(recipe)                        # the bundled grammar corpus, batched by length
model = build_model(recipe, data.tokenizer)      # LSTM decoder + latent EBM prior, with the recipe's chains
opt_dec = torch.optim.Adam(model.decoder.parameters(), lr=t.lr_decoder, betas=tuple(t.betas_decoder))
opt_prior = torch.optim.Adam(model.prior.parameters(), lr=t.lr_prior, betas=tuple(t.betas_prior))
gen = torch.Generator().manual_seed(recipe.seed)  # the chains' noise, seeded as textebm train seeds it
lam = recipe.prior.objective_args.get("grad_penalty", 0.0)  # keeps f bounded (Kumar et al. 2019, eq. 8)
validate = Validator(recipe, data, torch.device("cpu"))  # the same validation chains as textebm train
print(f"step 0: validation reconstruction NLL {validate(model, 0)['valid_recon_nll']:.3f} nats/sentence")

for step in range(1, steps + 1):
    x = data.next().x
    model.eval()                                          # chains target the model itself: no dropout
    z_pos = model.sample_posterior(x, generator=gen)      # z+ ~ p(z | x)
    z_neg = model.sample_prior(x.shape[0], generator=gen)  # z- ~ p_alpha(z)
    model.train()
    dec_loss = -model.decoder.log_prob(x, z_pos).mean()   # log p_beta(x | z+) sums over tokens
    prior_loss = model.prior.f(z_neg).mean() - model.prior.f(z_pos).mean()
    z_at = z_pos.detach().requires_grad_(True)
    (grad_f,) = torch.autograd.grad(model.prior.f(z_at).sum(), z_at, create_graph=True)
    penalty = lam * grad_f.pow(2).sum(-1).mean()
    opt_dec.zero_grad()
    opt_prior.zero_grad()
    (dec_loss + prior_loss + penalty).backward()
    torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), t.grad_clip)
    torch.nn.utils.clip_grad_norm_(model.prior.parameters(), t.grad_clip)
    opt_dec.step()
    opt_prior.step()
    if step % 100 == 0 or step == steps:
        print(f"step {step}: decoder NLL {dec_loss.item():.2f}, f(z+) - f(z-) {-prior_loss.item():.2f}")

print(f"step {steps}: validation reconstruction NLL {validate(model, steps)['valid_recon_nll']:.3f} nats/sentence")
