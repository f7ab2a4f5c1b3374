"""A straightforward implementation of one training iteration, the baseline the benchmarks compare against.

Written the way the paper's one-page listing is: a Python loop of ``torch.autograd.grad`` calls on
energies, the decoder run from scratch at every Langevin step (embeddings recomputed, the fused ``nn.LSTM``),
nothing cached. It uses the same parameters and the same noise stream as the library's fast path, so the two can
be compared number for number (``tests/sampling/test_fast_path.py``).
"""
from __future__ import annotations

import torch


def reference_decoder_log_prob(decoder, x, z):
    """log p_beta(x | z) with the fused LSTM, recomputing everything (no ``prepare``). The one-layer LSTM runs in
    training mode (the same function; cuDNN backpropagates only through a training-mode forward), the decoder's
    dropout modules keep their mode."""
    inputs, targets = x[:, :-1], x[:, 1:]
    emb = decoder.drop_in(decoder.embed(inputs))
    B, T, _ = emb.shape
    c0 = decoder.z_to_c(z)
    h0 = torch.tanh(c0)
    inp = torch.cat([emb, z.unsqueeze(1).expand(B, T, z.shape[1])], -1)
    was = decoder.lstm.training
    decoder.lstm.train()
    out, _ = decoder.lstm(inp, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
    decoder.lstm.train(was)
    logits = decoder.out(decoder.drop_out(out))
    logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logp * (targets != decoder.pad_id).float()).sum(-1)


def reference_sample_prior(prior, z, n_steps, step_size, generator=None):
    s2, sig2 = step_size ** 2, prior.sigma0 ** 2
    for _ in range(n_steps):
        z = z.detach().requires_grad_(True)
        en = -prior.f(z).sum()                                   # energy of the tilt
        z_grad = torch.autograd.grad(en, z)[0]
        z = z - 0.5 * s2 * (z_grad + z / sig2) + step_size * torch.randn(z.shape, generator=generator,
                                                                          device=z.device)
    return z.detach()


def reference_sample_posterior(prior, decoder, x, z, n_steps, step_size, generator=None):
    s2, sig2 = step_size ** 2, prior.sigma0 ** 2
    for _ in range(n_steps):
        z = z.detach().requires_grad_(True)
        g_log_lkhd = -reference_decoder_log_prob(decoder, x, z).sum()
        en = -prior.f(z).sum()
        z_grad = torch.autograd.grad(g_log_lkhd + en, z)[0]
        z = z - 0.5 * s2 * (z_grad + z / sig2) + step_size * torch.randn(z.shape, generator=generator,
                                                                          device=z.device)
    return z.detach()


def reference_train_step(model, opt_dec, opt_prior, x, k0, s0, k1, s1, generator=None):
    """Algorithm 1, one iteration: posterior and prior Langevin, then one Adam step for each network."""
    prior, dec = model.prior, model.decoder
    model.eval()
    z_pos = reference_sample_posterior(prior, dec, x, prior.sample_reference(x.shape[0], generator=generator),
                                       k1, s1, generator)
    z_neg = reference_sample_prior(prior, prior.sample_reference(x.shape[0], generator=generator), k0, s0, generator)
    model.train()
    opt_dec.zero_grad()
    opt_prior.zero_grad()
    loss_dec = -reference_decoder_log_prob(dec, x, z_pos).mean()
    loss_prior = prior.f(z_neg).mean() - prior.f(z_pos).mean()
    (loss_dec + loss_prior).backward()
    opt_dec.step()
    opt_prior.step()
    return float(loss_dec.detach()), float(loss_prior.detach())
