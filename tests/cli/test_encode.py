"""``textebm encode``: codes on stdout or in a file by extension, seeded, from arguments, a file or stdin; bad
input is one line and exit status 2."""
import io
import json
import sys

import torch

from conftest import one_line_error, run_main


def stdin_of(monkeypatch, text: str):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))


def test_codes_on_stdout_are_seeded_and_one_line_per_sentence(tiny_run, capsys, monkeypatch):
    code, out, err = run_main(capsys, "encode", tiny_run, "the dog sees a fish .", "a cat eats the car .",
                              "--chains", "3", "--seed", "5")
    assert code == 0, err
    rows = [list(map(float, line.split())) for line in out.splitlines()]
    assert len(rows) == 2 and all(len(r) == 4 for r in rows)          # latent_dim 4
    assert run_main(capsys, "encode", tiny_run, "the dog sees a fish .", "a cat eats the car .", "--chains", "3",
                    "--seed", "5")[1] == out
    # stdin (-) after an argument, in order: the same first code
    stdin_of(monkeypatch, "a cat eats the car .\n")
    code, out2, err = run_main(capsys, "encode", tiny_run, "the dog sees a fish .", "-", "--chains", "3",
                               "--seed", "5")
    assert code == 0 and out2 == out, err


def test_jsonl_and_code_files(tiny_run, tmp_path, capsys):
    from textebm.latent_tools import read_codes

    src = tmp_path / "in.txt"
    src.write_text("the dog sees a fish .\nmy friend likes the house .\n\n")  # the blank line is a sentence
    code, out, err = run_main(capsys, "encode", tiny_run, "--input", src, "--jsonl", "--chains", "2")
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in recs] == ["the dog sees a fish .", "my friend likes the house .", ""]
    assert all(len(r["mean"]) == 4 and len(r["std"]) == 4 and r["source"] == "chains" for r in recs)
    for ext in ("safetensors", "npy", "jsonl"):
        dest = tmp_path / f"codes.{ext}"
        code, out, err = run_main(capsys, "encode", tiny_run, "--input", src, "--out", dest, "--chains", "2")
        assert code == 0 and out == "" and "wrote 3 codes" in err[-1], err
        assert torch.allclose(read_codes(dest), torch.tensor([r["mean"] for r in recs]), atol=1e-5)


def test_bad_inputs_are_one_line_errors(tiny_run, tmp_path, capsys):
    one_line_error(*_skip_out(run_main(capsys, "encode", tiny_run)), "no sentences")
    one_line_error(*_skip_out(run_main(capsys, "encode", tiny_run, "a b", "--out", tmp_path / "c.txt")),
                   ".safetensors")
    one_line_error(*_skip_out(run_main(capsys, "encode", tiny_run, "a b", "--out", tiny_run / "model.safetensors")),
                   "would replace a file of the run")
    one_line_error(*_skip_out(run_main(capsys, "encode", tmp_path / "nope", "a b")), "no such run")
    one_line_error(*_skip_out(run_main(capsys, "encode", tiny_run, "--input", "/dev/zero")), "not a regular file")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    one_line_error(*_skip_out(run_main(capsys, "encode", tiny_run, "--input", bad)), "not UTF-8")
    one_line_error(*_skip_out(run_main(capsys, "encode", tiny_run, "a", "--chains", "0")), "--chains")


def _skip_out(result):
    code, out, err = result
    return code, err
