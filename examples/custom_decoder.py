"""A latent EBM prior inside a decoder you write yourself: only ``LatentEBMPrior`` and ``langevin`` are used.

Model (Pang et al. 2020): p(x, z) = p_alpha(z) p_beta(x | z), p_alpha(z) ∝ exp(f_alpha(z)) N(z; 0, I).
The decoder here is a small MLP with one softmax per word slot of a three-word sentence:
    log p_beta(x | z) = sum_t log softmax(MLP(z)_t)[x_t]      (a SUM over the sentence's words)
Each step of Algorithm 1:
    z+ ~ p(z | x): 20 Langevin steps of size 0.1 on log p_alpha(z) + log p_beta(x | z)   (K1, s1)
    z- ~ p_alpha : 60 Langevin steps of size 0.4 on log p_alpha(z)                         (K0, s0)
    decoder: ascend mean log p_beta(x | z+);   prior: ascend mean f(z+) - mean f(z-).
Prints the reconstruction NLL (nats per sentence) before and after 40 steps, then sentences decoded from
prior samples. Run: python examples/custom_decoder.py   (OMP_NUM_THREADS=1 is fastest for tensors this small)
"""
import torch

from textebm.prior import LatentEBMPrior
from textebm.sampling import langevin

torch.manual_seed(0)
data = [s.split() for s in ["the cat sat", "the dog ran", "a cat ran", "a dog sat", "the bird sang", "my dog sang"]]
words = sorted({w for s in data for w in s})
x = torch.tensor([[words.index(w) for w in s] for s in data])  # (N, 3) word ids


class SlotDecoder(torch.nn.Module):
    """p_beta(x | z) = prod_t softmax(MLP(z)[t])[x_t]: one categorical distribution per word position."""

    def __init__(self, dim, vocab, length=3):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, length * vocab))

    def log_prob(self, x, z):  # (B,): the SUM over the sentence's words
        return self.net(z).view(len(z), x.shape[1], -1).log_softmax(-1).gather(2, x.unsqueeze(2)).sum((1, 2))


prior, decoder = LatentEBMPrior(latent_dim=8, hidden=64), SlotDecoder(8, len(words))
opt = torch.optim.Adam([{"params": prior.parameters(), "lr": 1e-3, "betas": (0.5, 0.999)},
                        {"params": decoder.parameters(), "lr": 3e-2}])
for step in range(41):
    z_pos = langevin(lambda z: prior.log_prob_unnormalized(z) + decoder.log_prob(x, z), prior.sample_reference(len(x)),
                     n_steps=20, step_size=0.1).z  # posterior p(z | x)
    z_neg = langevin(prior.log_prob_unnormalized, prior.sample_reference(len(x)), n_steps=60, step_size=0.4).z
    recon_nll = -decoder.log_prob(x, z_pos).mean()
    opt.zero_grad()
    (recon_nll + prior.f(z_neg).mean() - prior.f(z_pos).mean()).backward()  # decoder loss + prior loss
    opt.step()
    if step % 40 == 0:
        print(f"step {step}: recon_nll {recon_nll.item():.3f}")

z = langevin(prior.log_prob_unnormalized, prior.sample_reference(8), n_steps=60, step_size=0.4).z
for ids in decoder.net(z).view(8, 3, -1).argmax(-1).tolist():
    print("sample:", " ".join(words[i] for i in ids))
