"""One-layer LSTM decoder p_beta(x | z) over tokens (the text decoder of Pang et al. 2020, Table 6).

z conditions the LSTM twice, as in the text-VAE decoders the paper builds on (He et al. 2019):
    c_0 = W_z z + b,  h_0 = tanh(c_0),
    input_t = [embed(x_{t-1}); z]   (z concatenated to every input embedding).
log p_beta(x | z) = sum_t log softmax(W_o h_t)[x_t] over the real tokens of each sentence (the end-of-sentence
token included, padding excluded).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import register_decoder, check_latent, check_tokens, rnn_backward_mode
from .ops import TokenSelection, lstm_recurrence, select_tokens, token_log_likelihood, word_dropout


@dataclass
class TokenContext:
    """What the posterior sampler reuses across Langevin steps: embedded inputs, targets and the mask."""

    emb: torch.Tensor       # (B, T-1, E) embedded (and dropped-out) inputs
    targets: torch.Tensor   # (B, T-1) next tokens
    mask: torch.Tensor      # (B, T-1) float, 1 for real tokens
    proj: Optional[torch.Tensor] = None  # (B, T-1, 4H) W_ie emb + biases (unrolled path only)
    selection: Optional[TokenSelection] = None  # real positions, found once per batch


@register_decoder("lstm", modality="text")
class LSTMDecoder(nn.Module):
    """LSTM language model conditioned on a latent code.

    Args:
        vocab_size, latent_dim: sizes.
        embed_dim, hidden_dim: embedding and LSTM sizes (paper: SNLI 256/256, PTB 128/512, Yahoo 512/1024).
        dropout_in, dropout_out: dropout on input embeddings and on LSTM outputs.
        pad_id, bos_id, eos_id, unk_id: special token ids (from the tokenizer).
        init_range: parameters start uniform in (-init_range, init_range) (0.1 in the paper's setup).
        word_dropout: in training mode, replace this fraction of the input words by ``<unk>`` (Bowman et al.
            2016), so that the decoder must take what it cannot see from z.
        impl: ``fused`` runs ``nn.LSTM`` (cuDNN on GPU), ``unrolled`` a loop over time that reuses the
            embeddings' input projection across Langevin steps (faster on CPU), ``auto`` picks by device.
            Both compute the same function with the same parameters.
    """

    def __init__(self, vocab_size: int, latent_dim: int, embed_dim: int = 128, hidden_dim: int = 512,
                 dropout_in: float = 0.5, dropout_out: float = 0.5, pad_id: int = 0, bos_id: int = 2,
                 eos_id: int = 3, init_range: float = 0.1, impl: str = "auto", word_dropout: float = 0.0,
                 unk_id: int = 1):
        super().__init__()
        self.vocab_size, self.latent_dim = int(vocab_size), int(latent_dim)
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = int(pad_id), int(bos_id), int(eos_id), int(unk_id)
        if impl not in ("auto", "fused", "unrolled"):
            raise ValueError(f"impl must be auto, fused or unrolled; got {impl!r}")
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        self.impl, self.word_dropout, self.init_range = impl, float(word_dropout), float(init_range)
        self.config = dict(vocab_size=vocab_size, latent_dim=latent_dim, embed_dim=embed_dim,
                           hidden_dim=hidden_dim, dropout_in=dropout_in, dropout_out=dropout_out,
                           pad_id=pad_id, bos_id=bos_id, eos_id=eos_id, init_range=init_range,
                           word_dropout=word_dropout, unk_id=unk_id)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.z_to_c = nn.Linear(latent_dim, hidden_dim)
        self.lstm = nn.LSTM(embed_dim + latent_dim, hidden_dim, num_layers=1, batch_first=True)
        self.drop_in = nn.Dropout(dropout_in)
        self.drop_out = nn.Dropout(dropout_out)
        self.out = nn.Linear(hidden_dim, vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter uniform in (-init_range, init_range), the padding embedding 0 (in place)."""
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-self.init_range, self.init_range)
            self.embed.weight[self.pad_id].zero_()

    # ---- likelihood ------------------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor, static: bool = False) -> TokenContext:
        """Embed the inputs once per batch (z does not enter here); word dropout applies in training mode.

        On the unrolled path the input-to-hidden projection of the embeddings, W_ie e_t + b, is computed here
        too, so each posterior Langevin step only adds z's contribution W_iz z as a per-sentence bias. With
        ``static`` every position reaches the output layer (padding weighted by 0): shapes then depend only on
        x's shape, as a captured chain needs, and nothing is read back to the host.
        """
        check_tokens(x)
        inputs, targets = x[:, :-1], x[:, 1:]
        if self.training:
            inputs = word_dropout(inputs, self.word_dropout, self.unk_id, self.pad_id)
        emb = self.drop_in(self.embed(inputs))
        proj = None
        if self._use_unrolled(emb):
            E = emb.shape[-1]
            proj = torch.addmm(self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0, emb.reshape(-1, E),
                               self.lstm.weight_ih_l0[:, :E].t()).view(emb.shape[0], emb.shape[1], -1)
        mask = (targets != self.pad_id).to(self.out.weight.dtype)
        return TokenContext(emb=emb, targets=targets, mask=mask, proj=proj,
                            selection=select_tokens(targets, mask, static=static))

    def _use_unrolled(self, emb: torch.Tensor) -> bool:
        impl = self.impl
        return impl == "unrolled" or (impl == "auto" and emb.device.type == "cpu")

    def _hidden(self, ctx: TokenContext, z: torch.Tensor) -> torch.Tensor:
        """LSTM outputs (B, T-1, H) given the prepared inputs and z."""
        c0 = self.z_to_c(z)
        h0 = torch.tanh(c0)
        if ctx.proj is not None:
            out = self._unrolled(ctx.proj, z, h0, c0)
        else:
            emb = ctx.emb
            B, T, _ = emb.shape
            inp = torch.cat([emb, z.unsqueeze(1).expand(B, T, z.shape[1])], dim=-1)
            with rnn_backward_mode(self.lstm):  # cuDNN's RNN backward needs a training-mode forward
                out, _ = self.lstm(inp, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        return self.drop_out(out)

    def _unrolled(self, proj: torch.Tensor, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The same recurrence as ``nn.LSTM`` (gate order i, f, g, o) written as a loop over time.

        gates_t = proj_t + W_iz z + W_hh h_{t-1};  c_t = s(f) c_{t-1} + s(i) tanh(g);  h_t = s(o) tanh(c_t).
        The loop and its backward are hand-written (:func:`~textebm.decoders.ops.lstm_recurrence`): they compute
        only the gradients that are asked for (z's, while sampling), where the fused CPU kernel's backward always
        computes every weight gradient too.
        """
        zb = z @ self.lstm.weight_ih_l0[:, self.lstm.input_size - z.shape[1]:].t()
        return lstm_recurrence(proj, zb, h, c, self.lstm.weight_hh_l0)

    def token_log_probs(self, ctx: TokenContext, z: torch.Tensor) -> torch.Tensor:
        """(B, T-1) log p(x_t | x_<t, z), zero at padding."""
        check_latent(z, self.latent_dim, ctx.targets.shape[0], "LSTMDecoder")
        logits = self.out(self._hidden(ctx, z))
        nll = F.cross_entropy(logits.transpose(1, 2), ctx.targets, reduction="none")
        return -nll * ctx.mask

    def log_prob_prepared(self, ctx: TokenContext, z: torch.Tensor) -> torch.Tensor:
        """Sum over real tokens of log p(x_t | x_<t, z): only unpadded positions reach the output layer."""
        check_latent(z, self.latent_dim, ctx.targets.shape[0], "LSTMDecoder")
        return token_log_likelihood(self._hidden(ctx, z), self.out, ctx.targets, ctx.mask, ctx.selection)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_beta(x | z) per sentence, shape (batch,): the sum over real tokens (padding masked)."""
        return self.log_prob_prepared(self.prepare(x), z)

    # ---- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: torch.Tensor, max_len: int = 40, greedy: bool = False, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, generator: Optional[torch.Generator] = None) -> List[List[int]]:
        """Decode token ids (without <s> and </s>) for each row of z, batched, stopping at </s> or max_len.

        Greedy takes the arg-max; otherwise tokens are drawn from softmax(logits / temperature), optionally
        restricted to the top-k tokens and/or the smallest set with cumulative probability >= top_p (nucleus).
        """
        check_latent(z, self.latent_dim, who="LSTMDecoder.generate")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        B = z.shape[0]
        c = self.z_to_c(z)
        h = torch.tanh(c)
        state = (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous())
        tok = torch.full((B,), self.bos_id, dtype=torch.long, device=z.device)
        done = torch.zeros(B, dtype=torch.bool, device=z.device)
        out = torch.full((B, max_len), self.pad_id, dtype=torch.long, device=z.device)
        for t in range(max_len):
            inp = torch.cat([self.embed(tok), z], dim=-1).unsqueeze(1)
            o, state = self.lstm(inp, state)
            logits = self.out(o.squeeze(1))
            tok = sample_next(logits, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
                              generator=generator)
            tok = torch.where(done, torch.full_like(tok, self.eos_id), tok)
            out[:, t] = tok
            done |= tok == self.eos_id
            if bool(done.all()):
                break
        return strip_eos(out.tolist(), self.eos_id, self.pad_id)


def sample_next(logits: torch.Tensor, greedy: bool = False, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick one token per row from (B, V) logits: arg-max, or a draw after temperature/top-k/nucleus filtering."""
    if greedy:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first token is always kept)
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def strip_eos(rows: List[List[int]], eos_id: int, pad_id: int) -> List[List[int]]:
    res = []
    for r in rows:
        cut = r.index(eos_id) if eos_id in r else len(r)
        res.append([t for t in r[:cut] if t != pad_id])
    return res
