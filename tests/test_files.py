"""The one way the package writes a file (textebm.files.write_file): an exclusive temporary file in the
destination's directory, never a predictable name, never through a link, fsync and rename; and the way it reads
one: regular files only, bounded size and nesting; weights of another dtype refused."""
import json
import os
import shutil
import stat
import threading

import pytest

from textebm.files import FileFormatError, atomic_write, read_json

from conftest import one_line_error, run_main, tree


# ---- writing -----------------------------------------------------------------------------------------------
def test_write_file_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    from textebm.files import write_file

    path = tmp_path / "a" / "report.json"
    write_file(path, "one\n")
    write_file(path, b"two\n")
    write_file(path, lambda fh: fh.write(b"three\n"))
    atomic_write(path, lambda tmp: tmp.write_text("four\n"))
    assert path.read_text() == "four\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()

    def fails(fh):
        fh.write(b"half")
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):
        write_file(path, fails)
    assert path.read_text() == "four\n" and sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_file_refuses_links_at_the_destination_and_below_a_run(tmp_path):
    from textebm.files import UnsafePathError, open_append, write_file

    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        write_file(link, "new")
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (run / "plots").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="plots"):
        write_file(run / "plots" / "a.png", b"png", root=run)
    with pytest.raises(UnsafePathError):
        open_append(link)
    assert outside.read_text() == "keep" and not list((tmp_path / "elsewhere").iterdir())


def test_the_temporary_file_is_never_a_predictable_name(tmp_path):
    """The old writer wrote ``<name>.tmp``: a link planted there sent the report to its target."""
    from textebm.files import write_file

    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    for name in ("r.json.tmp", ".r.json.tmp", f".r.json.tmp-{os.getpid()}"):
        (tmp_path / name).symlink_to(outside)
    write_file(tmp_path / "r.json", "{}\n")
    assert outside.read_text() == "keep" and (tmp_path / "r.json").read_text() == "{}\n"


def test_a_planted_tmp_link_beside_a_report_is_never_followed(tmp_path, tiny_run, capsys):
    """Row 1: ``RUN/eval-test.json.tmp -> outside`` and ``textebm eval RUN``; ``chain --json`` shares the writer."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    (run / "eval-test.json.tmp").symlink_to(outside)
    code, out, err = run_main(capsys, "eval", run, "--recon", "--max-sentences", "2", "--no-progress")
    assert code == 0, err
    assert outside.read_text() == "precious\n"
    assert json.loads((run / "eval-test.json").read_text())["recon"]["n_sentences"] == 2
    assert os.readlink(run / "eval-test.json.tmp") == str(outside)
    chain = tmp_path / "chain.json"
    (tmp_path / "chain.json.tmp").symlink_to(outside)
    code, out, err = run_main(capsys, "chain", run, "--steps", "2", "--every", "1", "--json", chain)
    assert code == 0, err
    assert outside.read_text() == "precious\n" and "rows" in json.loads(chain.read_text())


def test_two_writers_of_one_file_never_mix(tmp_path):
    from textebm.files import write_file

    path = tmp_path / "r.json"
    texts = [(str(i) * 20000 + "\n").encode() for i in range(8)]
    threads = [threading.Thread(target=write_file, args=(path, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in texts and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# ---- reading -----------------------------------------------------------------------------------------------
def test_read_regular_refuses_devices_and_pipes_before_reading(tmp_path):
    from textebm.files import UnsafePathError, read_regular

    with pytest.raises(UnsafePathError, match="not a regular file"):
        read_regular("/dev/zero", "recipe")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match="not a regular file"):  # opened without blocking
        read_regular(fifo, "corpus file")
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b"0," * 1000 + b"0]")
    with pytest.raises(FileFormatError, match="more than the 100 bytes"):
        read_regular(big, "file", limit=100)
    with pytest.raises(IsADirectoryError):
        read_regular(tmp_path, "file")


def test_json_nested_deeper_than_the_bound_is_one_line(tmp_path):
    deep = tmp_path / "config.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FileFormatError, match="nests more than 64 levels") as info:
        read_json(deep)
    assert str(deep) in str(info.value) and len(str(info.value).splitlines()) == 1


# ---- weights of another dtype ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bool", "int64", "float16"])
def test_weights_of_another_dtype_are_refused(tmp_path, tiny_run, capsys, dtype):
    """Row 23: ``load_state_dict`` casts silently; bool weights gave nonsense samples with exit 0."""
    import torch
    from safetensors.torch import load_file, save_file

    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.json"):
        shutil.copy(tiny_run / name, saved / name)
    weights = load_file(str(saved / "model.safetensors"))
    first = sorted(weights)[0]
    weights[first] = weights[first].to(getattr(torch, dtype))
    save_file(weights, str(saved / "model.safetensors"))
    before = tree(saved)
    code, out, err = run_main(capsys, "sample", saved, "-n", "2")
    one_line_error(code, err, str(saved / "model.safetensors"), first, f"stored as {dtype}", "float32")
    assert out == "" and tree(saved) == before
