"""``textebm compare`` (textebm.eval.compare): names that hold Markdown's ``|``, keys that do not exist, and
numbers near and beyond the float range."""
import json

from conftest import one_line_error, run_main


def report(run_dir, kind, fppl, mi=1.0):
    run_dir.mkdir(parents=True)
    (run_dir / "eval-test.json").write_text(json.dumps({
        "run": {"recipe": {"prior": {"kind": kind}}}, "fppl": {"value": fppl}, "latent": {"mi": mi}}))
    return run_dir


def cells(line):
    """A Markdown table row's cells (``\\|`` is a pipe inside a cell)."""
    return [c.strip() for c in line.replace("\\|", "\x00").strip().strip("|").split("|")]


def test_compare_escapes_names_refuses_unknown_keys_and_formats_huge_numbers(tmp_path, capsys):
    """Row 22: a run named ``a|b`` broke the table, ``--by no.such.key`` grouped everything under "None", and a
    value of 1e308 gave a 300-digit sd; row 17: an integer above 1e308 was an OverflowError traceback."""
    runs = [report(tmp_path / "a|b", "ebm", 1e308), report(tmp_path / "c", "ebm", -1e308),
            report(tmp_path / "d", "gaussian", 10 ** 400, mi=2)]
    code, out, err = run_main(capsys, "compare", *runs)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len({len(cells(line)) for line in lines}) == 1, out
    assert cells(lines[2])[0] == "a\x00b" and cells(lines[2])[2] == "1.00e+308"
    assert cells(lines[4])[2] == "1.00e+400"
    code, out, err = run_main(capsys, "compare", *runs, "--by", "prior.kind")
    assert code == 0, err
    ebm = next(line for line in out.splitlines() if line.startswith("| ebm"))
    assert max(len(c) for c in cells(ebm)) < 30, ebm
    assert "1.41e+308" in ebm
    code, out, err = run_main(capsys, "compare", *runs, "--by", "no.such.key")
    one_line_error(code, err, "no.such.key", "not a recipe key")
