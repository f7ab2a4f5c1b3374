"""A pretrained model's own tokenizer (data.tokenizer: hf): special tokens mapped or added, sentences framed and
recovered word for word, the run's copy read back as data (and by AutoTokenizer), and directories that hold no
usable tokenizer, or ask for code to run, refused in one line."""
import json

import pytest

from hf_local import GRAMMAR_TRAIN, train_bpe

pytest.importorskip("transformers")

SENTENCES = GRAMMAR_TRAIN.read_text(encoding="utf-8").splitlines()[:200]


@pytest.fixture(scope="module")
def gpt2_style(tmp_path_factory):
    """A byte-level BPE tokenizer with GPT-2's special tokens: <|endoftext|> as bos, eos and unk, no padding."""
    d = tmp_path_factory.mktemp("tok") / "gpt2-style"
    train_bpe(vocab_size=400, n_lines=2000).save_pretrained(d)
    return d


def test_a_gpt2_style_tokenizer_gets_a_padding_token_of_its_own(gpt2_style, tmp_path):
    from transformers import AutoTokenizer

    from textebm.data.hf_tokenizer import HFTokenizer
    from textebm.data.tokenizers import encode_sentences, load_tokenizer

    own = AutoTokenizer.from_pretrained(gpt2_style)
    tok = HFTokenizer.from_pretrained(gpt2_style)
    eot = own.convert_tokens_to_ids("<|endoftext|>")
    assert (tok.bos_id, tok.eos_id) == (eot, eot)
    assert tok.pad_id == 400 and len(tok) == 401 and tok.added == ["<pad>"] and tok.n_added == 1
    assert tok.unk_id == tok.pad_id  # its unknown token is its end token: word dropout blanks words instead
    assert tok.note == "no padding token: added <pad> as id 400; the model's embeddings grow by 1 row(s)"
    for s in SENTENCES:
        ids = tok.encode(s)
        # the model's ids between <s> and </s>, without the tokenizer's own special-token template
        assert ids == [eot] + own.encode(s, add_special_tokens=False) + [eot]
        assert tok.decode(ids + [tok.pad_id] * 3) == " ".join(s.split())  # word for word
    # the run's copy: read back as data, the same ids; AutoTokenizer opens it too
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    back = load_tokenizer(tmp_path)
    assert type(back) is HFTokenizer and back.added == ["<pad>"] and back.note is None
    assert (back.bos_id, back.eos_id, back.pad_id, back.unk_id, len(back)) == \
        (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id, len(tok))
    assert all(back.encode(s) == tok.encode(s) for s in SENTENCES)
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert auto.pad_token == "<pad>" and auto.pad_token_id == 400
    assert auto.encode(SENTENCES[0], add_special_tokens=False) == tok.encode(SENTENCES[0])[1:-1]
    ids, stats = encode_sentences(SENTENCES, tok, max_len=5, policy="truncate")
    assert stats["truncated"] > 0 and all(len(i) <= 7 and i[0] == eot and i[-1] == eot for i in ids)


def test_tokens_a_tokenizer_has_are_used_and_the_ones_it_lacks_are_added(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from textebm.data.hf_tokenizer import HFTokenizer

    # its own padding token: nothing is added
    padded = tmp_path / "padded"
    train_bpe(vocab_size=300, n_lines=500, pad=True).save_pretrained(padded)
    tok = HFTokenizer.from_pretrained(padded)
    assert tok.added == [] and tok.note is None and tok.pad_id == tok.backend.token_to_id("<|pad|>")
    # a word-level tokenizer with no special tokens at all (as some Llama-style files declare none)
    bare = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    bare.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[UNK]"], show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=bare, unk_token="[UNK]").save_pretrained(tmp_path / "bare")
    tok = HFTokenizer.from_pretrained(tmp_path / "bare")
    n = bare.get_vocab_size()
    assert tok.added == ["</s>", "<pad>"] and (tok.eos_id, tok.pad_id) == (n, n + 1) and tok.bos_id == tok.eos_id
    assert tok.unk_id == bare.token_to_id("[UNK]")
    assert "no end-of-sequence token: added </s>" in tok.note and "</s> starts sentences too" in tok.note
    assert tok.decode(tok.encode("the dog zzzz")) == "the dog [UNK]"


def test_directories_without_a_usable_tokenizer_are_refused(tmp_path):
    from textebm.data.hf_tokenizer import HFTokenizer
    from textebm.data.tokenizers import load_tokenizer
    from textebm.files import FileFormatError

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no tokenizer \(none of tokenizer.json"):
        HFTokenizer.from_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="is not a local directory.*Nothing is downloaded"):
        HFTokenizer.from_pretrained("gpt2")
    # a directory that asks for the tokenizer's own code: refused before anything in it runs
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "ran"
    (evil / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (evil / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    with pytest.raises(ValueError, match="could not load the tokenizer in .*evil"):
        HFTokenizer.from_pretrained(evil)
    assert not marker.exists()
    # a run's copy that was tampered with
    run = tmp_path / "run"
    run.mkdir()
    (run / "tokenizer.json").write_text("{not json")
    (run / "tokenizer_config.json").write_text(json.dumps({"bos_token": "a", "eos_token": "b", "pad_token": "c"}))
    with pytest.raises(FileFormatError, match="tokenizer.json is not a tokenizers file"):
        load_tokenizer(run)
    (run / "tokenizer_config.json").write_text(json.dumps({"bos_token": 1, "eos_token": "b", "pad_token": "c"}))
    with pytest.raises(FileFormatError, match="expected bos_token, eos_token and pad_token"):
        load_tokenizer(run)
