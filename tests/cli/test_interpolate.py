"""``textebm interpolate``: the decodes of the path between two sentences' codes, endpoints included; pairs from a
file; bad input is one line and exit status 2."""
import json

from conftest import one_line_error, run_main

A, B = "the dog sees a fish .", "a woman wants some bread ."


def test_the_path_has_steps_decodes(tiny_run, capsys):
    code, out, err = run_main(capsys, "interpolate", tiny_run, A, B, "--steps", "4", "--chains", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 4
    code, out_sph, err = run_main(capsys, "interpolate", tiny_run, A, B, "--steps", "4", "--chains", "2",
                                  "--spherical", "--jsonl")
    rec = json.loads(out_sph)
    assert rec["a"] == A and rec["b"] == B and rec["t"] == [0.0, 0.333333, 0.666667, 1.0] and len(rec["path"]) == 4
    # the endpoints are the codes themselves: linear and spherical paths decode them alike
    assert rec["path"][0] == out.splitlines()[0].replace("<empty>", "") and \
        rec["path"][-1] == out.splitlines()[-1].replace("<empty>", "")


def test_pairs_from_a_file(tiny_run, tmp_path, capsys):
    f = tmp_path / "pairs.tsv"
    f.write_text(f"{A}\t{B}\n{B}\t{A}\n")
    code, out, err = run_main(capsys, "interpolate", tiny_run, "--input", f, "--steps", "3", "--chains", "2")
    assert code == 0, err
    blocks = out.split("\n\n")
    assert len(blocks) == 2 and all(len(b.strip().splitlines()) == 3 for b in blocks)


def test_bad_inputs_are_one_line_errors(tiny_run, tmp_path, capsys):
    code, _, err = run_main(capsys, "interpolate", tiny_run, A)
    one_line_error(code, err, "two sentences")
    code, _, err = run_main(capsys, "interpolate", tiny_run, A, B, A)
    one_line_error(code, err, "two sentences")
    f = tmp_path / "pairs.tsv"
    f.write_text(f"{A} {B}\n")
    code, _, err = run_main(capsys, "interpolate", tiny_run, "--input", f)
    one_line_error(code, err, "line 1", "tab")
    code, _, err = run_main(capsys, "interpolate", tiny_run, A, B, "--steps", "1")
    one_line_error(code, err, "--steps")
