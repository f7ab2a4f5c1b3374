"""A pretrained causal LM and its tokenizer, built locally in seconds (nothing is downloaded): a byte-level BPE
tokenizer trained with the ``tokenizers`` library on the bundled grammar corpus, and a tiny GPT-2 with that
vocabulary, both written with ``save_pretrained`` into one directory, as a model from the Hub would be."""
from pathlib import Path

from conftest import ROOT

GRAMMAR_TRAIN = ROOT / "data" / "grammar" / "train.txt"


def train_bpe(vocab_size: int = 400, n_lines: int = 3000, pad: bool = False):
    """A GPT-2-style tokenizer (byte-level BPE, ``<|endoftext|>`` as bos, eos and unk, no padding token unless
    ``pad``) trained on the first ``n_lines`` sentences of the grammar corpus, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = GRAMMAR_TRAIN.read_text(encoding="utf-8").splitlines()[:n_lines]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<|pad|>"] if pad else [])
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    extra = {"pad_token": "<|pad|>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", **extra)


def save_tiny_gpt2(directory: Path, tokenizer, n_embd: int = 32, n_layer: int = 2, n_head: int = 2,
                   n_positions: int = 64, seed: int = 0) -> Path:
    """A randomly initialized GPT-2 over ``tokenizer``'s vocabulary, saved with the tokenizer in ``directory``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                    n_positions=n_positions, bos_token_id=eos, eos_token_id=eos))
    lm.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def pretrain(lm, tokenizer, steps: int = 150, batch_size: int = 32, lr: float = 3e-3, n_lines: int = 3000,
             seed: int = 0) -> float:
    """A few hundred steps of next-token training on grammar sentences, so the model has learned something of
    the corpus before a run starts from it (a stand-in for a model pretrained elsewhere). Returns the last loss."""
    import torch

    lines = GRAMMAR_TRAIN.read_text(encoding="utf-8").splitlines()[:n_lines]
    eos = tokenizer.eos_token_id
    rows = [[eos] + tokenizer.encode(s, add_special_tokens=False) + [eos] for s in lines]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(lm.parameters(), lr=lr)
    lm.train()
    loss = None
    for _ in range(steps):
        pick = torch.randint(len(rows), (batch_size,), generator=g).tolist()
        T = max(len(rows[i]) for i in pick)
        x = torch.full((batch_size, T), eos)
        labels = torch.full((batch_size, T), -100)
        for j, i in enumerate(pick):
            x[j, :len(rows[i])] = torch.tensor(rows[i])
            labels[j, :len(rows[i])] = torch.tensor(rows[i])
        loss = lm(input_ids=x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    return float(loss.detach())
