"""The prior and a sampler on their own (the README's first example): nothing beyond `pip install textebm`."""
import torch

from textebm import LatentEBMPrior, langevin
from textebm.sampling import MALA, Schedule, run_chain

torch.manual_seed(0)
prior = LatentEBMPrior(latent_dim=16)              # f_alpha: 16 -> 200 -> 200 -> 1, LeakyReLU(0.2)
z0 = prior.sample_reference(64)                    # z ~ N(0, sigma0^2 I)
out = langevin(prior.log_prob_unnormalized, z0, n_steps=60, step_size=0.4, trace=True)
z = out.z                                          # (64, 16) samples of p_alpha
print(out.trace[0], out.trace[-1])                 # mean log-density at the start and the end
loss = prior.f(z).mean()                           # e.g. the negative-phase term of the prior's loss
log_z, se = prior.log_partition(10_000)            # Monte Carlo log Z(alpha) with its standard error
print(f"log Z = {log_z:.4f} +- {se:.4f}")

out = run_chain(MALA(), prior.log_prob_unnormalized, z0, n_steps=100, step_size=Schedule("linear", 0.5, 0.1))
print(f"MALA acceptance rate {out.stats['accept_rate']:.2f}")
