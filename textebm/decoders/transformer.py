"""Transformer decoder p_beta(x | z): a causal language model (via ``transformers``) conditioned on z.

z enters as learned prefix embeddings in front of the tokens (a soft prompt computed from z; compare the
latent "memory" vectors of Optimus, Li et al. 2020, which every layer attends to):

    prefix(z) = reshape(W_p z + b_p, (n_prefix, n_embd))
    inputs    = [prefix_1(z), ..., prefix_P(z), e(<s>) + u(z), e(x_1) + u(z), ..., e(x_{T-1}) + u(z)]
    log p_beta(x | z) = sum_{t=1..T} m_t log softmax(W_o h_{P+t-1} + b_o)[x_t]

where e is the LM's token embedding, u(z) = W_u z + b_u is added to every token position only when
``add_to_inputs`` is true (otherwise u = 0), h are the LM's final hidden states, and m_t masks padding.
Positions run 0 .. P + T - 1 from the first prefix vector, so right padding leaves every real position
where it would be without padding. Every layer attends to the prefix, so every layer depends on z: a
posterior Langevin step re-runs the whole network, and :meth:`TransformerDecoder.prepare` caches only what
does not depend on z (token embeddings, masks, positions, targets).

The LM is either a GPT-2 built from sizes (randomly initialized) or any local causal-LM directory written by
``save_pretrained`` (loaded with ``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)``).
With a pretrained model the run's vocabulary must be that model's vocabulary (token id i must mean the same
token to both): the model's own tokenizer (``data.tokenizer: hf``, which passes ``added_tokens``: the LM's
embeddings then grow by the rows of the tokens the run added, such as a padding token), or a run vocabulary of
exactly the model's size. The pretrained weights can stay frozen (``freeze_lm``), or frozen under low-rank
adapters that train (``lora``, through ``peft``; Hu et al. 2021): z always enters through the prefix (and
``add_to_inputs``), which train in every case.

Cost of a posterior step: the posterior chain differentiates log p_beta(x | z) with respect to z, which runs the
whole LM forward and back to its inputs at every Langevin step, frozen weights or not (freezing saves the weight
gradients of the training update, not the chain's work). A step costs about one forward and one input-gradient
backward pass, ~4 N B T multiply-adds for N LM weights and B sentences of T tokens: K1 steps per training batch
cost about (2/3) K1 training steps of the LM alone (docs/custom_decoder.md has measurements).
"""
from __future__ import annotations

import inspect
import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..extras import require
from .base import register_decoder, check_latent, check_tokens
from .lstm import sample_next, strip_eos
from .ops import TokenSelection, select_tokens, token_log_likelihood, word_dropout


@dataclass
class PrefixContext:
    """What posterior Langevin reuses across steps: everything that does not depend on z."""

    emb: torch.Tensor             # (B, T-1, E) token embeddings of the inputs <s> x_1 .. x_{T-2}
    targets: torch.Tensor         # (B, T-1) next tokens
    mask: torch.Tensor            # (B, T-1) float, 1 for real target tokens
    attention_mask: torch.Tensor  # (B, P + T-1) 1 for the prefix and real inputs, 0 for padding
    position_ids: torch.Tensor    # (B, P + T-1) 0 .. P + T - 2
    selection: Optional[TokenSelection] = None  # real target positions, found once per batch


