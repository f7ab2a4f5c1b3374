"""``textebm reconstruct``: one decode per sentence, greedy and seeded, scores on request; bad input is one line
and exit status 2."""
import json

from conftest import one_line_error, run_main

SENTS = ["the dog sees a fish .", "a cat eats the car .", "my friend likes the house ."]


def test_one_decode_per_sentence_and_the_scores(tiny_run, capsys):
    code, out, err = run_main(capsys, "reconstruct", tiny_run, *SENTS, "--scores", "--chains", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 3 and all(line.strip() for line in out.splitlines())
    summary = err[-1]
    assert "reconstruction of 3 sentences (greedy" in summary and "token accuracy" in summary and "BLEU-4" in summary
    code, out_json, err = run_main(capsys, "reconstruct", tiny_run, *SENTS, "--scores", "--chains", "2", "--jsonl")
    recs = [json.loads(line) for line in out_json.splitlines()]
    assert [r["text"] for r in recs] == SENTS and [r["reconstruction"] for r in recs] == \
        [line if line != "<empty>" else "" for line in out.splitlines()]    # greedy: the same decodes
    assert all(0.0 <= r["token_acc"] <= 1.0 and isinstance(r["exact"], bool) for r in recs)
    acc = float(summary.split("token accuracy ")[1].split(",")[0])
    n_tok = [len(s.split()) + 1 for s in SENTS]
    assert abs(acc - sum(r["token_acc"] * n for r, n in zip(recs, n_tok)) / sum(n_tok)) < 1e-3


def test_sampled_decoding_is_seeded(tiny_run, capsys):
    a = run_main(capsys, "reconstruct", tiny_run, *SENTS, "--sample", "--seed", "3", "--chains", "2")
    b = run_main(capsys, "reconstruct", tiny_run, *SENTS, "--sample", "--seed", "3", "--chains", "2")
    assert a[0] == 0 and a[1] == b[1]


def test_bad_inputs_are_one_line_errors(tiny_run, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_main(capsys, "reconstruct", tiny_run, "--input", empty)
    one_line_error(code, err, "no sentences")
    code, _, err = run_main(capsys, "reconstruct", tiny_run, "a", "--temperature", "0")
    one_line_error(code, err, "--temperature")
    code, _, err = run_main(capsys, "reconstruct", tiny_run, "a", "--sample", "--temperature", "1")
    one_line_error(code, err, "not allowed with")
    code, _, err = run_main(capsys, "reconstruct", tiny_run, "--input", tmp_path / "missing.txt")
    one_line_error(code, err, "not found")
