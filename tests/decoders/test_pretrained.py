"""A pretrained causal LM with its own tokenizer as the decoder: a GPT-2-style model and a byte-level BPE tokenizer
built locally (tests/hf_local.py), saved with save_pretrained into one directory, are trained on as a textebm run
(the LM's weights trained, frozen, or frozen under low-rank adapters), sampled, evaluated, and reloaded without
the directory; the samples decode with the model's own tokenizer."""
import json
import shutil

import pytest
import torch

from hf_local import pretrain, save_tiny_gpt2, train_bpe

transformers = pytest.importorskip("transformers")

#: tiny settings: a few steps of everything, so each run takes seconds on one CPU thread
SMALL = ["data.max_len=32", "generate.max_len=24",
         "model.latent_dim=4", "prior.hidden=16", "sampling.prior_steps=5", "sampling.posterior_steps=3",
         "train.steps=6", "train.batch_size=16", "train.log_every=1", "train.eval_every=6", "train.eval_batches=1",
         "train.latent_batches=1", "train.latent_chains=3", "train.prior_fit_samples=16", "train.save_every=6",
         "train.lr_decoder=3e-3", "train.num_threads=1"]
#: the LM's weights trained, frozen, or frozen under low-rank adapters (the packaged recipe's choice, made smaller)
MODES = {"trained": ["model.decoder_args.lora=null"],
         "frozen": ["model.decoder_args.lora=null", "model.decoder_args.freeze_lm=true"],
         "lora": ["model.decoder_args.lora={r: 4, alpha: 8}"]}


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A GPT-2 (2 layers, width 32) pretrained for 150 steps on grammar sentences, and its BPE tokenizer (no padding
    token, like GPT-2's), saved together as a Hub model directory is."""
    from transformers import GPT2LMHeadModel

    tok = train_bpe(vocab_size=400, n_lines=2000)
    d = save_tiny_gpt2(tmp_path_factory.mktemp("lm") / "gpt2-grammar", tok)
    lm = GPT2LMHeadModel.from_pretrained(d)
    pretrain(lm, tok, steps=150)
    lm.save_pretrained(d)
    return d


def recipe(lm_path, mode):
    """The packaged recipe pointed at ``lm_path``, shrunk to seconds."""
    from textebm.config import apply_overrides, load_recipe

    return apply_overrides(load_recipe("pretrained_lm"), [
        f"name=hf-{mode}", *SMALL, f"model.decoder_args.pretrained={lm_path}", "model.decoder_args.n_prefix=2",
        "model.decoder_args.add_to_inputs=true", *MODES[mode]])


def lm_state(model_or_lm):
    lm = getattr(getattr(model_or_lm, "decoder", None), "lm", model_or_lm)
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in lm.state_dict().items() if "lora_" not in k}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_local_lm_with_its_own_tokenizer_trains_samples_evaluates_and_reloads_without_its_directory(
        lm_dir, tmp_path, mode, capsys):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from textebm.cli import main
    from textebm.model import LatentEBMModel
    from textebm.train import train

    lm_copy = tmp_path / "gpt2-grammar"  # the directory the run reads, deleted once it has trained
    shutil.copytree(lm_dir, lm_copy)
    run = tmp_path / "run"
    train(recipe(lm_copy, mode), run, device="cpu", progress=False)
    err = capsys.readouterr().err
    # GPT-2 has no padding token (it pads with </s>): the run adds one of its own and says so with its data
    assert '"tokenizer_note": "no padding token: added <pad> as id 400' in err
    cfg = json.loads((run / "tokenizer_config.json").read_text())
    assert cfg["pad_token"] == "<pad>" and cfg["eos_token"] == cfg["bos_token"] == "<|endoftext|>"

    # the pretrained weights are the ones the run starts from: its first validation NLL is the pretrained LM's,
    # far below what an untrained model of this vocabulary scores (log 401 = 6.0 nats per token)
    first = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                 if "valid_recon_nll_token" in line)
    assert first["valid_recon_nll_token"] < 4.0, first
    m = LatentEBMModel.from_pretrained(run).eval()
    before, after = lm_state(GPT2LMHeadModel.from_pretrained(lm_dir)), lm_state(m)
    same = all(torch.equal(after[k][:before[k].shape[0]], before[k]) for k in before)  # the rows it had
    assert same == (mode != "trained")  # frozen and LoRA runs leave the LM's own weights exactly as they were
    if mode == "lora":
        lora_b = [p for n, p in m.decoder.lm.named_parameters() if "lora_B" in n]
        assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the adapters trained (they start at 0)
        # a config that asks for adapters larger than its weights is refused before anything is allocated
        hostile = tmp_path / "hostile"
        hostile.mkdir()
        shutil.copy(run / "model.safetensors", hostile)
        cfg = json.loads((run / "config.json").read_text())
        cfg["decoder"]["lora"]["r"] = 10 ** 12
        (hostile / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=r"lora.r = 1000000000000 is more than the weights file can hold"):
            LatentEBMModel.from_pretrained(hostile)
    assert ("frozen" in m.decoder.trainable_summary()) == (mode != "trained")

    # sampling and evaluation on the run; the n-gram metrics count words, and the report says so
    assert main(["sample", str(run), "-n", "4", "--seed", "5", "--max-len", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.strip() for line in lines)
    assert main(["eval", str(run), "--fppl", "--rppl", "--diversity", "--recon", "--n-samples", "40",
                 "--max-sentences", "6", "--order", "3", "--max-len", "16", "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((run / "eval-test.json").read_text())
    for key in ("fppl", "rppl", "diversity"):
        assert report[key]["units"] == "words" and "Units: words, not tokens" in report[key]["protocol"]
        assert "tokenizer (hf)" in report["protocol"][key]
    assert report["recon"]["n_sentences"] == 6 and report["fppl"]["value"] is not None

    # without the model's directory: the run reloads from its own files, samples the same lines, and its
    # samples decode with the model's own tokenizer to the same text
    shutil.rmtree(lm_copy)
    assert main(["sample", str(run), "-n", "4", "--seed", "5", "--max-len", "16"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    m2 = LatentEBMModel.from_pretrained(run).eval()
    ids = m2.generate(6, generator=torch.Generator().manual_seed(1), decode=False, max_len=16)
    text = m2.generate(6, generator=torch.Generator().manual_seed(1), max_len=16)
    own = AutoTokenizer.from_pretrained(lm_dir)
    assert [" ".join(own.decode(i, skip_special_tokens=True).split()) for i in ids] == text
    assert all(i < len(own) for row in ids for i in row)  # the added <pad> is never sampled
    # ... and the run's copy of the tokenizer opens with AutoTokenizer too, with the same ids
    assert AutoTokenizer.from_pretrained(run).encode("the dog runs .") == own.encode("the dog runs .")
    # a training checkpoint still needs the model's directory (a finished run does not): said in one line
    ckpt = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
    assert main(["sample", str(ckpt), "-n", "1"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "gpt2-grammar" in err[0] and "not a local directory" in err[0]


def test_bad_pretrained_and_tokenizer_directories_are_one_line_errors(lm_dir, tmp_path, capsys):
    from transformers import BertConfig

    from textebm.cli import main

    def error(*args):
        assert main(["train", "quickstart", "--out", str(tmp_path / "out"), "--no-progress", *args]) == 2
        lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert len(lines) == 1, lines
        assert not (tmp_path / "out").exists()
        return lines[0]

    hf = ["--set", "model.decoder=transformer", "--set", "data.tokenizer=hf"]
    (tmp_path / "empty").mkdir()
    msg = error(*hf, "--set", f"data.tokenizer_path={tmp_path / 'empty'}")
    assert "holds no tokenizer" in msg and "tokenizer.json" in msg
    msg = error(*hf, "--set", f"data.tokenizer_path={tmp_path / 'nope'}")
    assert "is not a local directory" in msg and "Nothing is downloaded" in msg
    msg = error("--set", "data.tokenizer=hf")
    assert "data.tokenizer: hf needs a tokenizer directory" in msg
    bert = tmp_path / "bert"
    shutil.copytree(lm_dir, bert)
    BertConfig(vocab_size=401).save_pretrained(bert)  # a tokenizer beside a model that is not a causal LM
    msg = error(*hf, "--set", f"model.decoder_args={{pretrained: '{bert}'}}")
    assert "'bert' model" in msg and "not a causal language model" in msg
    msg = error(*hf, "--set", f"model.decoder_args={{pretrained: '{lm_dir}', lora: {{r: 0}}}}")
    assert "lora.r must be an integer >= 1" in msg
    msg = error(*hf, "--set", f"model.decoder_args={{pretrained: '{lm_dir}', lora: {{target_modules: [q_proj]}}}}")
    assert "has no module named q_proj" in msg


def test_a_tokenizer_that_is_not_the_models_own_is_refused(lm_dir, tmp_path):
    from textebm.decoders import TransformerDecoder

    with pytest.raises(ValueError, match=r"has a vocabulary of 400 tokens but its tokenizer has 500 .*not this "
                                         r"model's own"):
        TransformerDecoder(501, 4, pretrained=str(lm_dir), added_tokens=1)
    with pytest.raises(ValueError, match="need pretrained"):
        TransformerDecoder(50, 4, freeze_lm=True)