def _causal_lm_check(cfg, where: str) -> None:
    """Raise ValueError unless ``cfg`` describes a decoder-only causal language model."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal_names = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal_names.update([v] if isinstance(v, str) else v)
    archs = list(getattr(cfg, "architectures", None) or [])
    ok = type(cfg) in MODEL_FOR_CAUSAL_LM_MAPPING and not getattr(cfg, "is_encoder_decoder", False)
    if ok and archs:
        ok = any(a in causal_names for a in archs)
    # families with a masked-LM head (BERT, RoBERTa, ...) are bidirectional encoders unless built as decoders
    if ok and type(cfg) in MODEL_FOR_MASKED_LM_MAPPING and not getattr(cfg, "is_decoder", False):
        ok = False
    if not ok:
        what = f"architectures {archs}" if archs else "no architectures listed"
        raise ValueError(f"pretrained: {where} holds a {cfg.model_type!r} model ({what}), not a causal language "
                         f"model; expected a decoder-only model that AutoModelForCausalLM loads (e.g. GPT-2, Llama)")


def _read_pretrained_config(path: str):
    from transformers import AutoConfig

    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(f"pretrained: {path!r} is not a local directory; expected a directory holding a causal "
                         f"language model saved with save_pretrained (config.json and weights). Nothing is "
                         f"downloaded")
    if not (p / "config.json").is_file():
        raise ValueError(f"pretrained: {p} has no config.json; expected a causal language model directory "
                         f"written by transformers' save_pretrained")
    try:
        cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise ValueError(f"pretrained: could not read {p / 'config.json'} as a transformers config: {msg}") from None
    _causal_lm_check(cfg, str(p))
    return p, cfg


#: the keys of ``decoder_args.lora`` and their defaults (peft's LoraConfig: r, lora_alpha, lora_dropout, target_modules)
LORA_DEFAULTS = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": None}


def _add_lora(lm: nn.Module, spec) -> Dict[str, Any]:
    """Inject low-rank adapters into ``lm`` in place (peft's ``inject_adapter_in_model``; Hu et al. 2021):
    each target linear map W becomes W + (alpha / r) B A with A (r x in), B (out x r), B = 0 at the start, so the
    model computes what it did. Returns the adapters' settings as stored in the decoder's config."""
    if not isinstance(spec, dict):
        raise ValueError(f"lora must be a mapping such as {{r: 8, alpha: 16}}, got {spec!r}")
    bad = sorted(set(spec) - set(LORA_DEFAULTS))
    if bad:
        raise ValueError(f"lora: unknown key(s) {bad}; valid ones are {sorted(LORA_DEFAULTS)}")
    s = {**LORA_DEFAULTS, **spec}
    if isinstance(s["r"], bool) or not isinstance(s["r"], int) or s["r"] < 1:
        raise ValueError(f"lora.r must be an integer >= 1, got {s['r']!r}")
    for k in ("alpha", "dropout"):
        if isinstance(s[k], bool) or not isinstance(s[k], (int, float)) or not s[k] >= 0:
            raise ValueError(f"lora.{k} must be a number >= 0, got {s[k]!r}")
    if not 0 <= s["dropout"] < 1:
        raise ValueError(f"lora.dropout must be in [0, 1), got {s['dropout']!r}")
    peft = require("peft", "model.decoder_args.lora", "peft")
    targets = s["target_modules"]
    if targets is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        targets = DEFAULTS.get(getattr(lm.config, "model_type", None))
        if targets is None:
            raise ValueError(f"lora: peft knows no default modules for model type {lm.config.model_type!r}; "
                             f"name them in lora.target_modules (e.g. [q_proj, v_proj])")
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets) or not targets:
        raise ValueError(f"lora.target_modules must be a list of module names, got {targets!r}")
    targets = list(targets)
    from transformers.pytorch_utils import Conv1D

    names = {n.rsplit(".", 1)[-1] for n, _ in lm.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"lora.target_modules: the model ({lm.config.model_type}) has no module named "
                         f"{', '.join(missing)}")
    conv1d = any(isinstance(m, Conv1D) for n, m in lm.named_modules() if n.rsplit(".", 1)[-1] in targets)
    cfg = peft.LoraConfig(r=s["r"], lora_alpha=float(s["alpha"]), lora_dropout=float(s["dropout"]),
                          target_modules=targets, fan_in_fan_out=conv1d, bias="none")
    peft.inject_adapter_in_model(cfg, lm)
    return {"r": s["r"], "alpha": float(s["alpha"]), "dropout": float(s["dropout"]), "target_modules": targets}


@register_decoder("transformer", modality="text")
class TransformerDecoder(nn.Module):
    """Causal Transformer LM conditioned on a latent code through learned prefix embeddings.

    Args:
        vocab_size, latent_dim: sizes (the vocabulary is the run tokenizer's).
        n_embd, n_layer, n_head, n_inner, n_positions: GPT-2 sizes when no ``pretrained`` model is given
            (``n_inner`` defaults to 4 * n_embd; ``n_positions`` must cover n_prefix + the longest sentence + 1).
            With ``pretrained`` they come from the model; passing a different value is an error.
        n_prefix: number of prefix vectors computed from z.
        add_to_inputs: also add a linear map of z to every token embedding.
        dropout: attention and residual dropout of the GPT-2 blocks; ``embd_dropout`` the embedding dropout
            (defaults to ``dropout``). A pretrained model keeps its own dropout settings.
        pad_id, bos_id, eos_id: special token ids (from the tokenizer).
        pretrained: a local directory holding a causal LM (``save_pretrained`` output); its vocabulary size
            must equal ``vocab_size`` unless ``added_tokens`` is given.
        lm_config: a transformers config as a dict (filled in by this class for pretrained models, so a saved
            run rebuilds the architecture without the original directory; weights come from the run).
        added_tokens: the vocabulary is the pretrained model's own tokenizer with this many tokens added by the
            run as its last ids (``data.tokenizer: hf``): the tokenizer's first ``vocab_size - added_tokens``
            ids must fit the model's embeddings, which grow (new rows at the mean of the old ones) to cover the
            rest; a model whose embedding matrix is larger than its tokenizer (padded) keeps its size.
        freeze_lm: the language model's own weights do not train (the z maps and the output bias do).
        lora: low-rank adapters on the frozen LM (needs ``peft``): ``{r: 8, alpha: 16, dropout: 0.0,
            target_modules: null}`` (null: peft's default modules for the model type, e.g. GPT-2's ``c_attn``).
    """

    def __init__(self, vocab_size: int, latent_dim: int, n_embd: Optional[int] = None, n_layer: Optional[int] = None,
                 n_head: Optional[int] = None, n_inner: Optional[int] = None, n_positions: Optional[int] = None,
                 n_prefix: int = 1, add_to_inputs: bool = False, dropout: float = 0.1,
                 embd_dropout: Optional[float] = None, pad_id: int = 0, bos_id: int = 2, eos_id: int = 3,
                 pretrained: Optional[str] = None, lm_config: Optional[Dict[str, Any]] = None,
                 word_dropout: float = 0.0, unk_id: int = 1, added_tokens: Optional[int] = None,
                 freeze_lm: bool = False, lora: Optional[Dict[str, Any]] = None):
        super().__init__()
        GPT2LMHeadModel = require("transformers", "the transformer decoder", "transformer").GPT2LMHeadModel

        self.vocab_size, self.latent_dim = int(vocab_size), int(latent_dim)
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = int(pad_id), int(bos_id), int(eos_id), int(unk_id)
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        self.word_dropout = float(word_dropout)
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if int(n_prefix) < 1:
            raise ValueError(f"n_prefix must be >= 1, got {n_prefix}")
        self.n_prefix = int(n_prefix)
        self.add_to_inputs = bool(add_to_inputs)
        given = dict(n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_inner=n_inner, n_positions=n_positions)
        if added_tokens is not None and not 0 <= int(added_tokens) < self.vocab_size:
            raise ValueError(f"added_tokens must be in [0, vocab_size), got {added_tokens}")
        self.added_tokens = None if added_tokens is None else int(added_tokens)
        self.freeze_lm = bool(freeze_lm) or lora is not None
        pretrained_lm = pretrained is not None or lm_config is not None
        if self.freeze_lm and not pretrained_lm:
            raise ValueError("freeze_lm and lora keep a pretrained model's weights: they need pretrained (a local "
                             "model directory)")

        if pretrained_lm:
            self.lm = self._build_from_pretrained(pretrained, lm_config, given)
            lm_config = json.loads(self.lm.config.to_json_string(use_diff=False))
        else:
            self.lm = self._build_gpt2(given, dropout, embd_dropout)
        self.lora = _add_lora(self.lm, lora) if lora is not None else None
        if self.freeze_lm:
            for name, p in self.lm.named_parameters():
                if "lora_" not in name:
                    p.requires_grad_(False)
        self.vocab_size = self.lm.get_input_embeddings().num_embeddings if self.added_tokens is not None \
            else self.vocab_size
        cfg = self.lm.config
        self.n_embd = self.lm.get_input_embeddings().embedding_dim
        self.max_positions = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        if self.lm.get_input_embeddings().num_embeddings != self.vocab_size:
            raise ValueError(f"the language model has {self.lm.get_input_embeddings().num_embeddings} token "
                             f"embeddings but the vocabulary has {self.vocab_size} tokens; they must match")
        # GPT-2 (built here or loaded) runs its base model and a fused output layer over real tokens only;
        # any other causal LM runs its full forward (which may scale or cap logits) and adds the output bias.
        self._fused = isinstance(self.lm, GPT2LMHeadModel)
        params = inspect.signature((self.lm.transformer if self._fused else self.lm).forward).parameters
        self._pass_positions = "position_ids" in params
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

        self.z_to_prefix = nn.Linear(self.latent_dim, self.n_prefix * self.n_embd)
        self.z_to_input = nn.Linear(self.latent_dim, self.n_embd) if self.add_to_inputs else None
        self.out_bias = nn.Parameter(torch.zeros(self.vocab_size))  # learned; GPT-2's head has none
        if pretrained is not None:
            self._init_z_maps_like_tokens()

        self.config = dict(vocab_size=int(vocab_size), latent_dim=self.latent_dim, n_prefix=self.n_prefix,
                           add_to_inputs=self.add_to_inputs, pad_id=self.pad_id, bos_id=self.bos_id,
                           eos_id=self.eos_id, pretrained=None if pretrained is None else str(pretrained),
                           lm_config=lm_config, word_dropout=self.word_dropout, unk_id=self.unk_id)
        if self.added_tokens is not None:
            self.config["added_tokens"] = self.added_tokens
        if self.freeze_lm:
            self.config["freeze_lm"] = True
        if self.lora is not None:
            self.config["lora"] = dict(self.lora)
        if lm_config is None:
            self.config.update(n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.n_inner,
                               n_positions=cfg.n_positions, dropout=float(dropout),
                               embd_dropout=None if embd_dropout is None else float(embd_dropout))
        self._setup_tied_parameters()

    # ---- construction ----------------------------------------------------------------------------------
    def _build_gpt2(self, given, dropout, embd_dropout):
        from transformers import GPT2Config, GPT2LMHeadModel

        defaults = dict(n_embd=128, n_head=4, n_layer=2, n_inner=None, n_positions=64 + self.n_prefix)
        size = {k: defaults[k] if given[k] is None else int(given[k]) for k in defaults}
        for k, v in size.items():
            if v is not None and v < 1:
                raise ValueError(f"{k} must be >= 1, got {v}")
        n_embd, n_head, n_positions = size["n_embd"], size["n_head"], size["n_positions"]
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if n_positions < self.n_prefix + 2:
            raise ValueError(f"n_positions ({n_positions}) must exceed n_prefix ({self.n_prefix}) + 1")
        for k, v in (("dropout", dropout), ("embd_dropout", embd_dropout)):
            if v is not None and not 0.0 <= v < 1.0:
                raise ValueError(f"{k} must be in [0, 1), got {v}")
        cfg = GPT2Config(vocab_size=self.vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=size["n_layer"],
                         n_head=n_head, n_inner=size["n_inner"], resid_pdrop=dropout, attn_pdrop=dropout,
                         embd_pdrop=dropout if embd_dropout is None else embd_dropout,
                         activation_function="gelu_pytorch_tanh",  # GPT-2's tanh GELU as one fused kernel
                         bos_token_id=self.bos_id, eos_token_id=self.eos_id, pad_token_id=self.pad_id)
        return GPT2LMHeadModel(cfg)

    def _build_from_pretrained(self, pretrained, lm_config, given):
        from transformers import AutoConfig, AutoModelForCausalLM

        if lm_config is not None:  # rebuilding a saved run: the architecture only, weights come from the run
            d = dict(lm_config)
            cfg = AutoConfig.for_model(d.pop("model_type"), **d)
            _causal_lm_check(cfg, "lm_config")
            where = "lm_config"
        else:
            path, cfg = _read_pretrained_config(pretrained)
            where = str(path)
        vocab = getattr(cfg, "vocab_size", None)
        if self.added_tokens is not None:  # the model's own tokenizer, maybe with tokens the run added
            own = self.vocab_size - self.added_tokens
            if vocab is not None and own > vocab:
                raise ValueError(f"pretrained: {where} has a vocabulary of {vocab} tokens but its tokenizer has "
                                 f"{own} (without the {self.added_tokens} the run added); the tokenizer is not "
                                 f"this model's own")
        elif vocab is not None and vocab != self.vocab_size:
            raise ValueError(f"pretrained: {where} has a vocabulary of {vocab} tokens but the run's tokenizer has "
                             f"{self.vocab_size}; with a pretrained model the run must use that model's vocabulary "
                             f"(its tokenizer: data.tokenizer: hf)")
        sizes = dict(n_embd=getattr(cfg, "hidden_size", None), n_layer=getattr(cfg, "num_hidden_layers", None),
                     n_head=getattr(cfg, "num_attention_heads", None), n_inner=getattr(cfg, "n_inner", None),
                     n_positions=getattr(cfg, "n_positions", getattr(cfg, "max_position_embeddings", None)))
        for k, v in given.items():
            if v is not None and v != sizes[k]:
                raise ValueError(f"{k}={v} was given but the pretrained model {where} has {k}={sizes[k]}; "
                                 f"leave {k} out when loading a pretrained model")
        if lm_config is not None:
            return AutoModelForCausalLM.from_config(cfg)
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a local load takes moments; keep stderr for the run's own log
        try:
            lm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32,
                                                      trust_remote_code=False)
        except (OSError, ValueError) as e:
            msg = " ".join(str(e).split())[:200]
            raise ValueError(f"pretrained: could not load a causal language model from {path}: {msg}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        if self.added_tokens is not None and lm.get_input_embeddings().num_embeddings < self.vocab_size:
            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # its notice about the new rows' initialization; the run reports them
            try:  # new rows drawn around the mean of the old ones (transformers >= 4.46)
                lm.resize_token_embeddings(self.vocab_size, mean_resizing=True)
            except TypeError:
                lm.resize_token_embeddings(self.vocab_size)
            finally:
                hf_logging.set_verbosity(level)
        return lm

    @torch.no_grad()
    def _init_z_maps_like_tokens(self) -> None:
        """Start the z maps where a pretrained LM computes what it learned: each prefix vector is the embedding of
        <s> plus a z-dependent part of the embeddings' own scale (W_p ~ N(0, s^2 / latent_dim), s the per-value
        standard deviation of the token embeddings), and the added map u(z) starts at 0. A default-initialized map
        would put vectors of a foreign scale in front of (or onto) every token, and the run would begin by
        unlearning the noise instead of from the model's likelihood."""
        wte = self.lm.get_input_embeddings().weight
        scale = float(wte.float().std())
        self.z_to_prefix.weight.normal_(0.0, scale / self.latent_dim ** 0.5)
        self.z_to_prefix.bias.copy_(wte[self.bos_id].float().repeat(self.n_prefix))
        if self.z_to_input is not None:
            self.z_to_input.weight.zero_()
            self.z_to_input.bias.zero_()

    def trainable_summary(self) -> str:
        """E.g. ``language model frozen (124.4M weights); training 1.2M (LoRA r 8 on c_attn, the z maps, the output
        bias)``: what a training update changes."""
        lm = sum(p.numel() for p in self.lm.parameters())
        trained = sum(p.numel() for p in self.parameters() if p.requires_grad)
        if not self.freeze_lm:
            return f"training all {trained:,} decoder weights"
        parts = ([f"LoRA r {self.lora['r']} on {', '.join(self.lora['target_modules'])}"] if self.lora else []) + \
            ["the z maps", "the output bias"]
        return f"language model frozen ({lm:,} weights); training {trained:,} ({', '.join(parts)})"

    def reset_parameters(self) -> None:
        """Re-initialize every weight in place: the language model with its own initializer (``_init_weights``
        of transformers, applied module by module; tied weights stay tied), the z maps as at construction and the
        output bias to 0. A pretrained language model loses its pretrained weights."""
        with torch.no_grad():
            self.lm.apply(self.lm._init_weights)
            self.z_to_prefix.reset_parameters()
            if self.z_to_input is not None:
                self.z_to_input.reset_parameters()
            self.out_bias.zero_()

    def _setup_tied_parameters(self) -> None:
        """Tied parameters (GPT-2's output matrix is its token embedding) are stored once.

        safetensors refuses tensors that share memory, so the state dict keeps only the first name of each
        shared parameter; loading fills the other names from it.
        """
        first: Dict[int, str] = {}
        self._tied: Dict[str, str] = {}
        for name, p in self.named_parameters(remove_duplicate=False):
            if id(p) in first:
                self._tied[name] = first[id(p)]
            else:
                first[id(p)] = name

        def drop_tied(module, state_dict, prefix, local_metadata):
            for name in module._tied:
                state_dict.pop(prefix + name, None)

        def fill_tied(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
            for name, src in module._tied.items():
                if prefix + name not in state_dict and prefix + src in state_dict:
                    state_dict[prefix + name] = state_dict[prefix + src]

        self.register_state_dict_post_hook(drop_tied)
        self.register_load_state_dict_pre_hook(fill_tied)

    # ---- the network -----------------------------------------------------------------------------------
    def _run(self, embeds, attention_mask=None, position_ids=None, past=None, use_cache=False):
        """(states, cache): final hidden states (GPT-2) or logits (other LMs) for ``embeds``.

        The key/value cache goes in and comes out under the name the installed ``transformers`` uses (``cache``
        in 5.x, ``past_key_values`` before)."""
        kw = dict(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=use_cache)
        if past is not None:
            kw[self._cache_arg] = past
        if self._pass_positions and position_ids is not None:
            kw["position_ids"] = position_ids
        out = self.lm.transformer(**kw) if self._fused else self.lm(**kw)
        cache = getattr(out, "cache", None) if self._cache_arg == "cache" else getattr(out, "past_key_values", None)
        return (out.last_hidden_state if self._fused else out.logits), cache

    def _head(self):
        """The output layer as (weight, bias): the LM head plus this decoder's learned bias."""
        head = self.lm.get_output_embeddings()
        bias = self.out_bias if getattr(head, "bias", None) is None else head.bias + self.out_bias
        return types.SimpleNamespace(weight=head.weight, bias=bias)

    def _logits(self, states: torch.Tensor) -> torch.Tensor:
        if self._fused:
            h = self._head()
            return F.linear(states, h.weight, h.bias)
        return states + self.out_bias

    def _z_inputs(self, z: torch.Tensor):
        B = z.shape[0]
        prefix = self.z_to_prefix(z).view(B, self.n_prefix, self.n_embd)
        add = self.z_to_input(z).unsqueeze(1) if self.z_to_input is not None else None
        return prefix, add

    def _check_length(self, n: int, what: str) -> None:
        if self.max_positions is not None and n > self.max_positions:
            raise ValueError(f"{what} needs {n} positions (n_prefix {self.n_prefix} included) but the model has "
                             f"n_positions {self.max_positions}; raise n_positions or shorten the input")

    # ---- likelihood ------------------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor, static: bool = False) -> PrefixContext:
        """Token embeddings, masks, positions and targets of a batch: the part of the input that z leaves alone.
        Word dropout applies in training mode; ``static`` makes every position reach the output layer (shapes
        that depend only on x's shape, for captured chains)."""
        check_tokens(x)
        inputs, targets = x[:, :-1].long(), x[:, 1:].long()
        if self.training:
            inputs = word_dropout(inputs, self.word_dropout, self.unk_id, self.pad_id)
        B, T = inputs.shape
        L = self.n_prefix + T
        self._check_length(L, f"a batch of length {x.shape[1]}")
        emb = self.lm.get_input_embeddings()(inputs)
        attn = torch.cat([torch.ones(B, self.n_prefix, dtype=torch.long, device=x.device),
                          (inputs != self.pad_id).long()], 1)
        pos = torch.arange(L, device=x.device).unsqueeze(0).expand(B, L)
        mask = (targets != self.pad_id).to(emb.dtype)
        return PrefixContext(emb=emb, targets=targets, mask=mask, attention_mask=attn, position_ids=pos,
                             selection=select_tokens(targets, mask, static=static))

    def log_prob_prepared(self, ctx: PrefixContext, z: torch.Tensor) -> torch.Tensor:
        """Sum over real tokens of log p(x_t | x_<t, z), from a prepared batch; shape (batch,)."""
        check_latent(z, self.latent_dim, ctx.targets.shape[0], "TransformerDecoder")
        prefix, add = self._z_inputs(z)
        tok = ctx.emb if add is None else ctx.emb + add.to(ctx.emb.dtype)
        embeds = torch.cat([prefix.to(tok.dtype), tok], 1)
        states, _ = self._run(embeds, ctx.attention_mask, ctx.position_ids)
        states = states[:, self.n_prefix:]
        if self._fused:
            return token_log_likelihood(states, self._head(), ctx.targets, ctx.mask, ctx.selection)
        logp = torch.log_softmax((states + self.out_bias).float(), -1)
        ll = logp.gather(-1, ctx.targets.unsqueeze(-1)).squeeze(-1)
        return (ll * ctx.mask).sum(1)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_beta(x | z) per sentence, shape (batch,): the sum over real tokens (padding masked)."""
        return self.log_prob_prepared(self.prepare(x), z)

    # ---- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: torch.Tensor, max_len: int = 40, greedy: bool = False, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, generator: Optional[torch.Generator] = None) -> List[List[int]]:
        """Decode token ids (without <s> and </s>) for each row of z, batched with a key/value cache.

        The prefix and <s> are run once; then each step feeds only the newest token. Stops when every row
        has produced </s> or after ``max_len`` tokens. Greedy takes the arg-max; otherwise tokens are drawn
        from softmax(logits / temperature), optionally limited to the top-k and/or the nucleus of mass top_p.
        """
        check_latent(z, self.latent_dim, who="TransformerDecoder.generate")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self._check_length(self.n_prefix + max_len, f"generating up to {max_len} tokens")
        B, P, dev = z.shape[0], self.n_prefix, z.device
        wte = self.lm.get_input_embeddings()
        prefix, add = self._z_inputs(z)

        def embed(tok):
            e = wte(tok)
            return e if add is None else e + add.squeeze(1).to(e.dtype)

        bos = torch.full((B,), self.bos_id, dtype=torch.long, device=dev)
        embeds = torch.cat([prefix.to(wte.weight.dtype), embed(bos).unsqueeze(1)], 1)
        pos = torch.arange(P + 1, device=dev).unsqueeze(0).expand(B, P + 1)
        states, past = self._run(embeds, position_ids=pos, use_cache=True)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        out = torch.full((B, max_len), self.pad_id, dtype=torch.long, device=dev)
        for t in range(max_len):
            logits = self._logits(states[:, -1])
            tok = sample_next(logits, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
                              generator=generator)
            tok = torch.where(done, torch.full_like(tok, self.eos_id), tok)
            out[:, t] = tok
            done |= tok == self.eos_id
            if bool(done.all()) or t == max_len - 1:
                break
            pos = torch.full((B, 1), P + 1 + t, dtype=torch.long, device=dev)
            states, past = self._run(embed(tok).unsqueeze(1), position_ids=pos, past=past, use_cache=True)
        return strip_eos(out.tolist(), self.eos_id, self.pad_id)
