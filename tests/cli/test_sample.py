"""``textebm sample --near SENTENCE [--radius R]`` (variations of a sentence) and ``--symbol K`` (samples of one
symbol of a symbol-vector run)."""
from conftest import one_line_error, run_main


def test_variations_of_a_sentence_are_seeded(tiny_run, capsys):
    args = ("sample", tiny_run, "-n", "5", "--near", "the dog sees a fish .", "--greedy", "--seed", "2")
    code, out, err = run_main(capsys, *args)
    assert code == 0 and len(out.splitlines()) == 5, err
    assert run_main(capsys, *args)[1] == out
    code, out, err = run_main(capsys, *args, "--radius", "0.5", "--chains", "2")
    assert code == 0 and len(out.splitlines()) == 5, err


def test_samples_of_a_symbol(symbol_run, capsys):
    code, out, err = run_main(capsys, "sample", symbol_run, "-n", "4", "--symbol", "2")
    assert code == 0 and len(out.splitlines()) == 4, err


def test_bad_combinations_are_one_line_errors(tiny_run, symbol_run, capsys):
    code, _, err = run_main(capsys, "sample", tiny_run, "--radius", "1")
    one_line_error(code, err, "--radius goes with --near")
    code, _, err = run_main(capsys, "sample", tiny_run, "--symbol", "0")
    one_line_error(code, err, "symbol-vector")
    code, _, err = run_main(capsys, "sample", symbol_run, "--symbol", "3")
    one_line_error(code, err, "3 symbols")
    code, _, err = run_main(capsys, "sample", tiny_run, "--near", "a", "--symbol", "1")
    one_line_error(code, err, "not allowed with")
    code, _, err = run_main(capsys, "sample", tiny_run, "--near", "a", "--radius", "-1")
    one_line_error(code, err, "--radius")
