"""The command line: exact outputs and one-line errors with exit status 2."""
from conftest import assert_one_line_error, run_cli


def test_sample_prints_exactly_n_lines_and_is_seeded(tiny_run):
    a = run_cli("sample", str(tiny_run), "-n", "7", "--seed", "3")
    assert a.returncode == 0, a.stderr
    lines = a.stdout.split("\n")
    assert lines[-1] == "" and len(lines) == 8 and all(l.strip() for l in lines[:-1])
    b = run_cli("sample", str(tiny_run), "-n", "7", "--seed", "3")
    assert a.stdout == b.stdout
    c = run_cli("sample", str(tiny_run), "-n", "7", "--seed", "4", "--greedy", "--steps", "5")
    assert c.returncode == 0 and len(c.stdout.splitlines()) == 7


def test_sample_from_a_checkpoint_file(tiny_run):
    ckpt = sorted((tiny_run / "checkpoints").glob("ckpt-*.pt"))[-1]
    p = run_cli("sample", str(ckpt), "-n", "3", "--temperature", "0.5")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 3


def test_bad_inputs_give_one_line_errors(tmp_path, toy_corpus):
    assert_one_line_error(run_cli("train", str(tmp_path / "nope.yaml")), "recipe file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    assert_one_line_error(run_cli("train", str(bad)), "unknown key 'stepz'", "steps")
    assert_one_line_error(run_cli("sample", str(tmp_path / "missing_run")), "no such run directory")
    assert_one_line_error(run_cli("sample", str(tmp_path), "-n", "0"), "argument -n: must be at least 1")
    assert_one_line_error(run_cli("train", "quickstart", "--set", "train.steps=-1"),
                          "train.steps")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    assert_one_line_error(run_cli("train", str(broken)), "not valid YAML")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    assert_one_line_error(run_cli("sample", str(empty)), "no checkpoints")


def test_help_lists_every_command():
    from textebm.cli import COMMANDS

    p = run_cli("--help")  # how fast it answers: tests/test_layout.py
    assert p.returncode == 0 and all(c in p.stdout for c in COMMANDS)
